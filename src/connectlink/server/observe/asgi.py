"""``Observability``: the ASGI wrapper around every HTTP request (the outermost layer of the app,
so that every response has its id, the last resort's 5000 too).

A request's id is the ``X-Request-Id`` it sent when that is well formed (1-128 characters of
``[A-Za-z0-9._:-]``: safe in a header, a log line and a URL), else 32 new random hex digits. The
id goes back on the response, and into ``logs.REQUEST_ID`` for every line logged while the
request is served. Once answered, the request is counted (``metrics.Metrics.count``) and, with
the access log on, written as one line.

What the layers inside know, they leave in the ASGI scope for this one to read, at the cost of a
dict entry: ``operation`` (``app.Endpoint``), ``retailer_id`` (the bearer's retailer, once
authenticated: ``context.authorize``), ``error`` (the refusal rendered: ``render.respond``, the
router's 404 and 405, the last resort) and ``grant`` (the grant type of a token issued).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectlink import text
from connectlink.server.observe import logs
from connectlink.server.observe.logs import REQUEST_ID
from connectlink.server.observe.metrics import NO_OPERATION

if TYPE_CHECKING:
    from connectlink.server.context import Context

HEADER = b"x-request-id"
_WELL_FORMED = re.compile(rb"[A-Za-z0-9._:-]{1,128}").fullmatch
access_log = logging.getLogger("connectlink.access")


def request_id(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The id the request sent, if well formed; else a new one (os.urandom: a fifth of the cost
    of uuid4, the same 32 hex digits to look at)."""
    for name, value in headers:
        if name == HEADER:
            if _WELL_FORMED(value):
                return value
            break
    return os.urandom(16).hex().encode()


class Observability:
    """Request ids, the access log and the metrics, around ``app``."""

    def __init__(self, app: ASGIApp, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx
        self.metrics = ctx.metrics
        self.access = access_log if ctx.settings.access_log else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, self._at_shutdown(send)
                           if scope["type"] == "lifespan" else send)
            return
        started = time.perf_counter()
        given = request_id(scope["headers"])
        status = 500  # what the log and the counters say if no response ever started

        # A plain function returning ``send``'s awaitable: a coroutine a message fewer.
        def send_with_id(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), (HEADER, given)]}
            return send(message)

        reset = REQUEST_ID.set(given.decode("ascii"))
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            finished = time.perf_counter()
            operation = scope.get("operation", NO_OPERATION)
            self.metrics.count(operation, status, finished - started, scope.get("error"),
                               scope.get("grant"))
            self.metrics.follow(self.ctx.store, self.ctx.limiter, finished)
            if self.access is not None and self.access.isEnabledFor(logging.INFO):
                self._log(scope, status, (finished - started) * 1000)
            REQUEST_ID.reset(reset)

    def _at_shutdown(self, send: Send) -> Send:
        """The lifespan's ``send``, which, once the app has shut down, writes every queued log
        line and retires this process's gauges: a uvicorn worker then ends by raising SIGTERM
        again, and a process ended by a signal runs no exit handler."""

        async def send_and_retire(message: Message) -> None:
            if message["type"] in {"lifespan.shutdown.complete", "lifespan.shutdown.failed"}:
                logs.drain()
                self.metrics.retire()
            await send(message)

        return send_and_retire

    def _log(self, scope: Scope, status: int, ms: float) -> None:
        """One line: never the query string, the headers or the body (any may carry a
        credential), and the path as ``text.for_log`` has it (bounded, no line breaks)."""
        client = scope.get("client")
        address = client[0] if client else "-"
        path = text.for_log(scope["path"])
        operation = scope.get("operation")
        retailer = scope.get("retailer_id")
        fields: dict[str, Any] = {
            "client": address, "method": scope["method"], "path": path, "status": status,
            "latency_ms": round(ms, 2), "operation": operation,
        }
        if retailer is not None:
            fields["retailer_id"] = retailer
        assert self.access is not None
        # makeRecord and handle, not info(): info() looks up its caller's frame, a third of
        # a log call's cost, for a file and line that are always these.
        record = self.access.makeRecord(
            self.access.name, logging.INFO, __file__, 0, '%s "%s %s" %d %.1fms %s%s',
            (address, scope["method"], path, status, ms, operation or "-",
             "" if retailer is None else f" retailer {retailer}"),
            None, extra={"fields": fields},
        )
        self.access.handle(record)
