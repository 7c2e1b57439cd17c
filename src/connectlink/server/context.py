"""What every handler needs: the store, the clock, the settings and the rate limiter, held
by the app; and what the operation table reads from a request before a handler runs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request

from connectlink import jsonio, security
from connectlink.clock import Clock, Clocks, WallClocks
from connectlink.emulator.clocks import EarliestClock, KnownClocks
from connectlink.errors import MalformedJSON, RequestTimeout, RequestTooLarge
from connectlink.linking import retention
from connectlink.models import AccessToken
from connectlink.oauth import bearer
from connectlink.oauth import requests as token_requests
from connectlink.oauth.grants import TokenLifetimes
from connectlink.server.limits import FailureWindow, Limiter
from connectlink.server.pages.session import SessionCookies
from connectlink.settings import Settings
from connectlink.storage.base import Store

if TYPE_CHECKING:
    from connectlink.server.observe.metrics import Metrics


@dataclass(frozen=True, slots=True)
class ApiDocument:
    """A server's OpenAPI document (built by ``openapi.served``), and its encoding as served."""

    document: dict[str, Any]
    encoded: bytes


class EmulatorControls(Protocol):
    """What the app's services and handlers ask of the emulator's controls
    (``server/controls.py``, which builds on this module, never the other way)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def settle(self) -> None:
        """Return once every worker's journal holds what was answered before the call."""
        ...


@dataclass(slots=True)
class Context:
    settings: Settings
    clock: Clock  # the server's own: sessions, sign-in throttles, retention
    store: Store | None = None  # opened by the lifespan unless injected
    clocks: Clocks = field(init=False)  # each retailer's (the emulator's are virtual)
    lifetimes: TokenLifetimes = field(init=False)
    sessions: SessionCookies | None = None  # the Login pages' cookies, keyed at startup
    api: ApiDocument = field(init=False)  # the OpenAPI document, set by the app factory
    metrics: Metrics = field(init=False)  # the app's Prometheus metrics, likewise
    limiter: Limiter | None = None  # None: no rate limit is on (decisions.md "Rate limits")
    # Wrong admin tokens by client address (decisions.md "The admin plane"): 10 a minute.
    admin_failures: FailureWindow = field(default_factory=lambda: FailureWindow(10, 60.0))
    sweeps: retention.Background | None = None  # started with the app unless the interval is 0
    # The endpoints ("POST /v2/oauth/token") the emulator's fault rules may name.
    faultable: frozenset[str] = frozenset()
    controls: EmulatorControls | None = None  # the emulator's (server/controls.py), by the factory

    def __post_init__(self) -> None:
        self.lifetimes = TokenLifetimes(
            self.settings.access_token_ttl, self.settings.linking_token_ttl
        )
        self.clocks = (KnownClocks(self.clock) if self.settings.emulated
                       else WallClocks(self.clock))

    @property
    def db(self) -> Store:
        assert self.store is not None, "the store opens in the app's lifespan"
        return self.store

    @property
    def pages(self) -> SessionCookies:
        assert self.sessions is not None, "the secret key is read in the app's lifespan"
        return self.sessions

    async def start(self) -> None:
        """Key the Login sessions: the configured secret key, else (the emulator) the one kept
        in the database, made by whichever worker starts first."""
        key = self.settings.secret_key or await self.db.server_secret(
            "session_key", security.new_secret(), self.clock.now()
        )
        self.sessions = SessionCookies(key, self.settings.session_ttl)
        if self.limiter is not None:
            await self.limiter.start()
        if self.controls is not None:
            await self.controls.start()
        if self.settings.sweep_interval > 0:  # retention (linking/retention.py)
            swept_by = (EarliestClock(self.clocks) if isinstance(self.clocks, KnownClocks)
                        else self.clock)
            self.sweeps = retention.Background(retention.Sweeper(self.db, swept_by),
                                               self.settings.sweep_interval)
            self.sweeps.start()

    async def stop(self) -> None:
        if self.controls is not None:
            await self.controls.stop()
        if self.sweeps is not None:
            await self.sweeps.stop()
            self.sweeps = None
        if self.limiter is not None:
            await self.limiter.close()


def context(request: Request) -> Context:
    ctx: Context = request.app.state.context
    return ctx


async def authorize(request: Request, scope: str | None) -> AccessToken:
    """The request's bearer token, which must carry ``scope`` (decisions.md). Its retailer
    goes into the ASGI scope, for the access log (``observe/asgi.py``), and its retailer's
    clock, for the handler (``clock_of``)."""
    ctx = context(request)
    token, request.scope["clock"] = await bearer.authenticate(
        ctx.db, ctx.clocks, request.headers.get("authorization"), scope
    )
    request.scope["retailer_id"] = token.retailer_id
    return token


def clock_of(request: Request) -> Clock:
    """The clock of the retailer whose bearer token the request bore (``authorize``)."""
    clock: Clock = request.scope["clock"]
    return clock


async def token_request(request: Request) -> token_requests.TokenRequest:
    """A token endpoint's parameters and client credentials, in the body or HTTP Basic. They
    stay in the ASGI scope (``fields``) for the emulator's journal."""
    request.scope["fields"] = parsed = token_requests.parse(
        request.query_params.keys(),
        request.headers.get("content-type", ""),
        await read_body(request),
        request.headers.get("authorization"),
    )
    return parsed


async def read_body(request: Request, limit: int | None = None) -> bytes:
    """The raw body, refused with 413 past the configured limit without reading it all, and
    with 408 if it has not all arrived within the body timeout (a slow client holds a
    connection and a task for as long as it likes otherwise; uvicorn has no such limit).
    Read once: it stays in the ASGI scope for whoever asks again (the emulator's seam reads
    a Login page's form before the page does)."""
    if "body" in request.scope:
        body: bytes = request.scope["body"]
        return body
    settings = context(request).settings
    limit = limit or settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    # (A length of more digits than int() will read is over any limit too.)
    if declared.isdigit() and (len(declared) > 15 or int(declared) > limit):
        raise RequestTooLarge()
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(settings.body_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge()
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout() from None
    request.scope["body"] = body = b"".join(chunks)
    return body


async def json_object(request: Request) -> dict[str, object]:
    """A Connect body: malformed JSON is 4001; valid JSON that is not an object counts as {}.
    It stays in the ASGI scope (``fields``) for the emulator's journal."""
    body = await read_body(request)
    fields: dict[str, object] = {}
    if body.strip():
        try:
            decoded = jsonio.decode(body)
        except jsonio.UnreadableJSON:
            raise MalformedJSON() from None
        if isinstance(decoded, dict):
            fields = decoded
    request.scope["fields"] = fields
    return fields
