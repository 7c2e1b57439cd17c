"""Test drivers: a ConnectLink server on a real port, and a retailer that talks to it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import httpx
import uvicorn

from connectlink.clock import ManualClock
from connectlink.linking import retailers
from connectlink.server.app import create_app
from connectlink.settings import Settings
from connectlink.storage import Store, using_store
from connectlink.testing import InProcessEmulator

REDIRECT_URI = "https://shop.example/account/instacart/callback"
# S256 challenges of the PKCE verifiers tests use, as literals (RFC 7636 Appendix B).
S256_CHALLENGES = {"dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk":
                   "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}
T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, on a thread of its own when this thread has a loop running already
    (Playwright's sync API keeps one on the main thread while a browser is open)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
OTHER_REDIRECT_URI = "https://shop.example/checkout/instacart"


async def lifespan(receive: Any, send: Any) -> None:
    """The lifespan protocol of a test's own ASGI app, which has nothing to start or stop."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


class PromptServer(uvicorn.Server):
    """uvicorn's server, which notices a stop at once: its own main loop looks every 0.1 s,
    which made stopping the larger part of a short test's cost."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):  # on_tick keeps the Date header current
            counter = (counter + 10) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 1.0)

    def stop_soon(self) -> None:
        self.should_exit = True
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)


class AppServer:
    """An ASGI app on uvicorn (httptools) in a thread, on an ephemeral 127.0.0.1 port, known
    before the app is made (a storefront's redirect URI names it)."""

    def __init__(self) -> None:
        # proto=IPPROTO_TCP, or asyncio will not set TCP_NODELAY on accepted connections and
        # every keep-alive response stalls 40 ms on a delayed ACK.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: PromptServer | None = None
        self._thread: threading.Thread | None = None

    def start(self, app: Any) -> None:
        from connectlink.server.protocol import HeaderDeadlineProtocol  # as `connectlink serve`

        config = uvicorn.Config(app, loop="asyncio", http=HeaderDeadlineProtocol,
                                log_level="warning", access_log=False, lifespan="on")
        self._server = PromptServer(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            self._thread.join(0.005)

    def call_soon(self, callback: Any, *args: Any) -> None:
        """Run ``callback(*args)`` on the server's event loop, as its own code would."""
        assert self._server is not None and self._server._loop is not None
        self._server._loop.call_soon_threadsafe(callback, *args)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.stop_soon()
            self._thread.join(10)
        self._socket.close()


class ThreadServer(AppServer):
    """The real ConnectLink app, with a clock that only moves when told."""

    def __init__(self, settings: Settings, clock: ManualClock) -> None:
        super().__init__()
        self.settings = settings
        self.clock = clock

    def start(self, app: Any = None) -> None:
        super().start(app or create_app(self.settings, clock=self.clock))


@dataclass
class Retailer:
    """One retailer's OAuth client, driving the API the way an integration would."""
    http: httpx.Client
    credentials: dict[str, Any]
    redirect_uris: list[str]
    _token: str | None = field(default=None, repr=False)

    @property
    def client_id(self) -> str:
        return str(self.credentials["client_id"])

    @property
    def client_secret(self) -> str:
        return str(self.credentials["client_secret"])

    @property
    def redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def token_request(self, **params: Any) -> httpx.Response:
        body = {"client_id": self.client_id, "client_secret": self.client_secret, **params}
        return self.http.post("/v2/oauth/token", json=body)

    def access_token(self) -> str:
        """A fresh client-credentials token (connect:fulfillment)."""
        response = self.token_request(grant_type="client_credentials")
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = self.access_token()
        return self._token

    def forget_token(self) -> None:
        """Take a fresh access token next time (after moving the clock past its expiry)."""
        self._token = None

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, json=body, headers=self.headers(kwargs.pop("token", None)),
                              **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, headers=self.headers(kwargs.pop("token", None)), **kwargs)

    # the API, one helper per endpoint --------------------------------------------------------
    def create_user(self, user_id: str, first_name: str = "john", **fields: Any) -> httpx.Response:
        return self.post("/v2/fulfillment/users",
                         {"user_id": user_id, "first_name": first_name, **fields})

    def instacart_user(self, email: str, plus: bool = True) -> int:
        response = self.post(
            "/v2/fulfillment_sandbox/instacart_users",
            {"email": email, "phone": "+18005550100", "password": "correct horse battery",
             "instacartplus_member": plus},
        )
        assert response.status_code == 200, response.text
        return int(response.json()["id"])

    def authorize(self, account_id: int | str, **body: Any) -> httpx.Response:
        body = {"redirect_uri": self.redirect_uri, "scope": "openid account_linking", **body}
        return self.post(f"/v2/fulfillment_sandbox/instacart_users/{account_id}/authorize", body)

    def code(self, account_id: int, **body: Any) -> str:
        response = self.authorize(account_id, **body)
        assert response.status_code == 200, response.text
        return str(response.json()["code"])

    def exchange(self, code: str, **params: Any) -> httpx.Response:
        params = {"redirect_uri": self.redirect_uri, **params}
        return self.token_request(grant_type="authorization_code", code=code, **params)

    def linking_token(self, account_id: int, verifier: str | None = None) -> str:
        challenge = (
            {"code_challenge": S256_CHALLENGES[verifier], "code_challenge_method": "S256"}
            if verifier else {}
        )
        code = self.code(account_id, **challenge)
        extra = {"code_verifier": verifier} if verifier else {}
        response = self.exchange(code, **extra)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def link(self, user_id: str, linking_token: Any) -> httpx.Response:
        return self.post(f"/v2/fulfillment/users/{user_id}/link", {"linking_token": linking_token})

    def membership(self, user_id: str) -> httpx.Response:
        return self.get(f"/v2/fulfillment/users/{user_id}/link")


@dataclass
class Emulator:
    """A running server, its clock, and a way to make retailers in its database."""
    server: ThreadServer | InProcessEmulator
    http: httpx.Client
    _count: int = 0

    @property
    def clock(self) -> ManualClock:
        return self.server.clock

    @property
    def database_url(self) -> str:
        return self.server.settings.database_url

    def run(self, action: Any) -> Any:
        """Run ``action(store)`` on a second connection to the same database (operator
        actions)."""
        return run_sync(using_store(self.database_url, action))

    def retailer(self, *redirect_uris: str, require_pkce: bool = False) -> Retailer:
        self._count += 1
        uris = list(redirect_uris or (REDIRECT_URI, OTHER_REDIRECT_URI))
        created = self.run(
            lambda store: retailers.create(
                store, self.clock, f"Retailer {self._count}", uris, require_pkce
            )
        )
        return Retailer(self.http, created.credentials(), uris)


class ServeProcess:
    """``connectlink serve`` as a user runs it: a real process on a real port."""

    def __init__(self, database_url: str, *extra: str, env: dict[str, str] | None = None) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.process = subprocess.Popen(
            [sys.executable, "-m", "connectlink", "serve", "--migrate", "--port", str(self.port),
             "--database", database_url, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own process group: kill_9 reaches every worker
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited: {self.process.stdout.read()}")  # type: ignore[union-attr]
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("connectlink serve did not start listening")

    def kill_9(self) -> None:
        """Crash the server and all its workers, as a power cut or OOM kill would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=20)

    def stop(self) -> str:
        """Stop the server gracefully and return everything it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        output, _ = self.process.communicate(timeout=20)
        return output


def cli(*args: str) -> str:
    """Run ``connectlink ARGS`` and return its stdout (it must succeed)."""
    done = subprocess.run([sys.executable, "-m", "connectlink", *args],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def new_retailer(http: httpx.Client, database_url: str, *redirect_uris: str) -> Retailer:
    """A retailer made the way an operator makes one: through the CLI."""
    uris = list(redirect_uris or (REDIRECT_URI,))
    args = ["retailers", "create", "--name", "Test", "--database", database_url, "--json"]
    for uri in uris:
        args += ["--redirect-uri", uri]
    return Retailer(http, json.loads(cli(*args)), uris)


def query_sql(database_url: str, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement on a second connection (to inspect, or to break things on purpose)."""
    if engine_of(database_url) == "sqlite":

        from connectlink.storage.sqlite import path_from_url

        with sqlite3.connect(path_from_url(database_url)) as db:
            return db.execute(statement).fetchall()

    async def run() -> list[tuple[Any, ...]]:
        connection = await asyncpg.connect(database_url)
        try:
            return [tuple(row) for row in await connection.fetch(statement)]
        finally:
            await connection.close()

    return run_sync(run())


def execute_sql(database_url: str, statement: str) -> None:
    query_sql(database_url, statement)


def engine_of(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgres"


def stored_bytes(database_url: str) -> tuple[bytes, Any]:
    """Everything the database holds, as bytes, and how a digest appears in them."""
    if engine_of(database_url) == "sqlite":
        from pathlib import Path

        from connectlink.storage.sqlite import path_from_url

        path = Path(path_from_url(database_url))
        files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
        return b"".join(p.read_bytes() for p in files), lambda digest: digest

    async def dump() -> bytes:
        connection = await asyncpg.connect(database_url)
        try:
            tables = await connection.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            rows = []
            for (table,) in tables:
                rows += await connection.fetch(f"SELECT t::text FROM {table} t")
            return "\n".join(row[0] for row in rows).encode()
        finally:
            await connection.close()

    return run_sync(dump()), lambda digest: b"\\x" + digest.hex().encode()


@dataclass(frozen=True)
class Seeded:
    """A retailer with ``n`` Connect users, each holding a fresh linking token for an account of
    its own: what a load or crash test needs, issued through the server's own store."""

    retailer_id: int
    bearer: str
    pairs: list[tuple[str, str, int]]  # (Connect user_id, linking token, Instacart account id)


def seed(database_url: str, n: int, now: float | None = None) -> Seeded:
    from connectlink import security
    from connectlink.clock import SystemClock
    from connectlink.models import AccessToken, UserFields

    async def go(store: Store) -> Seeded:
        clock = SystemClock()
        at = clock.now() if now is None else now
        shop = await retailers.create(store, clock, "Seeded", [REDIRECT_URI])
        bearer = security.new_secret()
        await store.save_token(AccessToken(
            security.digest(bearer), shop.client.pk, shop.retailer.id,
            frozenset({"connect:fulfillment"}), at, at + 86_400))
        tag = f"{time.monotonic_ns()}"
        pairs = []
        for i in range(n):
            account = await store.create_instacart_account(
                f"seed{i}.{tag}@example.com", "+18005550100", "not-a-password-hash",
                at + 365 * 86_400, at)
            assert account is not None
            await store.upsert_connect_user(shop.retailer.id, UserFields(f"s{i}", "Seed"), at)
            token = security.new_secret()
            await store.save_token(AccessToken(
                security.digest(token), shop.client.pk, shop.retailer.id,
                frozenset({"account_linking"}), at, at + 86_400, account_id=account.id))
            pairs.append((f"s{i}", token, account.id))
        return Seeded(shop.retailer.id, bearer, pairs)

    return run_sync(using_store(database_url, go))
