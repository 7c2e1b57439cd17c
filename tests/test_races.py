"""Races against a real server: single use and the isolation rule hold under concurrency, and
the database, not luck, enforces them."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from conftest import WRITE_ENGINES
from support import ServeProcess, new_retailer, query_sql

# every race on each engine, and on SQLite in both ways of writing (group commit, direct)
pytestmark = pytest.mark.parametrize("database_url", WRITE_ENGINES, indirect=True)

ALREADY_LINKED = "Validation failed: Common identities can only have one user per isolation context"


@pytest.fixture
def served(database_url: str) -> Iterator[ServeProcess]:
    server = ServeProcess(database_url, "--no-demo", "--no-access-log", "--workers", "2")
    try:
        yield server
    finally:
        server.stop()


async def _all_at_once(url: str, requests: list[tuple[str, str, dict[str, object]]],
                       headers: dict[str, str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        return await asyncio.gather(*(
            http.request(method, path, json=body, headers=headers)
            for method, path, body in requests
        ))


def _outcomes(responses: list[httpx.Response]) -> Counter[tuple[int, str]]:
    return Counter(
        (r.status_code, r.json().get("error", {}).get("message", "") if r.status_code != 200
         else "ok")
        for r in responses
    )


@pytest.mark.parametrize("attempts", [50, 500])
def test_links_with_one_token_succeed_once(served: ServeProcess, attempts: int) -> None:
    with httpx.Client(base_url=served.url) as http:
        shop = new_retailer(http, served.database_url)
        token = shop.linking_token(shop.instacart_user("s@example.com"))
        for i in range(10):
            shop.create_user(f"u{i}")
        # half of them race for one user, half for other users
        requests = [
            ("POST", f"/v2/fulfillment/users/u{i % 10 if i % 2 else 0}/link",
             {"linking_token": token})
            for i in range(attempts)
        ]
        outcomes = _outcomes(asyncio.run(_all_at_once(served.url, requests, shop.headers())))
        assert outcomes == {(200, "ok"): 1, (400, "Linking token is invalid"): attempts - 1}


def test_two_users_racing_for_one_account_link_once(served: ServeProcess) -> None:
    with httpx.Client(base_url=served.url) as http:
        shop = new_retailer(http, served.database_url)
        rounds = 15
        requests = []
        for n in range(rounds):
            account = shop.instacart_user(f"s{n}@example.com")
            for side in ("a", "b"):
                shop.create_user(f"{side}{n}")
                requests.append(("POST", f"/v2/fulfillment/users/{side}{n}/link",
                                 {"linking_token": shop.linking_token(account)}))
        outcomes = _outcomes(asyncio.run(_all_at_once(served.url, requests, shop.headers())))
        assert outcomes == {(200, "ok"): rounds, (400, ALREADY_LINKED): rounds}
        linked = [shop.membership(f"{side}{n}").status_code == 200
                  for n in range(rounds) for side in "ab"]
        assert sum(linked) == rounds


def test_concurrent_exchanges_of_one_code_give_one_token(served: ServeProcess) -> None:
    with httpx.Client(base_url=served.url) as http:
        shop = new_retailer(http, served.database_url)
        code = shop.code(shop.instacart_user("s@example.com"))
        body = {"client_id": shop.client_id, "client_secret": shop.client_secret,
                "grant_type": "authorization_code", "code": code,
                "redirect_uri": shop.redirect_uri}
        responses = asyncio.run(
            _all_at_once(served.url, [("POST", "/v2/oauth/token", body)] * 200, {}))
        statuses = Counter(r.status_code for r in responses)
        assert statuses == {200: 1, 400: 199}
        # the replays revoked the one token that was issued
        issued = next(r.json()["access_token"] for r in responses if r.status_code == 200)
        shop.create_user("u1")
        assert shop.link("u1", issued).status_code == 400


def test_concurrent_create_or_update_leaves_one_consistent_user(served: ServeProcess) -> None:
    with httpx.Client(base_url=served.url) as http:
        shop = new_retailer(http, served.database_url)
        versions = 100
        requests = [
            ("POST", "/v2/fulfillment/users",
             {"user_id": "42", "first_name": f"first{n}", "last_name": f"last{n}",
              "phone_number": f"+1800555{n:04d}"})
            for n in range(versions)
        ]
        responses = asyncio.run(_all_at_once(served.url, requests, shop.headers()))
        assert {r.status_code for r in responses} == {200}
        user = shop.get("/v2/fulfillment/users/42").json()
        n = int(user["first_name"].removeprefix("First"))
        assert user == {"user_id": "42", "first_name": f"First{n}", "last_name": f"Last{n}",
                        "phone_number": f"+1800555{n:04d}"}
        count = query_sql(served.database_url,
                          "SELECT count(*) FROM connect_users WHERE user_id = '42'")
        assert count == [(1,)]
