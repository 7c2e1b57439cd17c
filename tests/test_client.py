"""The SDK (``connectlink.client``): the whole linking flow, sync and async, against the app in
process and against a real ``connectlink serve``; every row of the error table raised as its
class; retries against real HTTP servers; one access token however many threads or tasks."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import msgspec
import pytest

import connectlink.client
from connectlink import errors, wire
from connectlink.client import (
    AsyncConnectClient,
    ConnectClient,
    ConnectionFailed,
    InvalidGrant,
    LinkingTokenInvalid,
    ResponseLost,
    RetryPolicy,
    UnexpectedResponse,
    UserNotActive,
    UserNotLinked,
    pkce_pair,
)
from connectlink.client.core import parse
from connectlink.client.tokens import Instant, TokenCache
from connectlink.clock import SystemClock
from connectlink.linking import retailers
from connectlink.storage import using_store
from connectlink.testing import InProcessEmulator, RetailerCredentials
from support import (
    REDIRECT_URI,
    AppServer,
    Emulator,
    Retailer,
    ServeProcess,
    lifespan,
    query_sql,
    run_sync,
)
from test_error_table import CASES, Case, World

FAST = RetryPolicy(max_retries=3, base=0.001, cap=0.01)
CC_TOKENS = "SELECT count(*) FROM tokens WHERE account_id IS NULL"  # client-credentials ones


# --- the whole flow -------------------------------------------------------------------------


def sync_flow(connect: ConnectClient, redirect_uri: str, tag: str) -> None:
    user = connect.users.create(f"shopper-{tag}", "john", "smith", "+18005550100", "en-US")
    assert user == wire.ConnectUser(f"shopper-{tag}", "John", "Smith", "+18005550100", "en-US")
    assert connect.users.get(user.user_id) == user
    account = connect.sandbox.create_instacart_user(f"{tag}@example.com", "+18005550100",
                                                    "a-password", instacartplus_member=True)
    verifier, challenge = pkce_pair()
    code = connect.sandbox.authorize(account, redirect_uri, code_challenge=challenge)
    linking = connect.oauth.exchange_code(code, redirect_uri, code_verifier=verifier)
    assert (linking.token_type, linking.scope) == ("Bearer", "account_linking")
    with pytest.raises(InvalidGrant):  # PKCE is checked: another verifier is refused
        connect.oauth.exchange_code(connect.sandbox.authorize(
            account, redirect_uri, code_challenge=challenge), redirect_uri, "v" * 43)
    with pytest.raises(UserNotLinked):
        connect.users.get_link(user.user_id)
    connect.users.link(user.user_id, linking)
    membership = connect.users.get_link(user.user_id)
    assert membership.instacartplus_member and membership.express_member
    assert membership.expired_at is not None
    spare = connect.oauth.exchange_code(connect.sandbox.authorize(account, redirect_uri),
                                        redirect_uri)
    connect.oauth.revoke(spare)
    with pytest.raises(LinkingTokenInvalid):  # revoked before use
        connect.users.link(user.user_id, spare.access_token)
    connect.users.privacy_request(user.user_id)
    with pytest.raises(UserNotActive):
        connect.users.get_link(user.user_id)


async def async_flow(connect: AsyncConnectClient, redirect_uri: str, tag: str) -> None:
    user = await connect.users.create(f"shopper-{tag}", "john", "smith", "+18005550100", "en-US")
    assert user == wire.ConnectUser(f"shopper-{tag}", "John", "Smith", "+18005550100", "en-US")
    assert await connect.users.get(user.user_id) == user
    account = await connect.sandbox.create_instacart_user(
        f"{tag}@example.com", "+18005550100", "a-password", instacartplus_member=True)
    verifier, challenge = pkce_pair()
    code = await connect.sandbox.authorize(account, redirect_uri, code_challenge=challenge)
    linking = await connect.oauth.exchange_code(code, redirect_uri, code_verifier=verifier)
    assert (linking.token_type, linking.scope) == ("Bearer", "account_linking")
    with pytest.raises(UserNotLinked):
        await connect.users.get_link(user.user_id)
    await connect.users.link(user.user_id, linking)
    membership = await connect.users.get_link(user.user_id)
    assert membership.instacartplus_member and membership.expired_at is not None
    spare = await connect.oauth.exchange_code(
        await connect.sandbox.authorize(account, redirect_uri), redirect_uri)
    await connect.oauth.revoke(spare)
    with pytest.raises(LinkingTokenInvalid):
        await connect.users.link(user.user_id, spare)
    await connect.users.privacy_request(user.user_id)
    with pytest.raises(UserNotActive):
        await connect.users.get_link(user.user_id)


@pytest.fixture
def inproc(database_url: str) -> Iterator[tuple[InProcessEmulator, RetailerCredentials]]:
    with InProcessEmulator(database_url) as emulator:
        yield emulator, emulator.create_retailer(redirect_uris=(REDIRECT_URI,))


def test_whole_flow_in_process(inproc: tuple[InProcessEmulator, RetailerCredentials]) -> None:
    emulator, shop = inproc
    with emulator.client(shop) as connect:
        sync_flow(connect, shop.redirect_uri, "sync")
    asyncio.run(async_flow(emulator.async_client(shop), shop.redirect_uri, "async"))


def test_whole_flow_on_the_callers_loop(database_url: str) -> None:
    """``async with``: the app on the test's own loop, reached through ASGITransport itself."""
    async def go() -> None:
        async with InProcessEmulator(database_url) as emulator:
            assert isinstance(emulator.async_transport(), httpx.ASGITransport)
            shop = await emulator.acreate_retailer(redirect_uris=(REDIRECT_URI,))
            async with emulator.async_client(shop) as connect:
                await async_flow(connect, shop.redirect_uri, "loop")

    asyncio.run(go())


def test_whole_flow_against_connectlink_serve(database_url: str) -> None:
    server = ServeProcess(database_url, "--no-demo", "--no-access-log")
    try:
        made = run_sync(using_store(database_url, lambda store: retailers.create(
            store, SystemClock(), "Shop", [REDIRECT_URI])))
        with ConnectClient(made.client.client_id, made.client_secret, server.url) as connect:
            sync_flow(connect, REDIRECT_URI, "sync")
        asyncio.run(async_flow(AsyncConnectClient(
            made.client.client_id, made.client_secret, server.url), REDIRECT_URI, "async"))
    finally:
        server.stop()


def test_the_login_url_is_the_one_the_server_serves(
        inproc: tuple[InProcessEmulator, RetailerCredentials]) -> None:
    emulator, shop = inproc
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128 and set(verifier) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
    digest = hashlib.sha256(verifier.encode()).digest()
    assert challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    url = emulator.client(shop).authorize_url(shop.redirect_uri, "st/ate", code_challenge=challenge)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "http://connectlink.test/oauth/authorize"
    assert parse_qs(parts.query) == {
        "response_type": ["code"], "client_id": [shop.client_id],
        "redirect_uri": [shop.redirect_uri], "scope": ["account_linking"], "state": ["st/ate"],
        "code_challenge": [challenge], "code_challenge_method": ["S256"]}
    page = httpx.Client(transport=emulator.transport()).get(url)
    assert page.status_code == 200 and "Instacart" in page.text  # the login page, no error
    assert ConnectClient("id", "secret").authorize_url("https://a.example/cb", "s").startswith(
        "https://connect.instacart.com/oauth/authorize?")


# --- every row of the error table, through the SDK's parser --------------------------------


@pytest.fixture
def emulator(app_emulator: Emulator) -> Emulator:
    """The error table's rows run in process, as in test_error_table."""
    return app_emulator


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_error_row_raises_its_class(case: Case, emulator: Emulator, shop: Retailer,
                                    other_shop: Retailer) -> None:
    response = case.request(World(emulator, shop, other_shop))
    expected = errors.from_response(response.status_code, response.json(), response.headers)
    assert expected is not None
    with pytest.raises(errors.ConnectLinkError) as raised:
        parse(response, wire.Success)  # the function both clients use
    error = raised.value
    assert type(error) is type(expected)
    assert getattr(connectlink.client, type(error).__name__) is type(error)  # exported
    assert error.status == case.status == response.status_code
    assert error.body() == case.body
    assert error.headers() == expected.headers()
    assert error.response_headers["content-type"] == "application/json"
    assert error.request_id == response.headers["x-request-id"]  # every answer has one


def test_the_whole_vocabulary_is_exported() -> None:
    for cls in (*errors.CONNECT_ERRORS.values(), *errors.OAUTH_ERRORS.values()):
        assert getattr(connectlink.client, cls.__name__) is cls
    assert connectlink.client.IdentityAlreadyLinked is errors.AlreadyLinked
    for sdk_only in (ConnectionFailed, ResponseLost, UnexpectedResponse):
        assert issubclass(sdk_only, errors.ConnectLinkError)


def test_importing_the_sdk_imports_no_server() -> None:
    code = ("import connectlink.client, sys; assert not any(m.startswith(('connectlink.server',"
            "'starlette')) for m in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr


# --- retries, against real HTTP servers -------------------------------------------------------


def token_body() -> bytes:
    return msgspec.json.encode(wire.Token(access_token=f"t{time.monotonic_ns()}",
                                          token_type="Bearer", expires_in=86_400,
                                          created_at=int(time.time())))


def answer(error: errors.ConnectLinkError, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """A response in the server's own vocabulary."""
    return error.status, {**error.headers(), **headers}, msgspec.json.encode(error.body())


USER = (200, {}, msgspec.json.encode(wire.ConnectUser("u1", "Jo")))
SUCCESS = (200, {}, b'{"success":true}')


class Scripted:
    """An ASGI app: a client-credentials token to whoever asks, and to every other request
    the next scripted response; it notes each request it was sent."""

    def __init__(self, *script: tuple[int, dict[str, str], bytes]) -> None:
        self.script = list(script)
        self.seen: list[tuple[str, httpx.Headers]] = []
        self.tokens = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/v2/oauth/token" and b"client_credentials" in body:
            self.tokens += 1
            status, headers, content = 200, {}, token_body()
        else:
            self.seen.append((scope["path"], httpx.Headers(scope["headers"])))
            status, headers, content = self.script.pop(0)
        headers = {"content-type": "application/json", **headers}
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": content})


@pytest.fixture
def scripted() -> Iterator[Any]:
    servers: list[AppServer] = []

    def serve(*script: tuple[int, dict[str, str], bytes], retry: RetryPolicy = FAST,
              **options: Any) -> tuple[Scripted, ConnectClient]:
        app, server = Scripted(*script), AppServer()
        server.start(app)
        servers.append(server)
        return app, ConnectClient("id", "secret", server.url, retry=retry, **options)

    yield serve
    for server in servers:
        server.stop()


def test_503_and_429_are_retried_until_the_call_succeeds(scripted: Any) -> None:
    app, connect = scripted(answer(errors.ServiceUnavailable(0)), answer(errors.RateLimited(0)),
                            USER)
    assert connect.users.get("u1") == wire.ConnectUser("u1", "Jo")
    assert [path for path, _ in app.seen] == ["/v2/fulfillment/users/u1"] * 3
    assert app.tokens == 1


def test_a_single_use_call_is_not_retried_after_a_503(scripted: Any) -> None:
    """On PostgreSQL a 503 can follow a commit: a second link would find its token used."""
    app, connect = scripted(answer(errors.ServiceUnavailable(0)),
                            answer(errors.ServiceUnavailable(0)))
    with pytest.raises(errors.ServiceUnavailable):
        connect.users.link("u1", "a-linking-token")
    with pytest.raises(errors.ServiceUnavailable):
        connect.oauth.exchange_code("a-code", REDIRECT_URI)
    assert [path for path, _ in app.seen] == ["/v2/fulfillment/users/u1/link",
                                              "/v2/oauth/token"]  # one try each


def test_retry_after_is_honoured(scripted: Any) -> None:
    app, connect = scripted(answer(errors.ServiceUnavailable(1)), USER,
                            retry=RetryPolicy(max_retries=1, base=0.001, cap=1.0))
    assert connect.users.get("u1").first_name == "Jo"
    assert len(app.seen) == 2
    floors = [RetryPolicy(cap=5).wait(0, httpx.Response(429, headers={"Retry-After": "2"}),
                                      False) for _ in range(20)]
    assert all(wait is not None and 2 <= wait <= 5 for wait in floors)


def test_a_wait_longer_than_the_cap_goes_to_the_caller(scripted: Any) -> None:
    app, connect = scripted(answer(errors.RateLimited(5)))
    with pytest.raises(errors.RateLimited) as raised:
        connect.users.get("u1")
    assert raised.value.retry_after == 5 and len(app.seen) == 1


def test_other_refusals_are_never_retried(scripted: Any) -> None:
    app, connect = scripted(answer(errors.UserNotFound(), **{"X-Request-Id": "req-42"}),
                            answer(errors.InternalError()),
                            (502, {"content-type": "text/html"}, b"<h1>Bad gateway</h1>"),
                            (200, {}, b"not json"))
    with pytest.raises(errors.UserNotFound) as not_found:
        connect.users.get("u1")
    assert not_found.value.request_id == "req-42"
    assert getattr(not_found.value, "request_id", None) == "req-42"
    with pytest.raises(errors.InternalError):
        connect.users.get("u1")
    with pytest.raises(UnexpectedResponse) as gateway:
        connect.users.get("u1")
    assert gateway.value.status == 502
    with pytest.raises(UnexpectedResponse):
        connect.users.get("u1")
    assert len(app.seen) == 4  # one request each


def test_retries_run_out_and_zero_disables_them(scripted: Any) -> None:
    app, connect = scripted(*[answer(errors.ServiceUnavailable(0))] * 4)
    with pytest.raises(errors.ServiceUnavailable):
        connect.users.get("u1")
    assert len(app.seen) == 4  # the first try and three retries
    app, connect = scripted(answer(errors.ServiceUnavailable(0)), retry=RetryPolicy(0))
    with pytest.raises(errors.ServiceUnavailable):
        connect.users.get("u1")
    assert len(app.seen) == 1


def test_single_use_calls_are_retried_when_the_server_did_not_act(scripted: Any) -> None:
    token = (200, {}, token_body())
    app, connect = scripted(answer(errors.RateLimited(0)), SUCCESS,
                            answer(errors.RateLimited(0)), token, banner="the-garden")
    connect.users.link("u1", "a-linking-token")
    assert connect.oauth.exchange_code("a-code", REDIRECT_URI).token_type == "Bearer"
    assert [path for path, _ in app.seen] == ["/v2/fulfillment/users/u1/link"] * 2 + [
        "/v2/oauth/token"] * 2
    assert {headers["x-retailer-id"] for _, headers in app.seen} == {"the-garden"}


def test_a_refused_token_is_replaced_once(scripted: Any) -> None:
    app, connect = scripted(answer(errors.RevokedToken()), answer(errors.RevokedToken()))
    with pytest.raises(errors.RevokedToken):
        connect.users.get("u1")
    assert (app.tokens, len(app.seen)) == (2, 2)
    tokens = [headers["authorization"] for _, headers in app.seen]
    assert tokens[0] != tokens[1]


def test_connection_refused_is_retried_then_raised() -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempts: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [attempts.append]})
    connect = ConnectClient("id", "secret", f"http://127.0.0.1:{port}", http_client=http,
                            retry=FAST)
    with connect, pytest.raises(ConnectionFailed) as raised:
        connect.oauth.exchange_code("code", REDIRECT_URI)  # single use, but never sent
    assert not isinstance(raised.value, ResponseLost)
    assert isinstance(raised.value.__cause__, httpx.ConnectError)
    assert len(attempts) == 4
    assert not http.is_closed  # the caller's client is the caller's to close
    with ConnectClient("id", "secret") as own:
        pass
    assert own._http.is_closed


class DroppingServer(http.server.ThreadingHTTPServer):
    """Answers token requests, and drops every other connection without a word."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Dropping)
        self.dropped: list[str] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class Dropping(http.server.BaseHTTPRequestHandler):
    server: DroppingServer

    def do_GET(self) -> None:
        self.answer()

    def do_POST(self) -> None:
        self.answer()

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path != "/v2/oauth/token":
            self.server.dropped.append(self.path)
            self.close_connection = True
            return
        body = token_body()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_lost_answer_is_retried_only_for_calls_safe_to_repeat() -> None:
    server = DroppingServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with ConnectClient("id", "secret", server.url, retry=FAST) as connect:
            with pytest.raises(ResponseLost):
                connect.users.get("u1")
            with pytest.raises(ResponseLost):
                connect.users.link("u1", "single-use")
    finally:
        server.shutdown()
        server.server_close()
    assert server.dropped == ["/v2/fulfillment/users/u1"] * 4 + ["/v2/fulfillment/users/u1/link"]


# --- one access token, shared -------------------------------------------------------------------


def cc_tokens(emulator: InProcessEmulator) -> int:
    return int(query_sql(emulator.database_url, CC_TOKENS)[0][0])


def test_fifty_threads_make_one_token_request(
        inproc: tuple[InProcessEmulator, RetailerCredentials]) -> None:
    emulator, shop = inproc
    emulator.client(shop).users.create("u1", "jo")  # by another client, with its own token
    before, connect = cc_tokens(emulator), emulator.client(shop)
    start = threading.Barrier(50)

    def read(_: int) -> wire.ConnectUser:
        start.wait(30)
        return connect.users.get("u1")

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        users = list(pool.map(read, range(50), timeout=60))
    assert users == [wire.ConnectUser("u1", "Jo")] * 50
    assert cc_tokens(emulator) == before + 1


def test_fifty_tasks_make_one_token_request(
        inproc: tuple[InProcessEmulator, RetailerCredentials]) -> None:
    emulator, shop = inproc
    emulator.client(shop).users.create("u1", "jo")
    before, connect = cc_tokens(emulator), emulator.async_client(shop)

    async def fifty() -> list[wire.ConnectUser]:
        return await asyncio.gather(*(connect.users.get("u1") for _ in range(50)))

    assert asyncio.run(fifty()) == [wire.ConnectUser("u1", "Jo")] * 50
    assert cc_tokens(emulator) == before + 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_token_revoked_or_expired_behind_its_back_is_replaced(
        inproc: tuple[InProcessEmulator, RetailerCredentials], mode: str) -> None:
    emulator, shop = inproc
    sync, aio = emulator.client(shop), emulator.async_client(shop)

    def get() -> wire.ConnectUser:
        return sync.users.get("u1") if mode == "sync" else asyncio.run(aio.users.get("u1"))

    emulator.client(shop).users.create("u1", "jo")  # token 1, another client's
    assert get().first_name == "Jo"  # token 2, this client's, kept
    query_sql(emulator.database_url, "UPDATE tokens SET revoked_at = created_at "
                                     "WHERE account_id IS NULL")
    assert get().first_name == "Jo"  # refused (revoked), token 3, the call again
    assert cc_tokens(emulator) == 3
    emulator.clock.advance(86_400)  # every token expires, by the server's clock
    assert get().first_name == "Jo"
    assert cc_tokens(emulator) == 4


def test_a_token_is_kept_until_shortly_before_it_expires() -> None:
    wall = 1_800_000_000.0
    cache = TokenCache()
    fresh = wire.Token(access_token="a", token_type="Bearer", expires_in=3600, created_at=int(wall))
    cache.keep(fresh, Instant(wall, 100.0))
    assert cache.current(100.0 + 3500) == "a"
    assert cache.current(100.0 + 3545) is None  # within a minute of expiring
    assert cache.current(100.0 + 10, refused="a") is None  # the server refused it
    assert cache.current(100.0 + 10, refused="older") == "a"  # already replaced
    skewed = wire.Token(access_token="b", token_type="Bearer", expires_in=3600,
                        created_at=int(wall) - 70 * 86_400)  # a server clock of its own
    cache.keep(skewed, Instant(wall, 100.0))
    assert cache.current(100.0 + 3500) == "b"
    aged = wire.Token(access_token="c", token_type="Bearer", expires_in=3600,
                      created_at=int(wall) - 200)  # clocks agree: it is 200 s old
    cache.keep(aged, Instant(wall, 100.0))
    assert cache.current(100.0 + 3300) == "c" and cache.current(100.0 + 3345) is None
