"""``Observability``: the ASGI wrapper around every HTTP request (the outermost layer of the app,
so that every response has its id, the last resort's 5000 too).

A request's id is the ``X-Request-Id`` it sent when that is well formed (1-128 characters of
``[A-Za-z0-9._:-]``: safe in a header, a log line and a URL), else 32 new random hex digits. The
id goes back on the response, and into ``logs.REQUEST_ID`` for every line logged while the
request is served. Once answered, the request is counted (``metrics.Metrics.count``, with the
metrics on) and, with the access log on, written as one line.

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
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectlink.server.observe import logs
from connectlink.server.observe.logs import REQUEST_ID
from connectlink.server.observe.metrics import NO_OPERATION

if TYPE_CHECKING:
    from connectlink.server.context import Context

HEADER = b"x-request-id"
_WELL_FORMED = re.compile(rb"[A-Za-z0-9._:-]{1,128}").fullmatch
access_log = logging.getLogger(logs.ACCESS_LOGGER)


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
        self.metrics = ctx.metrics if ctx.settings.metrics else None
        self.access = access_log if ctx.settings.access_log else None
        # Where access lines go without a LogRecord each (``logs.Access``), once known.
        self.sink: logs.QueuedHandler | None = None
        self.sink_known = False

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
            if self.metrics is not None:
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
                if self.metrics is not None:
                    self.metrics.retire()
            await send(message)

        return send_and_retire

    def _log(self, scope: Scope, status: int, ms: float) -> None:
        """One line (``logs.Access.line``), through the serving process's queue without a
        ``LogRecord`` when it has one, else as a record wherever that process sends them."""
        client = scope.get("client")
        entry = logs.Access(time.time(), REQUEST_ID.get(), client[0] if client else "-",
                            scope["method"], scope["path"], status, ms, scope.get("operation"),
                            scope.get("retailer_id"))
        if not self.sink_known:  # the process's logging is configured by now
            self.sink, self.sink_known = logs.queued_access(), True
        if self.sink is not None:
            self.sink.access(entry)
            return
        assert self.access is not None
        message, fields = entry.line()
        # makeRecord and handle, not info(): info() looks up its caller's frame, a third of
        # a log call's cost, for a file and line that are always these.
        record = self.access.makeRecord(self.access.name, logging.INFO, __file__, 0, message,
                                        (), None, extra={"fields": fields})
        self.access.handle(record)
