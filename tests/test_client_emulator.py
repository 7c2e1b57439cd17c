"""The SDK's ``client.emulator`` (docs/emulator.md) against a real server on both engines: every
control, sync and async, answering the admin plane's Structs and raising the server's classes;
the admin token, sent only to the admin plane and only when given; which admin writes are
retried; and the in-process emulator's clients, which carry an admin token of their own."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import msgspec
import pytest

from conftest import START, make_emulator
from connectlink import errors, wire
from connectlink.client import (
    AdminForbidden,
    AsyncConnectClient,
    ConnectClient,
    FaultNotFound,
    InstacartUserNotFound,
    Invalid,
    InvalidClient,
    LinkingTokenInvalid,
    ResponseLost,
    RetailerNotFound,
    RetryPolicy,
    SecretNotFound,
    ServiceUnavailable,
    SnapshotMismatch,
    UserNotFound,
    pkce_pair,
)
from connectlink.client import emulator as admin_calls
from connectlink.emulator import wire as ew
from connectlink.linking.links import iso_utc as iso
from connectlink.security import fingerprint
from connectlink.testing import InProcessEmulator
from support import AppServer, Emulator, Retailer, lifespan

FAST = RetryPolicy(max_retries=3, base=0.001, cap=0.01)
DAY = 86_400
ADMIN_TOKEN = "an-admin-token-for-the-sdk-tests-0123"
GET_USER = "GET /v2/fulfillment/users/{user_id}"
LINK = "POST /v2/fulfillment/users/{user_id}/link"


@pytest.fixture
def served(database_url: str) -> Iterator[Emulator]:
    """A real server on a real port (loopback: the admin plane admits it without a token)."""
    yield from make_emulator(database_url)


def connect(served: Emulator, shop: Retailer, **options: Any) -> ConnectClient:
    url = served.server.url  # type: ignore[union-attr]
    return ConnectClient(shop.client_id, shop.client_secret, url,
                         **{"retry": FAST, **options})


def retailer_id(shop: Retailer) -> int:
    return int(shop.credentials["retailer_id"])


def linking_token(client: ConnectClient, shop: Retailer, plus: bool = True) -> tuple[int, str]:
    """A new sandbox account and a fresh linking token for it."""
    account = client.sandbox.create_instacart_user(
        f"shopper-{time.monotonic_ns()}@example.com", "+18005550100", "a-password",
        instacartplus_member=plus)
    verifier, challenge = pkce_pair()
    code = client.sandbox.authorize(account, shop.redirect_uri, code_challenge=challenge)
    return account, client.oauth.exchange_code(code, shop.redirect_uri, verifier).access_token


# --- clocks ----------------------------------------------------------------------------------


def test_clock_get_advance_set_freeze_unfreeze_reset(served: Emulator) -> None:
    shop, other = served.retailer(), served.retailer()
    with connect(served, shop) as client:
        clock, rid = client.emulator.clock, retailer_id(shop)
        assert clock.get(rid) == ew.Clock(now=iso(START), offset_seconds=0.0, frozen=False)
        assert clock.advance(rid, 3600) == ew.Clock(iso(START + 3600), 3600.0, False)
        assert clock.advance(rid, -600.5).offset_seconds == 2999.5
        assert clock.set(rid, datetime(2030, 1, 1, tzinfo=UTC)).now == "2030-01-01T00:00:00Z"
        assert clock.set(rid, "2031-06-01T12:00:00Z").now == "2031-06-01T12:00:00Z"
        # Any ISO 8601 time, any zone, microseconds: sent as the wire writes times.
        east = datetime(2031, 6, 1, 14, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=2)))
        assert clock.set(rid, east).now == "2031-06-01T12:00:00Z"
        assert clock.set(rid, "2031-06-01T14:00:00+02:00").now == "2031-06-01T12:00:00Z"
        assert clock.set(rid, datetime(2031, 6, 1, 12)).now == "2031-06-01T12:00:00Z"  # naive: UTC
        frozen = clock.freeze(rid)
        assert (frozen.now, frozen.frozen) == ("2031-06-01T12:00:00Z", True)
        served.clock.advance(100)  # the wall clock runs on; a frozen clock does not
        assert clock.get(rid).now == "2031-06-01T12:00:00Z"
        assert clock.get(rid).offset_seconds == frozen.offset_seconds - 100
        assert clock.advance(rid, 60) == ew.Clock("2031-06-01T12:01:00Z",
                                                  frozen.offset_seconds - 40, True)
        running = clock.unfreeze(rid)
        assert (running.now, running.frozen) == ("2031-06-01T12:01:00Z", False)
        served.clock.advance(10)
        assert clock.get(rid).now == "2031-06-01T12:01:10Z"
        assert clock.reset(rid) == ew.Clock(iso(START + 110), 0.0, False)
        clock.advance(rid, DAY)
        assert clock.get(retailer_id(other)).offset_seconds == 0.0  # one retailer's alone
        with pytest.raises(RetailerNotFound):
            clock.get(999_999)
        with pytest.raises(Invalid) as invalid:
            clock.set(rid, "next tuesday")  # sent as given: the server names the key
        assert invalid.value.key == "set"


def test_a_retailers_tokens_and_memberships_follow_its_clock(served: Emulator) -> None:
    shop, other = served.retailer(), served.retailer()
    with connect(served, shop) as client, connect(served, other) as theirs:
        account, token = linking_token(client, shop)
        client.users.create("u1", "jane")
        client.users.link("u1", token)
        assert client.users.get_link("u1").instacartplus_member
        client.emulator.clock.advance(retailer_id(shop), 366 * DAY)
        # Its access token expired with the year: the SDK took a new one, once.
        assert not client.users.get_link("u1").instacartplus_member
        issued = client.emulator.journal(retailer_id(shop), operation="issue_token")
        assert [entry.at for entry in issued[:2]] == [iso(START + 366 * DAY), iso(START)]
        # The same Instacart account, as another retailer sees it today: still a member.
        code = theirs.sandbox.authorize(account, other.redirect_uri)
        theirs.users.create("u1", "sam")
        theirs.users.link("u1", theirs.oauth.exchange_code(code, other.redirect_uri))
        assert theirs.users.get_link("u1").instacartplus_member


# --- faults ----------------------------------------------------------------------------------


def test_faults_add_list_delete_clear(served: Emulator) -> None:
    shop, other = served.retailer(), served.retailer()
    rid = retailer_id(shop)
    with connect(served, shop) as client, connect(served, shop, retry=RetryPolicy(0)) as once:
        faults = client.emulator.faults
        client.users.create("u1", "jane")
        brief = faults.add(GET_USER, 503, retailer_id=rid, times=1, retry_after=0)
        assert client.users.get("u1").user_id == "u1"  # the SDK retried the 503
        [rule] = faults.list()
        assert (rule.id, rule.retailer_id, rule.client_id, rule.endpoint, rule.fault,
                rule.times, rule.fired) == (brief, rid, None, GET_USER, "503", 1, 1)
        assert rule.created_at == iso(START)
        down = faults.add(GET_USER, "503", retailer_id=rid)
        with pytest.raises(ServiceUnavailable) as unavailable:
            once.users.get("u1")
        assert unavailable.value.retry_after == 1  # the rule's default
        faults.delete(down)
        with pytest.raises(FaultNotFound):
            faults.delete(down)
        assert once.users.get("u1").user_id == "u1"
        # Another retailer's rule, and another client's, never fire here.
        faults.add(GET_USER, 500, retailer_id=retailer_id(other))
        faults.add(GET_USER, 500, client_id=other.client_id)
        assert once.users.get("u1").user_id == "u1"
        assert [r.fired for r in faults.list()] == [1, 0, 0]
        assert faults.clear() == 3
        assert faults.list() == [] and faults.clear() == 0


def test_fault_rules_the_server_refuses(served: Emulator) -> None:
    shop = served.retailer()
    rid = retailer_id(shop)
    with connect(served, shop) as client:
        faults = client.emulator.faults
        with pytest.raises(Invalid) as endpoint:
            faults.add("GET /v2/nowhere", 503, retailer_id=rid)
        assert endpoint.value.key == "endpoint"
        with pytest.raises(Invalid) as misplaced:
            faults.add(GET_USER, "linking_token_invalid", retailer_id=rid)
        assert misplaced.value.key == "fault"
        with pytest.raises(Invalid) as unknown:
            faults.add(GET_USER, "teapot", retailer_id=rid)  # type: ignore[arg-type]
        assert unknown.value.key == "fault"
        with pytest.raises(errors.Blank) as nobody:
            faults.add(GET_USER, 503)
        assert nobody.value.key == "retailer_id"
        with pytest.raises(RetailerNotFound):
            faults.add(GET_USER, 503, retailer_id=999_999)
        with pytest.raises(Invalid) as probability:
            faults.add(GET_USER, 503, retailer_id=rid, probability=2.0)
        assert probability.value.key == "probability"
        assert faults.list() == []


def test_faults_the_sdk_meets_as_the_real_service_s(served: Emulator) -> None:
    """A linking token a fault refused is not consumed; a dropped answer is lost (and a GET
    retried after it); a slow one is slow; a spent rule lets the request through."""
    shop = served.retailer()
    rid = retailer_id(shop)
    with connect(served, shop) as client:
        faults = client.emulator.faults
        client.users.create("u1", "jane")
        _, token = linking_token(client, shop)
        refusing = faults.add(LINK, "linking_token_invalid", retailer_id=rid)
        with pytest.raises(LinkingTokenInvalid):
            client.users.link("u1", token)
        faults.delete(refusing)
        faults.add(LINK, "drop", retailer_id=rid, times=1)
        with pytest.raises(ResponseLost):  # single use: not sent again after a lost answer
            client.users.link("u1", token)
        client.users.link("u1", token)  # neither fault consumed it
        faults.add(GET_USER, "drop", retailer_id=rid, times=1)
        assert client.users.get("u1").user_id == "u1"  # safe to repeat: retried
        faults.add(GET_USER, "latency", retailer_id=rid, times=1, latency_ms=300)
        started = time.monotonic()
        client.users.get("u1")
        assert time.monotonic() - started >= 0.3
        shown = {(e.operation, e.status, e.fault) for e in client.emulator.journal(rid)}
        assert {("link", 400, "linking_token_invalid"), ("link", 0, "drop"),
                ("get_user", 0, "drop"), ("get_user", 200, "latency"),
                ("link", 200, None)} <= shown


# --- the journal -------------------------------------------------------------------------------


def test_journal_filters(served: Emulator) -> None:
    shop, other = served.retailer(), served.retailer()
    rid = retailer_id(shop)
    with connect(served, shop) as client, connect(served, other) as theirs:
        client.users.create("u1", "jane")
        with pytest.raises(UserNotFound):
            client.users.get("nobody")
        client.emulator.clock.advance(rid, 3600)
        client.users.get("u1")
        theirs.users.create("u2", "sam")
        journal = client.emulator.journal
        entries = journal(rid)
        assert [(e.method, e.path, e.operation, e.status) for e in entries] == [
            ("GET", "/v2/fulfillment/users/u1", "get_user", 200),
            ("GET", "/v2/fulfillment/users/nobody", "get_user", 400),
            ("POST", "/v2/fulfillment/users", "create_user", 200),
            ("POST", "/v2/oauth/token", "issue_token", 200),
        ]  # newest first, this retailer's only
        assert [e.at for e in entries] == [iso(START + 3600)] + [iso(START)] * 3
        assert len({e.id for e in entries}) == 4 and all(e.request_id for e in entries)
        assert entries[-1].client_id == shop.client_id  # the client its token request named
        assert entries[0].credential is not None and len(entries[0].credential) == 16
        [missing] = journal(rid, status=400)
        assert (missing.error_code, missing.error_key) == ("1001", "user_id")
        assert [e.path for e in journal(rid, path="/v2/fulfillment/users/u1")] == [
            "/v2/fulfillment/users/u1"]
        assert [e.operation for e in journal(rid, operation="create_user")] == ["create_user"]
        assert [e.id for e in journal(rid, limit=2)] == [entries[0].id, entries[1].id]
        middle = datetime.fromtimestamp(START + 1800, UTC)
        assert [e.id for e in journal(rid, since=middle)] == [entries[0].id]
        assert [e.id for e in journal(rid, until=iso(START + 1800))] == [
            e.id for e in entries[1:]]
        with pytest.raises(RetailerNotFound):
            journal(999_999)
        with pytest.raises(Invalid) as since:
            journal(rid, since="yesterday")
        assert since.value.key == "since"


# --- token lifecycles ----------------------------------------------------------------------


def test_token_lifecycles(served: Emulator) -> None:
    shop = served.retailer()
    rid = retailer_id(shop)
    with connect(served, shop) as client:
        tokens = client.emulator.tokens
        client.users.create("u1", "jane")
        _, token = linking_token(client, shop)
        issued = tokens.get(token)
        assert (issued.kind, issued.retailer_id) == ("linking_token", rid)
        assert issued.fingerprint == fingerprint(token)
        assert [e.event for e in issued.events] == ["issued"]
        client.users.link("u1", token)
        used = tokens.get(fingerprint(token))  # a fingerprint, or the token: the same
        assert [(e.event, e.at) for e in used.events] == [("issued", iso(START)),
                                                          ("used", iso(START))]
        [linked] = client.emulator.journal(rid, operation="link")
        assert used.events[1].request_id == linked.request_id
        account = client.sandbox.create_instacart_user("late@example.com", "+18005550100", "pw")
        code = client.sandbox.authorize(account, shop.redirect_uri)
        assert tokens.get(code).kind == "authorization_code"
        client.emulator.clock.advance(rid, 601)  # codes live ten minutes
        assert [e.event for e in tokens.get(code).events] == ["issued", "expired"]
        # An access token: each request that bore it, then its revocation.
        bearer = shop.access_token()
        shop.get("/v2/fulfillment/users/u1", token=bearer)
        client.oauth.revoke(bearer)
        life = tokens.get(wire.Token(access_token=bearer, token_type="Bearer", expires_in=0,
                                     created_at=0))
        assert life.kind == "access_token"
        assert [e.event for e in life.events] == ["issued", "used", "revoked"]
        with pytest.raises(SecretNotFound):
            tokens.get("0123456789abcdef")
        with pytest.raises(SecretNotFound):
            tokens.get("never-issued")


# --- memberships ---------------------------------------------------------------------------


def test_memberships(served: Emulator) -> None:
    shop = served.retailer()
    rid = retailer_id(shop)
    with connect(served, shop) as client:
        memberships = client.emulator.memberships
        account = client.sandbox.create_instacart_user("m@example.com", "+18005550100", "pw")
        assert memberships.get(account) == ew.Membership(account, False, None)
        assert memberships.start(account, 30) == ew.Membership(account, True,
                                                               iso(START + 30 * DAY))
        assert memberships.extend(account, 10).expires_at == iso(START + 40 * DAY)
        client.emulator.clock.advance(rid, 41 * DAY)
        assert not memberships.get(account, retailer_id=rid).member  # by its clock
        assert memberships.get(account).member  # by the server's
        assert memberships.extend(account, 5, retailer_id=rid).expires_at == iso(
            START + 46 * DAY)  # lapsed, as the retailer sees it: from its now
        assert memberships.lapse(account) == ew.Membership(account, False, iso(START))
        assert memberships.start(account, 1, retailer_id=rid).expires_at == iso(
            START + 42 * DAY)
        with pytest.raises(InstacartUserNotFound):
            memberships.get(999_999)
        with pytest.raises(RetailerNotFound):
            memberships.get(account, retailer_id=999_999)


# --- snapshots -----------------------------------------------------------------------------


def test_snapshot_restore_reset(served: Emulator) -> None:
    shop = served.retailer()
    with connect(served, shop) as client:
        client.users.create("u1", "jane")
        taken = client.emulator.snapshot()
        assert (taken.format, taken.version, taken.taken_at) == (
            "connectlink-snapshot", 1, iso(START))
        assert isinstance(taken.schema, int) and taken.tables
        client.users.create("u2", "sam")
        client.emulator.restore(taken)
        assert client.users.get("u1").first_name == "Jane"
        with pytest.raises(UserNotFound):
            client.users.get("u2")
        client.users.create("u2", "sam")
        client.emulator.restore(msgspec.to_builtins(taken))  # as read from a file
        with pytest.raises(UserNotFound):
            client.users.get("u2")
        with pytest.raises(SnapshotMismatch) as mismatch:
            client.emulator.restore({**msgspec.to_builtins(taken), "version": 2})
        assert mismatch.value.status == 409
        assert mismatch.value.detail and "version 2" in mismatch.value.detail
        assert "version 1" in mismatch.value.detail
        client.emulator.reset()
        with pytest.raises(InvalidClient):  # its token is gone, and so is its client
            client.users.get("u1")
        client.emulator.restore(taken)
        assert client.users.get("u1").first_name == "Jane"


# --- async -----------------------------------------------------------------------------------


async def async_controls(client: AsyncConnectClient, shop: Retailer, other: Retailer) -> None:
    plane, rid = client.emulator, retailer_id(shop)
    assert (await plane.clock.get(rid)).offset_seconds == 0.0
    assert (await plane.clock.advance(rid, 60)).now == iso(START + 60)
    assert (await plane.clock.set(rid, datetime.fromtimestamp(START, UTC))).now == iso(START)
    assert (await plane.clock.freeze(rid)).frozen
    assert not (await plane.clock.unfreeze(rid)).frozen
    assert await plane.clock.reset(rid) == ew.Clock(iso(START), 0.0, False)
    await client.users.create("u1", "jane")
    rule = await plane.faults.add(GET_USER, 503, retailer_id=rid, times=1, retry_after=0)
    assert (await client.users.get("u1")).user_id == "u1"
    assert [(r.id, r.fired) for r in await plane.faults.list()] == [(rule, 1)]
    await plane.faults.delete(rule)
    with pytest.raises(FaultNotFound):
        await plane.faults.delete(rule)
    await plane.faults.add(GET_USER, 500, retailer_id=retailer_id(other))
    assert await plane.faults.clear() == 1
    entries = await plane.journal(rid, operation="get_user", since=iso(START), limit=5)
    assert [(e.status, e.fault) for e in entries] == [(200, None), (503, "503")]
    account = await client.sandbox.create_instacart_user("a@example.com", "+18005550100", "pw")
    code = await client.sandbox.authorize(account, shop.redirect_uri)
    assert (await plane.tokens.get(code)).kind == "authorization_code"
    assert (await plane.memberships.get(account)).member is False
    assert (await plane.memberships.start(account, 2)).expires_at == iso(START + 2 * DAY)
    assert (await plane.memberships.extend(account, 1, rid)).expires_at == iso(START + 3 * DAY)
    assert (await plane.memberships.lapse(account)).member is False
    taken = await plane.snapshot()
    await plane.reset()
    with pytest.raises(RetailerNotFound):
        await plane.clock.get(rid)
    await plane.restore(taken)
    assert (await client.users.get("u1")).first_name == "Jane"


def test_every_control_async(served: Emulator) -> None:
    shop, other = served.retailer(), served.retailer()

    async def go() -> None:
        async with AsyncConnectClient(shop.client_id, shop.client_secret,
                                      served.server.url, retry=FAST) as client:  # type: ignore[union-attr]
            await async_controls(client, shop, other)

    asyncio.run(go())


# --- the admin token ---------------------------------------------------------------------------


def named(host: str, seen: list[httpx.Request]) -> httpx.Client:
    """An HTTP client whose requests name ``host`` (no loopback name: the admin plane then
    wants the admin token), noting each request it sends."""
    def rename(request: httpx.Request) -> None:
        request.headers["Host"] = host
        seen.append(request)

    return httpx.Client(event_hooks={"request": [rename]})


def test_the_admin_token_opens_the_admin_plane_and_goes_nowhere_else(
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONNECTLINK_ADMIN_TOKEN", raising=False)
    with contextlib.contextmanager(make_emulator)(database_url, admin_token=ADMIN_TOKEN) as (
            served):
        shop = served.retailer()
        seen: list[httpx.Request] = []
        with connect(served, shop, http_client=named("emulator.example", seen)) as client:
            with pytest.raises(AdminForbidden) as forbidden:
                client.emulator.clock.get(retailer_id(shop))
            assert forbidden.value.status == 403
            assert "authorization" not in seen[-1].headers  # no token given: none sent
        with connect(served, shop, http_client=named("emulator.example", seen),
                     admin_token="not-the-token") as client, pytest.raises(AdminForbidden):
            client.emulator.faults.list()
        seen.clear()
        with connect(served, shop, http_client=named("emulator.example", seen),
                     admin_token=ADMIN_TOKEN, banner="the-garden") as client:
            client.users.create("u1", "jane")
            assert client.emulator.clock.get(retailer_id(shop)).frozen is False
            client.emulator.reset()  # a write, in JSON
        by_path = {request.url.path: request for request in seen}
        plane = [r for path, r in by_path.items() if path.startswith("/_connectlink/")]
        api = [r for path, r in by_path.items() if not path.startswith("/_connectlink/")]
        assert len(plane) == 2 and len(api) == 2  # the clock, reset; the token, the user
        for request in plane:
            assert request.headers["authorization"] == f"Bearer {ADMIN_TOKEN}"
            assert "x-retailer-id" not in request.headers
        assert by_path["/_connectlink/reset"].headers["content-type"] == "application/json"
        for request in api:
            assert ADMIN_TOKEN not in request.headers.get("authorization", "")
            assert request.headers["x-retailer-id"] == "the-garden"


def test_the_admin_token_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTLINK_ADMIN_TOKEN", "from-the-environment")
    assert ConnectClient("id", "secret").config.admin_token == "from-the-environment"
    assert AsyncConnectClient("id", "secret").config.admin_token == "from-the-environment"
    given = ConnectClient("id", "secret", admin_token="given")
    assert given.config.admin_token == "given"
    assert "given" not in repr(given.config) and "from-the" not in repr(given.config)
    monkeypatch.delenv("CONNECTLINK_ADMIN_TOKEN")
    assert ConnectClient("id", "secret").config.admin_token is None


# --- retries of admin calls -----------------------------------------------------------------


class Unavailable:
    """An ASGI app that answers every request 503 ``Retry-After: 0`` and notes each one."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, httpx.Headers]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        while (await receive()).get("more_body"):
            pass
        self.seen.append((scope["method"], scope["path"], httpx.Headers(scope["headers"])))
        refusal = errors.ServiceUnavailable(0)
        headers = {"content-type": "application/json", **refusal.headers()}
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": msgspec.json.encode(refusal.body())})


def test_admin_writes_that_are_no_replay_are_not_retried_after_a_503() -> None:
    app, server = Unavailable(), AppServer()
    server.start(app)
    try:
        client = ConnectClient("id", "secret", server.url, retry=FAST)
        plane = client.emulator
        taken = {"format": "connectlink-snapshot", "version": 1, "schema": 5,
                 "taken_at": iso(START), "tables": {}}
        tries = {
            "advance": (lambda: plane.clock.advance(1, 60), 1),
            "add fault": (lambda: plane.faults.add(GET_USER, 503, retailer_id=1), 1),
            "delete fault": (lambda: plane.faults.delete(1), 1),
            "extend": (lambda: plane.memberships.extend(1, 30), 1),
            "get clock": (lambda: plane.clock.get(1), 4),
            "set": (lambda: plane.clock.set(1, iso(START)), 4),
            "freeze": (lambda: plane.clock.freeze(1), 4),
            "unfreeze": (lambda: plane.clock.unfreeze(1), 4),
            "reset clock": (lambda: plane.clock.reset(1), 4),
            "list faults": (lambda: plane.faults.list(), 4),
            "clear faults": (lambda: plane.faults.clear(), 4),
            "journal": (lambda: plane.journal(1), 4),
            "token": (lambda: plane.tokens.get("0123456789abcdef"), 4),
            "membership": (lambda: plane.memberships.get(1), 4),
            "start": (lambda: plane.memberships.start(1, 30), 4),
            "lapse": (lambda: plane.memberships.lapse(1), 4),
            "snapshot": (lambda: plane.snapshot(), 4),
            "restore": (lambda: plane.restore(taken), 4),
            "reset": (lambda: plane.reset(), 4),
        }
        for name, (call, attempts) in tries.items():
            app.seen.clear()
            with pytest.raises(ServiceUnavailable):
                call()
            assert len(app.seen) == attempts, name
        # No admin call asked for an OAuth token, nor sent one; every write was JSON.
        app.seen.clear()
        for call, _ in tries.values():
            with pytest.raises(ServiceUnavailable):
                call()
        assert all(path.startswith("/_connectlink/") for _, path, _ in app.seen)
        assert not any("authorization" in headers for _, _, headers in app.seen)
        assert all(headers["content-type"] == "application/json"
                   for method, _, headers in app.seen if method == "POST")
        client.close()
    finally:
        server.stop()


def test_the_replay_rule_of_each_admin_call() -> None:
    unsafe = [admin_calls.advance_clock(1, 1), admin_calls.add_fault(GET_USER, 503),
              admin_calls.delete_fault(1), admin_calls.extend_membership(1, 1)]
    assert not any(call.replay_safe for call in unsafe)
    safe = [admin_calls.set_clock(1, iso(START)), admin_calls.freeze_clock(1),
            admin_calls.freeze_clock(1, False), admin_calls.reset_clock(1),
            admin_calls.clear_faults(), admin_calls.start_membership(1, 1),
            admin_calls.lapse_membership(1), admin_calls.restore({}), admin_calls.reset()]
    assert all(call.replay_safe for call in safe)
    assert all(call.admin and not call.bearer for call in unsafe + safe)


# --- in process --------------------------------------------------------------------------------


def test_the_in_process_emulators_clients_carry_its_admin_token(database_url: str) -> None:
    """In process, requests name ``connectlink.test``, no loopback name: the emulator's own
    admin token admits its clients, and only them."""
    with InProcessEmulator(database_url) as emulator:
        shop = emulator.create_retailer()
        assert emulator.admin_token
        with emulator.client(shop, retry=FAST) as client:
            assert client.emulator.clock.advance(shop.retailer_id, 60).offset_seconds == 60.0
            client.users.create("u1", "jane")
            client.emulator.faults.add(GET_USER, "drop", retailer_id=shop.retailer_id, times=1)
            assert client.users.get("u1").user_id == "u1"  # a lost answer, retried
            assert [e.status for e in client.emulator.journal(shop.retailer_id,
                                                              operation="get_user")] == [200, 0]
        with emulator.client(shop, admin_token="not-the-token") as stranger, pytest.raises(
                AdminForbidden):
            stranger.emulator.clock.get(shop.retailer_id)

        async def go() -> None:
            async with emulator.async_client(shop) as client:
                assert (await client.emulator.clock.get(shop.retailer_id)).offset_seconds == 60

        asyncio.run(go())
    with InProcessEmulator(database_url, admin_token=ADMIN_TOKEN) as given:
        assert given.admin_token == ADMIN_TOKEN


def test_the_admin_plane_on_the_callers_loop(database_url: str) -> None:
    async def go() -> None:
        async with InProcessEmulator(database_url) as emulator:
            shop = await emulator.acreate_retailer()
            async with emulator.async_client(shop, retry=FAST) as client:
                await client.users.create("u1", "jane")
                await client.emulator.faults.add(GET_USER, "drop", retailer_id=shop.retailer_id,
                                                 times=1)
                assert (await client.users.get("u1")).user_id == "u1"
                assert (await client.emulator.clock.freeze(shop.retailer_id)).frozen

    asyncio.run(go())
