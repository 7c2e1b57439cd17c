"""The app factory and the route table, which reads like the API docs.

The app is Starlette's ``Router`` (routing, path parameters, lifespan) with each endpoint a
plain ASGI callable, not a ``Starlette`` application: its middleware stack wraps every response
message in three layers of closures, a fifth of the link path's time on this project's machines,
for exception handling that ``render.respond`` already does in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import State
from starlette.requests import Request
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from connectlink import text
from connectlink.clock import Clock, SystemClock
from connectlink.errors import InternalError, MethodNotAllowed, NotFound, ServiceUnavailable
from connectlink.server import openapi
from connectlink.server.context import Context
from connectlink.server.controls import Controls
from connectlink.server.headers import SecurityHeaders
from connectlink.server.limits import Limiter
from connectlink.server.observe.asgi import Observability
from connectlink.server.observe.metrics import Metrics
from connectlink.server.operations import Operation, for_settings
from connectlink.server.render import Renderer, error_response, log, page_error_response, respond
from connectlink.settings import Settings
from connectlink.storage import Store, open_store


class Endpoint:
    """One path: its operations by method; any other method gets 405 with the full ``Allow``.
    Errors take the operations' form: JSON envelopes for the API, pages for a browser. The
    operation's name goes into the request's scope, for the access log."""

    def __init__(self, operations: list[Operation], limiter: Limiter | None = None,
                 controls: Controls | None = None) -> None:
        self.by_method = {op.method: (op.name, op.bound(limiter, controls))
                          for op in operations}
        self.controls = controls
        self.render: Renderer = page_error_response if operations[0].page else error_response
        allowed = set(self.by_method) | ({"HEAD"} if "GET" in self.by_method else set())
        self.allow = ", ".join(sorted(allowed))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        found = self.by_method.get("GET" if method == "HEAD" else method)
        if found is None:
            scope["error"] = refusal = MethodNotAllowed(self.allow)
            response = self.render(refusal)
        else:
            scope["operation"], handler = found
            started = time.perf_counter()
            request = Request(scope, receive)
            response = await respond(handler, request, self.render)
            if self.controls is not None:  # before the answer goes (controls.settle)
                await self.controls.journal(request, response, started)
        await response(scope, receive, send)


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        scope["error"] = refusal = NotFound()
        await error_response(refusal)(scope, receive, send)


def routes(operations: tuple[Operation, ...], limiter: Limiter | None = None,
           controls: Controls | None = None) -> list[Route]:
    """One route a path, in the table's order, each operation behind its rate limit if on
    and the emulator's controls if it has them and the seam sees it (``Operation.faultable``:
    not the admin plane itself, the documents or health)."""
    by_path: dict[str, list[Operation]] = {}
    for op in operations:
        by_path.setdefault(op.path, []).append(op)
    return [Route(path, Endpoint(ops, limiter, controls if any(op.faultable for op in ops)
                                 else None))
            for path, ops in by_path.items()]


class ConnectLink:
    """The ASGI application: request ids, the access log (if on) and the metrics
    (``observe/``), the route table, and a last resort that answers 5000 should anything
    outside a handler fail; every response, that one too, with its request id and the
    security headers (``headers.py``)."""

    def __init__(self, ctx: Context, router: Router) -> None:
        self.state = State({"context": ctx})
        self.router = router
        self.handle: ASGIApp = router
        self.security_headers = SecurityHeaders(ctx.settings)
        self.observed = Observability(self.serve, ctx)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        await self.observed(scope, receive, send)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """What ``Observability`` wraps (request ids, the access log, the metrics)."""
        if scope["type"] == "http":
            send = self.security_headers.sender(scope, send)
        try:
            await self.handle(scope, receive, send)
        except Exception:
            if scope["type"] != "http":
                raise
            log.exception("unexpected failure on %s %s", scope["method"],
                          text.for_log(scope["path"]))
            scope["error"] = failure = InternalError()
            with contextlib.suppress(RuntimeError):  # too late if the response had begun
                await error_response(failure)(scope, receive, send)
        except asyncio.CancelledError:
            # What uvicorn cancels at the shutdown deadline (``--shutdown-timeout``): a 503
            # its client may retry elsewhere, rather than uvicorn's text/plain 500.
            if scope["type"] == "http":
                with contextlib.suppress(RuntimeError):
                    await error_response(ServiceUnavailable())(scope, receive, send)
            raise


def create_app(
    settings: Settings, store: Store | None = None, clock: Clock | None = None,
    whole_process: bool = False,
) -> ConnectLink:
    """A ConnectLink server. Without ``store``, the lifespan opens ``settings.database_url``
    in the serving process (and closes it at shutdown). ``whole_process``: the app is all this
    process serves (``connectlink serve``'s workers), so at startup it may tune the process
    for serving (``_tune_for_serving``)."""
    ctx = Context(settings=settings, clock=clock or SystemClock(), store=store,
                  limiter=Limiter.for_settings(settings))
    operations = for_settings(settings)
    ctx.api = openapi.served(operations)
    ctx.faultable = frozenset(op.endpoint for op in operations if op.faultable)
    ctx.controls = controls = Controls(ctx) if settings.emulated else None
    ctx.metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        opened = ctx.store is None
        if opened:
            ctx.store = await open_store(settings.database_url, pool_size=settings.pool_size)
        try:
            await ctx.start()
            if whole_process:
                _tune_for_serving(ctx.store)
            yield
        finally:
            await ctx.stop()
            if opened and ctx.store is not None:
                await ctx.store.close()
                ctx.store = None

    router = Router(routes(operations, ctx.limiter, controls), redirect_slashes=False,
                    default=not_found,
                    lifespan=lifespan)
    return ConnectLink(ctx, router)


def _tune_for_serving(store: Store | None) -> None:
    """In a process that serves this app alone, at startup:

    - take what startup made (modules, the app, its caches: some 60,000 objects) out of the
      garbage collector's reach: they live as long as the process, and each full collection
      walked them all, a 20-40 ms pause of the event loop every second or two under load (0.3
      ms once frozen). Reference counting still frees any of them that is let go;
    - hand the GIL over as soon as the store's engine needs (SQLite's group-commit writer).
    """
    gc.collect()
    gc.freeze()
    interval = getattr(getattr(store, "db", None), "gil_switch_interval", None)
    if interval is not None:
        sys.setswitchinterval(min(sys.getswitchinterval(), interval))


def app_from_env() -> Any:
    """The uvicorn factory (``connectlink.server.app:app_from_env``) for worker processes."""
    return create_app(Settings.from_env(), whole_process=True)
