"""The whole flow through a real ``connectlink serve`` process, and what it leaves on disk."""

from __future__ import annotations

import gc
import hashlib
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import SECRET_KEY, upgraded
from support import REDIRECT_URI, Emulator, ServeProcess, new_retailer, stored_bytes


@pytest.fixture
def served(database_url: str) -> Iterator[ServeProcess]:
    server = ServeProcess(database_url, "--no-demo")
    try:
        yield server
    finally:
        server.stop()


def test_sandbox_flow_end_to_end(served: ServeProcess) -> None:
    with httpx.Client(base_url=served.url) as http:
        shop = new_retailer(http, served.database_url)
        # 1. token
        token = http.post("/v2/oauth/token", json={
            "client_id": shop.client_id, "client_secret": shop.client_secret,
            "grant_type": "client_credentials", "scope": "connect:fulfillment"}).json()
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        # 2. a test Instacart user
        created = http.post("/v2/fulfillment_sandbox/instacart_users", headers=bearer, json={
            "email": "shopper@example.com", "phone": "+18005550100", "password": "secret pw",
            "instacartplus_member": True})
        account = created.json()["id"]
        # 3. authorize, as the tutorial sends it
        code = http.post(f"/v2/fulfillment_sandbox/instacart_users/{account}/authorize",
                         headers=bearer, json={
                             "response_type": "code", "client_id": shop.client_id,
                             "redirect_uri": REDIRECT_URI, "scope": "openid account_linking",
                             "state": "abc"}).json()["code"]
        # 4. exchange
        linking = http.post("/v2/oauth/token", json={
            "client_id": shop.client_id, "client_secret": shop.client_secret,
            "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "scope": "account_linking"}).json()
        assert linking["scope"] == "account_linking"
        # 5. the Connect user, and the link
        assert http.post("/v2/fulfillment/users", headers=bearer,
                         json={"user_id": "42", "first_name": "john"}).status_code == 200
        linked = http.post("/v2/fulfillment/users/42/link", headers=bearer,
                           json={"linking_token": linking["access_token"]})
        assert (linked.status_code, linked.json()) == (200, {"success": True})
        # 6. membership
        membership = http.get("/v2/fulfillment/users/42/link", headers=bearer).json()
        assert membership["instacartplus_member"] is True
        assert membership["express_member"] is True
        assert membership["expired_at"].endswith("Z")
        # a credential in the query string is refused, and must not reach the log
        refused = http.post(f"/v2/oauth/token?client_secret={shop.client_secret}",
                            json={"grant_type": "client_credentials"})
        assert refused.status_code == 403

    log = served.stop()
    secrets = [shop.client_secret, token["access_token"], code, linking["access_token"],
               "secret pw"]
    assert "POST /v2/fulfillment/users/42/link" in log  # the access log is on...
    for secret in secrets:
        assert secret not in log  # ...and never carries a credential

    stored, as_stored = stored_bytes(served.database_url)
    for secret in secrets:
        assert secret.encode() not in stored
    # the scan is meaningful: the digests of the same values are there
    for secret in secrets[:4]:
        assert as_stored(hashlib.sha256(secret.encode()).digest()) in stored


def test_make_run_prints_working_demo_credentials_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    first = ServeProcess(url)
    try:
        with httpx.Client(base_url=first.url) as http:
            http.get("/v2/fulfillment/users/x")  # let the server flush its output
            output = first.stop()
            printed = dict(
                line.strip().split(": ", 1) for line in output.splitlines()
                if line.startswith("  ") and ": " in line
            )
            assert {"retailer_id", "client_id", "client_secret", "redirect_uri"} <= set(printed)
            again = ServeProcess(url)
            http.base_url = httpx.URL(again.url)
            response = http.post("/v2/oauth/token", json={
                "client_id": printed["client_id"], "client_secret": printed["client_secret"],
                "grant_type": "client_credentials"})
            assert response.status_code == 200
            # The Login URL it prints opens the login page once a state is put in.
            login_url = next(line.strip() for line in output.splitlines()
                             if "/oauth/authorize?" in line)
            assert f"client_id={printed['client_id']}" in login_url
            login_url = login_url.replace("state=STATE", "state=xyz")
            page = http.get(login_url.replace(first.url, again.url))
            assert page.status_code == 200
            assert "Log in to Instacart" in page.text
            assert "Demo Retailer" in page.text
            assert printed["client_secret"] not in again.stop()
    finally:
        first.stop()


def test_production_profile_refuses_to_start_without_a_secret_key(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CONNECTLINK_SECRET_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "connectlink", "serve", "--profile", "production",
         "--database", database_url, "--migrate"],
        capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 2
    assert "the production profile needs CONNECTLINK_SECRET_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def test_production_profile_has_no_demo_and_no_sandbox(database_url: str) -> None:
    server = ServeProcess(database_url, "--profile", "production",
                          env={"CONNECTLINK_SECRET_KEY": SECRET_KEY})
    try:
        with httpx.Client(base_url=server.url) as http:
            shop = new_retailer(http, server.database_url)
            response = http.post("/v2/fulfillment_sandbox/instacart_users",
                                 headers=shop.headers(), json={})
            assert response.status_code == 404
    finally:
        assert "client_secret" not in server.stop()


def test_a_request_leaves_no_reference_cycle_for_the_garbage_collector(
    emulator: Emulator,
) -> None:
    """Each request's objects are freed by reference counting when it is answered. A cycle
    through the request (once: the scope's ``drop`` extension holding uvicorn's cycle, which
    holds the scope) leaves every request to the collector, whose collections then stall the
    event loop."""
    shop = emulator.retailer()
    shop.create_user("u1")
    headers = shop.headers()
    gc.collect()
    gc.disable()
    try:
        statuses = Counter(
            emulator.http.get("/v2/fulfillment/users/u1/link", headers=headers).status_code
            for _ in range(100))
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = Counter(type(thing).__qualname__ for thing in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert len(statuses) == 1 and max(statuses) < 500, statuses
    assert left["RequestResponseCycle"] == 0, left.most_common(8)


FROZEN = """
import asyncio, gc, sys
from connectlink.server.app import create_app
from connectlink.settings import Settings

app = create_app(Settings.for_profile("emulator", database_url=sys.argv[1]),
                 whole_process=sys.argv[2] == "whole")

async def start_and_stop():
    async with app.router.lifespan_context(app):
        print(gc.get_freeze_count())

asyncio.run(start_and_stop())
"""


def test_a_serving_process_takes_what_startup_made_out_of_the_collectors_way(
    tmp_path: Path,
) -> None:
    """``connectlink serve``'s workers (``whole_process``) freeze what startup made: a full
    collection then walks a few hundred objects, not some 60,000 (20-40 ms each, under load).
    An app in somebody else's process leaves that process's collector alone."""
    url = upgraded(f"sqlite:///{tmp_path / 'frozen.db'}")
    frozen = {how: int(subprocess.run(
        [sys.executable, "-c", FROZEN, url, how], capture_output=True, text=True, check=True,
        env={**os.environ, "CONNECTLINK_DATABASE_URL": url}).stdout.split()[-1])
        for how in ("whole", "part")}
    assert frozen["whole"] > 10_000
    assert frozen["part"] == 0
