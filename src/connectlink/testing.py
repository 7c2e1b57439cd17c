"""ConnectLink inside a test process: the real app with no socket, and a retailer ready on it.

``InProcessEmulator`` runs ``create_app`` on a fresh SQLite file in a temporary directory (or
on a database URL given), with its lifespan run as uvicorn runs it. Requests reach it through
httpx's ASGI transport, so the wire is the ASGI messages and nothing listens on a port.

Which loop runs the app matters: the store's connections (SQLite's, asyncpg's pool) belong to
the loop that opened them. ``with InProcessEmulator()`` runs the app on a loop thread of its own:
a ``ConnectClient`` reaches it through a blocking transport that hands each request to that
loop, and an ``AsyncConnectClient`` on any other loop through one that awaits the hand-over.
``async with InProcessEmulator()`` runs the app on the caller's loop instead, and async clients
use ``httpx.ASGITransport`` directly (a blocking client would wait on its own thread's loop,
so it is refused there).

The emulator's admin plane (docs/emulator.md) admits a loopback peer only when it names a
loopback host, and requests here name ``connectlink.test``: so each in-process emulator has an
admin token of its own (``admin_token``), which the clients it makes present.

This module imports the server; ``connectlink.client`` does not.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from starlette.types import Receive, Scope, Send

from connectlink.client import AsyncConnectClient, ConnectClient, FaultNotFound, pkce_pair
from connectlink.client.emulator import When
from connectlink.clock import ManualClock
from connectlink.emulator import wire as ew
from connectlink.linking import retailers
from connectlink.server.app import ConnectLink, create_app
from connectlink.server.protocol import DROP
from connectlink.settings import Settings
from connectlink.storage import Store, open_store

T = TypeVar("T")
URL = "http://connectlink.test"  # no such host: requests never leave the process
REDIRECT_URI = "https://retailer.example/account/instacart/callback"
SANDBOX_PHONE = "+18005550100"
SANDBOX_PASSWORD = "connectlink-sandbox-password"
WAIT = 60.0  # seconds: the longest any one request or lifespan phase may take
CLIENT_ADDRESS = ("127.0.0.1", 50000)  # the peer address the app sees


_TEMPLATES: list[tempfile.TemporaryDirectory[str]] = []  # kept for the process's lifetime
_TEMPLATE_LOCK = threading.Lock()


def _migrated_template() -> Path:
    """A SQLite file with the schema and nothing else, made once a process: each fresh
    emulator starts from a copy (a millisecond), not from every migration (eight)."""
    with _TEMPLATE_LOCK:
        if not _TEMPLATES:
            folder = tempfile.TemporaryDirectory(prefix="connectlink-template-")
            path = Path(folder.name) / "template.db"

            async def migrate() -> None:
                store = await open_store(f"sqlite:///{path}", "upgrade", 1)
                await store.close()  # checkpointed: the file alone holds it all

            _run_apart(migrate())
            _TEMPLATES.append(folder)
        return Path(_TEMPLATES[0].name) / "template.db"


def _run_apart(coroutine: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run`` on a thread of its own: the caller may be running a loop already."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coroutine)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="connectlink-template")
    thread.start()
    thread.join(WAIT)
    if failure:
        raise failure[0]


@dataclass(frozen=True)
class RetailerCredentials:
    """A retailer made on the emulator: the only time its client secret exists in clear."""

    retailer_id: int
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: tuple[str, ...]

    @property
    def redirect_uri(self) -> str:
        return self.redirect_uris[0]


class InProcessEmulator:
    """The ConnectLink app in this process. ``clock`` is a ``ManualClock`` (the current whole
    second, standing still until advanced): the server's own clock, which every retailer's
    virtual clock runs on; ``settings`` override the emulator profile's (``Settings``);
    ``admin_token`` is the admin plane's (a new random one unless ``admin_token=`` is given)."""

    def __init__(self, database_url: str | None = None, *, clock: ManualClock | None = None,
                 **settings: Any) -> None:
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if database_url is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="connectlink-")
            scratch = Path(self._scratch.name) / "connectlink.db"
            shutil.copyfile(_migrated_template(), scratch)  # not the migrations again
            database_url = f"sqlite:///{scratch}"
        self.database_url = database_url
        # On a whole second: the admin plane's offsets are to the millisecond, so a retailer's
        # clock read back as this one plus its offset (``RetailerClock``) is exact.
        self.clock = clock or ManualClock(float(int(time.time())))
        self.settings = Settings.for_profile(
            str(settings.pop("profile", "emulator")),
            **{"database_url": self.database_url, "access_log": False, "pool_size": 4,
               "admin_token": secrets.token_urlsafe(32), **settings})
        self.admin_token: str | None = self.settings.admin_token
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None  # the loop thread, if it is our own
        self._loop_thread: threading.Thread | None = None  # whichever thread runs the loop
        self._app: ConnectLink | None = None
        self._asgi: httpx.ASGITransport | None = None
        self._store: Store | None = None
        self._lifespan: _Lifespan | None = None

    # --- running: on a thread of its own, or on the caller's loop ---------------------------
    def start(self) -> InProcessEmulator:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="connectlink-emulator")
        self._thread.start()
        self._loop_thread = self._thread
        try:
            self.run(self._open())
        except BaseException:
            self._halt()
            raise
        return self

    def stop(self) -> None:
        if self._thread is None:
            raise RuntimeError("this emulator runs on the caller's loop: await astop()")
        try:
            self.run(self._close())
        finally:
            self._halt()

    async def astart(self) -> InProcessEmulator:
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.current_thread()
        try:
            await self._open()
        except BaseException:
            self._loop = self._loop_thread = None
            self._discard_scratch()
            raise
        return self

    async def astop(self) -> None:
        try:
            await self._close()
        finally:
            self._loop = self._loop_thread = None
            self._discard_scratch()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the app's loop from another thread, and wait for it."""
        loop = self._app_loop(coroutine)
        if threading.current_thread() is self._loop_thread:
            coroutine.close()
            raise RuntimeError("the emulator runs on this thread's loop: await arun() instead")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(WAIT)

    async def arun(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await ``coroutine`` on the app's loop, from whichever loop calls."""
        loop = self._app_loop(coroutine)
        if asyncio.get_running_loop() is loop:
            return await coroutine
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), WAIT)

    def _app_loop(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the emulator is not running: use it with `with` or `async with`")
        return self._loop

    async def _open(self) -> None:
        self._store = await open_store(self.database_url, "upgrade", self.settings.pool_size)
        self._app = create_app(self.settings, self._store, self.clock)
        self._asgi = _ASGITransport(self._app)
        self._lifespan = _Lifespan(self._app)
        try:
            await self._lifespan.startup()
        except BaseException:
            self._lifespan = None  # it has ended already: only the store is left to close
            await self._close()
            raise

    async def _close(self) -> None:
        try:
            if self._lifespan is not None:
                await self._lifespan.shutdown()
        finally:
            if self._store is not None:
                await self._store.close()
            self._store = self._app = self._asgi = self._lifespan = None

    def _halt(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT)
            loop.close()
        self._loop = self._thread = self._loop_thread = None
        self._discard_scratch()

    def _discard_scratch(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()

    def __enter__(self) -> InProcessEmulator:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> InProcessEmulator:
        return await self.astart()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.astop()

    # --- the wire: ASGI messages, no socket --------------------------------------------------
    @property
    def app(self) -> ConnectLink:
        if self._app is None:
            raise RuntimeError("the emulator is not running")
        return self._app

    def transport(self) -> httpx.BaseTransport:
        """A blocking transport into the app (for ``httpx.Client`` and ``ConnectClient``)."""
        return _Transport(self)

    def async_transport(self) -> httpx.AsyncBaseTransport:
        """For ``httpx.AsyncClient``: ASGITransport itself when the app runs on the caller's
        loop, else a hand-over to the app's loop thread."""
        if self._thread is None:
            return _ASGITransport(self.app)
        return _Transport(self)

    async def _relay(self, request: httpx.Request, body: bytes
                       ) -> tuple[int, httpx.Headers, bytes]:
        """One request through the app, on its loop: status, headers and the whole body."""
        if self._asgi is None:
            raise RuntimeError("the emulator is not running")
        relayed = httpx.Request(request.method, request.url, headers=request.headers,
                                content=body)
        response = await self._asgi.handle_async_request(relayed)
        return response.status_code, response.headers, await response.aread()

    # --- retailers and their clients ----------------------------------------------------------
    async def acreate_retailer(self, name: str = "Test retailer",
                               redirect_uris: tuple[str, ...] = (REDIRECT_URI,),
                               require_pkce: bool = False) -> RetailerCredentials:
        """A retailer and its OAuth client, made in the store as an operator makes them."""
        async def create() -> RetailerCredentials:
            assert self._store is not None
            made = await retailers.create(self._store, self.clock, name, list(redirect_uris),
                                          require_pkce)
            return RetailerCredentials(made.retailer.id, made.client.client_id,
                                       made.client_secret, made.client.redirect_uris)

        return await self.arun(create())

    def create_retailer(self, name: str = "Test retailer",
                        redirect_uris: tuple[str, ...] = (REDIRECT_URI,),
                        require_pkce: bool = False) -> RetailerCredentials:
        return self.run(self.acreate_retailer(name, redirect_uris, require_pkce))

    def client(self, credentials: RetailerCredentials, **options: Any) -> ConnectClient:
        """A ``ConnectClient`` for the retailer, over no socket; ``options`` as the client's,
        ``admin_token`` this emulator's unless given. (Its ``httpx.Client`` holds no
        connection: the transport has none to hold.)"""
        http = httpx.Client(transport=self.transport())
        return ConnectClient(credentials.client_id, credentials.client_secret, URL,
                             http_client=http, **{"admin_token": self.admin_token, **options})

    def async_client(self, credentials: RetailerCredentials, **options: Any
                     ) -> AsyncConnectClient:
        http = httpx.AsyncClient(transport=self.async_transport())
        return AsyncConnectClient(credentials.client_id, credentials.client_secret, URL,
                                  http_client=http,
                                  **{"admin_token": self.admin_token, **options})

    def retailer(self, name: str = "Test retailer",
                 redirect_uris: tuple[str, ...] = (REDIRECT_URI,)) -> EmulatedRetailer:
        """A new retailer with its client and the sandbox helpers a retailer's tests use."""
        return EmulatedRetailer(self, self.create_retailer(name, redirect_uris))


class RetailerClock:
    """One retailer's virtual clock, moved through the admin plane (docs/emulator.md): what its
    access tokens, codes, linking tokens, Instacart+ memberships (as it sees them) and privacy
    retention expire by; other retailers' clocks stay where they are. Times are seconds since
    the epoch, as ``ManualClock``'s (to the millisecond), so ``advance(seconds)`` and ``now()``
    read as they did when this was the emulator's ``ManualClock``; that one, the server's own
    clock under every retailer's, is ``emulator.clock``. ``state()`` is the admin plane's
    answer itself."""

    def __init__(self, emulator: InProcessEmulator, client: ConnectClient,
                 retailer_id: int) -> None:
        self.retailer_id = retailer_id
        self._base = emulator.clock
        self._clock = client.emulator.clock

    def state(self) -> ew.Clock:
        return self._clock.get(self.retailer_id)

    def now(self) -> float:
        return self._seconds(self.state())

    def advance(self, seconds: float) -> float:
        """Move it ``seconds`` on (back, if negative); the new time."""
        return self._seconds(self._clock.advance(self.retailer_id, seconds))

    def set(self, when: When) -> float:
        """Make it read ``when`` (a datetime, naive as UTC, or an ISO 8601 string)."""
        return self._seconds(self._clock.set(self.retailer_id, when))

    def freeze(self) -> float:
        return self._seconds(self._clock.freeze(self.retailer_id))

    def unfreeze(self) -> float:
        return self._seconds(self._clock.unfreeze(self.retailer_id))

    def reset(self) -> float:
        """Back on the emulator's own clock."""
        return self._seconds(self._clock.reset(self.retailer_id))

    def _seconds(self, state: ew.Clock) -> float:
        # The server's clock is ours (a ManualClock): its time plus the offset is the virtual
        # time, finer than the whole seconds of ``state.now``.
        return self._base.now() + state.offset_seconds


class RetailerFaults:
    """Fault rules for one retailer's requests (docs/emulator.md, "Faults"), through the admin
    plane: ``add(endpoint, fault, **options)`` with the options of ``client.emulator.faults``
    (``times``, ``every``, ``retry_after``...); ``list()`` and ``clear()`` see only this
    retailer's rules (those naming it, or its client), so other retailers on a shared database
    keep theirs."""

    def __init__(self, client: ConnectClient, retailer_id: int, client_id: str) -> None:
        self.retailer_id = retailer_id
        self.client_id = client_id
        self._faults = client.emulator.faults

    def add(self, endpoint: str, fault: ew.Fault | int, **options: Any) -> int:
        """A rule for ``endpoint`` (``"GET /v2/fulfillment/users/{user_id}/link"``...); its id."""
        return self._faults.add(endpoint, fault, retailer_id=self.retailer_id, **options)

    def list(self) -> list[ew.FaultRule]:
        return [rule for rule in self._faults.list()
                if rule.retailer_id == self.retailer_id or rule.client_id == self.client_id]

    def delete(self, fault_id: int) -> None:
        self._faults.delete(fault_id)

    def clear(self) -> int:
        """Delete this retailer's rules; how many there were."""
        deleted = 0
        for rule in self.list():
            try:
                self._faults.delete(rule.id)
            except FaultNotFound:  # gone meanwhile: deleted all the same
                continue
            deleted += 1
        return deleted


class EmulatedRetailer:
    """A retailer on an emulator as its tests see it: credentials, a ``ConnectClient``, its
    virtual ``clock`` and ``faults`` (``RetailerClock``, ``RetailerFaults``), its request
    ``journal``, and one-call helpers for the sandbox steps (connect-api.md 8.3)."""

    def __init__(self, emulator: InProcessEmulator, credentials: RetailerCredentials) -> None:
        self.emulator = emulator
        self.credentials = credentials
        self.client = emulator.client(credentials)
        self.retailer_id = credentials.retailer_id
        self.client_id = credentials.client_id
        self.client_secret = credentials.client_secret
        self.redirect_uri = credentials.redirect_uri
        self.clock = RetailerClock(emulator, self.client, self.retailer_id)
        self.faults = RetailerFaults(self.client, self.retailer_id, self.client_id)

    def async_client(self, **options: Any) -> AsyncConnectClient:
        return self.emulator.async_client(self.credentials, **options)

    def journal(self, **filters: Any) -> list[ew.JournalEntry]:
        """This retailer's requests, newest first; ``filters`` as ``client.emulator.journal``'s
        (``path``, ``operation``, ``status``, ``since``, ``until``, ``limit``)."""
        return self.client.emulator.journal(self.retailer_id, **filters)

    def sandbox_shopper(self, plus: bool = True, email: str | None = None) -> int:
        """A new Instacart account (an Instacart+ member unless ``plus`` is False); its id."""
        email = email or f"shopper-{secrets.token_hex(8)}@example.com"
        return self.client.sandbox.create_instacart_user(email, SANDBOX_PHONE, SANDBOX_PASSWORD,
                                                         instacartplus_member=plus)

    def linking_token(self, instacart_user_id: int | None = None) -> str:
        """A fresh linking token for the account (a new Instacart+ shopper if none given): its
        consent through the sandbox, with PKCE, and the code exchanged."""
        account = self.sandbox_shopper() if instacart_user_id is None else instacart_user_id
        verifier, challenge = pkce_pair()
        code = self.client.sandbox.authorize(account, self.redirect_uri, code_challenge=challenge)
        return self.client.oauth.exchange_code(code, self.redirect_uri, verifier).access_token


class _Lifespan:
    """The ASGI lifespan protocol, driven as uvicorn drives it."""

    def __init__(self, app: ConnectLink) -> None:
        self.app = app
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._said: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.ensure_future(self.app(scope, self._inbox.get, self._said.put))  # type: ignore[arg-type]
        await self._phase("lifespan.startup")

    async def shutdown(self) -> None:
        await self._phase("lifespan.shutdown")
        assert self._task is not None
        await asyncio.wait_for(self._task, WAIT)

    async def _phase(self, name: str) -> None:
        assert self._task is not None
        await self._inbox.put({"type": name})
        said = asyncio.ensure_future(self._said.get())
        await asyncio.wait({said, self._task}, timeout=WAIT,
                           return_when=asyncio.FIRST_COMPLETED)
        if not said.done():
            said.cancel()
            if self._task.done():
                self._task.result()  # the app's own exception, if it raised one
            raise RuntimeError(f"the app did not finish {name}")
        message = said.result()
        if message["type"] != f"{name}.complete":
            raise RuntimeError(f"{name} failed: {message.get('message', '')}")


class _Dropped(Exception):
    """The app closed the request's connection (the emulator's ``drop`` fault)."""


class _ASGITransport(httpx.ASGITransport):
    """httpx's ASGI transport, with the scope extension the emulator's ``drop`` fault closes
    a connection by (``protocol.DROP``, which ``connectlink serve``'s protocol provides): a
    dropped request fails here as it does over a socket, with ``httpx.ReadError``, which the
    SDK knows as a lost answer."""

    def __init__(self, app: ConnectLink) -> None:
        async def droppable(scope: Scope, receive: Receive, send: Send) -> None:
            dropped: list[bool] = []
            if scope["type"] == "http":
                scope.setdefault("extensions", {})[DROP] = lambda: dropped.append(True)
            await app(scope, receive, send)
            if dropped:
                raise _Dropped()

        super().__init__(droppable, client=CLIENT_ADDRESS)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except _Dropped:
            raise httpx.ReadError("the connection was closed (the emulator's drop fault)",
                                  request=request) from None


class _Transport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Hands each request to the app's loop: blocking, or awaited from another loop."""

    def __init__(self, emulator: InProcessEmulator) -> None:
        self.emulator = emulator

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()  # a streamed body arrives in one piece; its headers are kept
        status, headers, content = self.emulator.run(self.emulator._relay(request, body))
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        status, headers, content = await self.emulator.arun(self.emulator._relay(request, body))
        return httpx.Response(status, headers=headers, content=content, request=request)


__all__ = ["REDIRECT_URI", "URL", "EmulatedRetailer", "InProcessEmulator", "RetailerClock",
           "RetailerCredentials", "RetailerFaults"]
