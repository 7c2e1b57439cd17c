"""The app factory and the route table, which reads like the API docs.

The app is Starlette's ``Router`` (routing, path parameters, lifespan) with each endpoint a
plain ASGI callable, not a ``Starlette`` application: its middleware stack wraps every response
message in three layers of closures, a fifth of the link path's time on this project's machines,
for exception handling that ``render.respond`` already does in one place.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import State
from starlette.requests import Request
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectlink import text
from connectlink.clock import Clock, SystemClock
from connectlink.errors import InternalError, MethodNotAllowed, NotFound
from connectlink.server.context import Context
from connectlink.server.limits import Limiter
from connectlink.server.openapi import ApiDocument
from connectlink.server.operations import Operation, for_settings
from connectlink.server.render import Renderer, error_response, log, page_error_response, respond
from connectlink.settings import Settings
from connectlink.storage import Store, open_store


class Endpoint:
    """One path: its operations by method; any other method gets 405 with the full ``Allow``.
    Errors take the operations' form: JSON envelopes for the API, pages for a browser. The
    operation's name goes into the request's scope, for the access log."""

    def __init__(self, operations: list[Operation], limiter: Limiter | None = None) -> None:
        self.by_method = {op.method: (op.name, op.bound(limiter)) for op in operations}
        self.render: Renderer = page_error_response if operations[0].page else error_response
        allowed = set(self.by_method) | ({"HEAD"} if "GET" in self.by_method else set())
        self.allow = ", ".join(sorted(allowed))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        found = self.by_method.get("GET" if method == "HEAD" else method)
        if found is None:
            response = self.render(MethodNotAllowed(self.allow))
        else:
            scope["operation"], handler = found
            response = await respond(handler, Request(scope, receive), self.render)
        await response(scope, receive, send)


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await error_response(NotFound())(scope, receive, send)


def routes(operations: tuple[Operation, ...], limiter: Limiter | None = None) -> list[Route]:
    """One route a path, in the table's order, each operation behind its rate limit if on."""
    by_path: dict[str, list[Operation]] = {}
    for op in operations:
        by_path.setdefault(op.path, []).append(op)
    return [Route(path, Endpoint(ops, limiter)) for path, ops in by_path.items()]


class AccessLog:
    """Method, path and status of each request. Never the query string or the body: either
    may carry a credential."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logging.getLogger("connectlink.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.log.info(
                '%s "%s %s" %d %.1fms %s', scope["client"][0] if scope.get("client") else "-",
                scope["method"], text.for_log(scope["path"]), status,
                (time.perf_counter() - started) * 1000, scope.get("operation", "-"),
            )


class ConnectLink:
    """The ASGI application: the access log (if on), the route table, and a last resort that
    answers 5000 should anything outside a handler fail."""

    def __init__(self, ctx: Context, router: Router) -> None:
        self.state = State({"context": ctx})
        self.router = router
        self.handle: ASGIApp = AccessLog(router) if ctx.settings.access_log else router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        try:
            await self.handle(scope, receive, send)
        except Exception:
            if scope["type"] != "http":
                raise
            log.exception("unexpected failure on %s %s", scope["method"],
                          text.for_log(scope["path"]))
            with contextlib.suppress(RuntimeError):  # too late if the response had begun
                await error_response(InternalError())(scope, receive, send)


def create_app(
    settings: Settings, store: Store | None = None, clock: Clock | None = None
) -> ConnectLink:
    """A ConnectLink server. Without ``store``, the lifespan opens ``settings.database_url``
    in the serving process (and closes it at shutdown)."""
    ctx = Context(settings=settings, clock=clock or SystemClock(), store=store,
                  limiter=Limiter.for_settings(settings))
    operations = for_settings(settings)
    ctx.api = ApiDocument.of(operations)

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        opened = ctx.store is None
        if opened:
            ctx.store = await open_store(settings.database_url, pool_size=settings.pool_size)
        try:
            await ctx.start()
            yield
        finally:
            await ctx.stop()
            if opened and ctx.store is not None:
                await ctx.store.close()
                ctx.store = None

    router = Router(routes(operations, ctx.limiter), redirect_slashes=False, default=not_found,
                    lifespan=lifespan)
    return ConnectLink(ctx, router)


def app_from_env() -> Any:
    """The uvicorn factory (``connectlink.server.app:app_from_env``) for worker processes."""
    return create_app(Settings.from_env())
