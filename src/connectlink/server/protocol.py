"""uvicorn's httptools protocol with a deadline on request headers (a slowloris defence).

uvicorn 0.54 has no timeout for a request's headers. Its only timer is the keep-alive one,
armed after a response and cancelled by *any* bytes that arrive; a fresh connection has no
timer at all. Measured against ``connectlink serve`` on stock ``http="httptools"``: a client
that trickled one header byte every 0.2 s was still connected, unanswered, after 60 s; one
that connected and sent nothing was still connected after 60 s; one that sent a bare CRLF
every 2 s after its first response was still connected after 20 s (the CRLF cancels the
keep-alive timer, and no request begins, so nothing re-arms it). Each such client holds a
socket and a file descriptor for as long as it likes.

``HeaderDeadlineProtocol`` gives every request ``header_timeout`` seconds for its complete
headers, counted from the connection's start for the first request and from the first byte
of each later one, and otherwise answers 408 (``errors.RequestTimeout``) and closes (a
connection that never sent a byte is closed without an answer, as nginx does). There is
one ``loop.call_later`` handle per request still in its headers, and no clock reading per
chunk. Bodies are the handlers' business (``server/context.py`` ``read_body``).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from asyncio import TimerHandle
from collections.abc import Mapping
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from connectlink.errors import RequestTimeout
from connectlink.jsonio import encode
from connectlink.server.headers import EVERY_RESPONSE
from connectlink.settings import Settings

HEADER_TIMEOUT_VARIABLE = "CONNECTLINK_HEADER_TIMEOUT"
TIMEOUT_BODY = encode(RequestTimeout().body())


def header_timeout_from_env(environ: Mapping[str, str] = os.environ) -> float:
    """``Settings.header_timeout`` from the environment. Only that one variable is passed on,
    so a production profile's other requirements (its secret key) cannot fail an import."""
    only = {HEADER_TIMEOUT_VARIABLE: environ[HEADER_TIMEOUT_VARIABLE]} \
        if HEADER_TIMEOUT_VARIABLE in environ else {}
    return Settings.from_env(only).header_timeout


def timeout_response(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The 408, in the Connect envelope, with uvicorn's default headers (``date``) first and
    the security headers every response carries (``headers.py``)."""
    lines = [STATUS_LINE[RequestTimeout.status]]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    lines += [name + b": " + value + b"\r\n" for name, value in EVERY_RESPONSE]
    lines += [
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(TIMEOUT_BODY)).encode("ascii") + b"\r\n",
        b"connection: close\r\n",
        b"\r\n",
        TIMEOUT_BODY,
    ]
    return b"".join(lines)


DROP = "connectlink.drop"  # the ASGI scope extension that closes the request's connection


class _Drop:
    """Close the connection with no answer (the emulator's ``drop`` fault); the request's cycle
    counts as disconnected, so uvicorn sends no 500 in its place.

    It reaches the cycle through a weak reference: the cycle holds the scope that holds this,
    and a strong one would make every request a reference cycle, left for the garbage
    collector (whose full collections then stalled the event loop for 40-60 ms)."""

    __slots__ = ("_cycle", "_transport")

    def __init__(self, cycle: Any, transport: asyncio.Transport) -> None:
        self._cycle = weakref.ref(cycle) if cycle is not None else None
        self._transport = transport

    def __call__(self) -> None:
        cycle = self._cycle() if self._cycle is not None else None
        if cycle is not None:
            cycle.disconnected = True
        self._transport.close()


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose requests must finish their headers in ``header_timeout``
    seconds. Read once, when this module is imported: ``connectlink serve`` sets the variable
    before uvicorn imports this class, in its own process and in every worker."""

    header_timeout: ClassVar[float] = header_timeout_from_env()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_deadline: TimerHandle | None = None
        self.spoke = False  # has the client sent a byte yet?

    def _arm_header_deadline(self) -> None:
        if self.header_deadline is None:
            self.header_deadline = self.loop.call_later(
                self.header_timeout, self._header_deadline_passed
            )

    def _cancel_header_deadline(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The keep-alive timer is armed only while a connection idles between requests, so
        # these are the first bytes after such a pause: the next request's deadline starts
        # now, even if they are only CRLFs that begin no message (see the module docstring).
        if self.timeout_keep_alive_task is not None:
            self._arm_header_deadline()
        self.spoke = True
        super().data_received(data)

    def on_message_begin(self) -> None:
        # Pipelined requests begin without an idle pause; the first request's deadline
        # already runs from connection_made and is kept.
        self._arm_header_deadline()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._cancel_header_deadline()
        super().on_headers_complete()
        extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
        extensions[DROP] = _Drop(self.cycle, self.transport)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.header_deadline is not None:
            # A pipelined request was in its headers while its predecessor was answered (and
            # uvicorn may have paused reading meanwhile): its time starts again from now.
            self._cancel_header_deadline()
            self._arm_header_deadline()

    def _header_deadline_passed(self) -> None:
        self.header_deadline = None
        if self.transport.is_closing():
            return
        if (self.cycle is not None and not self.cycle.response_complete) or self.pipeline:
            # An earlier request on this connection is still being answered, and uvicorn may
            # have paused reading for it: the stall may be ours, not the client's. Wait again
            # (on_response_complete restarts the clock once the server is ready to read).
            self._arm_header_deadline()
            return
        prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
        if not self.spoke:
            # Nothing was asked, so nothing is answered (as nginx does): a 408 here could be
            # read as the answer to a request the client sends at this very moment.
            self.logger.info("%sNo request after %gs: closed", prefix, self.header_timeout)
            self.transport.close()
            return
        self.logger.info("%sRequest headers incomplete after %gs: 408", prefix,
                         self.header_timeout)
        self.transport.write(timeout_response(self.server_state.default_headers))
        self.transport.close()
