"""uvicorn's httptools protocol with a deadline on request headers (a slowloris defence), caps
on their size, one valid ``Host``, and an HTTP/2 cleartext upgrade offer served as HTTP/1.1.

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

Header caps (decisions.md, as nginx, Node and Keycloak cap them): a line over ``MAX_LINE``
bytes, headers over ``MAX_HEAD`` in all or more than ``MAX_FIELDS`` fields are answered 431 and
the connection closed. httptools keeps a header's bytes until the header ends, so a line still
growing is measured as it arrives (``data_received``), not only when it is complete: measured
before, one 1 MB line or 10,000 headers were served, and 16 clients streaming headers took
the server from 100 to 481 MB. A chunked body's trailer fields count against the same caps.

A request the protocol refuses (these 431s and 400s, and a request llhttp cannot parse, in the
same Connect envelope) is answered after every request before it on the connection, and then
the connection is closed: nothing after it is read.

Host (RFC 9112 section 3.2): an HTTP/1.1 request without one, with two, or with one that is no
``host[:port]`` is answered 400 and closed, before any route sees it: the admin plane's
loopback rule reads that header.

``Upgrade: h2c`` (what Java's ``HttpClient`` offers on every cleartext request): llhttp takes
the offer for a switch and hands over the rest of the bytes, body included, as the new
protocol's; uvicorn then served the request with an empty body and the connection broke.
RFC 9110 section 7.8 says a server that does not upgrade serves the request as it is: the
rest is parsed again, as this request's body and the requests after it, on the same
connection.
"""

from __future__ import annotations

import asyncio
import os
import re
import weakref
from asyncio import TimerHandle
from collections.abc import Mapping
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from connectlink.errors import BadRequest, ConnectError, HeaderFieldsTooLarge, RequestTimeout
from connectlink.jsonio import encode
from connectlink.server.headers import EVERY_RESPONSE
from connectlink.settings import Settings

HEADER_TIMEOUT_VARIABLE = "CONNECTLINK_HEADER_TIMEOUT"
MAX_LINE = 8 * 1024  # bytes in the request line, or in one header line
MAX_HEAD = 32 * 1024  # bytes in all the header lines of a request
MAX_FIELDS = 100
# RFC 9112 section 3.2, RFC 3986 section 3.2.2: an IP literal or a reg-name, then a port.
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(:[0-9]*)?")


def header_timeout_from_env(environ: Mapping[str, str] = os.environ) -> float:
    """``Settings.header_timeout`` from the environment. Only that one variable is passed on,
    so a production profile's other requirements (its secret key) cannot fail an import."""
    only = {HEADER_TIMEOUT_VARIABLE: environ[HEADER_TIMEOUT_VARIABLE]} \
        if HEADER_TIMEOUT_VARIABLE in environ else {}
    return Settings.from_env(only).header_timeout


def refusal_response(error: ConnectError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A refusal the protocol answers itself (408, 431, 400), in the Connect envelope, with
    uvicorn's default headers (``date``) first, the security headers every response carries
    (``headers.py``) and ``Connection: close``."""
    body = encode(error.body())
    lines = [STATUS_LINE[error.status]]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    lines += [name + b": " + value + b"\r\n" for name, value in EVERY_RESPONSE]
    lines += [
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
        b"connection: close\r\n",
        b"\r\n",
        body,
    ]
    return b"".join(lines)


def timeout_response(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    return refusal_response(RequestTimeout(), default_headers)


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
        # The request being parsed: bytes of its request line, of its complete header lines,
        # of the line still arriving, and its fields; whether it is in its headers, began in
        # the bytes last fed, or may be in its trailer.
        self.url_bytes = self.head_bytes = self.line_bytes = self.fields = 0
        self.in_head = self.began_here = self.trailing = False
        self.refused: ConnectError | None = None  # answered by the protocol, not the app
        self.continuing: Any = None  # the cycle whose body a declined upgrade's parser reads

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
        self._unset_keepalive_if_required()
        if self.refused is not None:
            return  # nothing after a refused request is read; its answer waits its turn
        fed = data
        while data:  # a loop, not a recursion: each declined upgrade leaves bytes to parse
            fed, data = data, self._feed(data)
        if self.refused is None and (self.in_head or self.trailing) and not self.began_here:
            # httptools holds a header's bytes until the header ends: measure the line still
            # arriving (after the last line feed), so that no line grows without bound. Not
            # when the message began in these bytes: a line feed in them may be an earlier
            # message's, and the next bytes are measured all the same.
            feed = fed.rfind(b"\n")
            self.line_bytes = self.line_bytes + len(fed) if feed < 0 else len(fed) - feed - 1
            if self.line_bytes > MAX_LINE or self.head_bytes + self.line_bytes > MAX_HEAD:
                self._refuse(HeaderFieldsTooLarge(), in_trailer=self.trailing)
        if self.refused is not None:
            self._answer_refusal()

    def _feed(self, data: bytes) -> bytes:
        """Parse ``data``; what a declined upgrade leaves to parse again, else nothing."""
        self.began_here = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self.refused is None and self._should_upgrade():
                self.handle_websocket_upgrade()
            elif self.refused is None:
                return self._decline_upgrade(data[upgrade.args[0]:])
        except httptools.HttpParserError:
            if self.refused is None:
                self.logger.warning("Invalid HTTP request received.")
                self._refuse(BadRequest())
        return b""

    def _decline_upgrade(self, rest: bytes) -> bytes:
        """Serve an upgrade offer (``h2c``) as the HTTP/1.1 request it also is: llhttp took
        ``rest`` for the new protocol's and completed the message without its body. A new
        parser reads ``rest`` as that body (by the framing the request's headers gave) and
        then as the requests after it; the old one is done. The bytes to parse are returned."""
        cycle = self.cycle
        self.parser = self._new_parser()
        done = cycle is None or cycle.response_complete
        framing = None if done else _body_framing(self.headers)
        if framing is not None:
            assert cycle is not None
            cycle.more_body = True  # llhttp said it was complete; its body is in ``rest``
            self.continuing = cycle
            rest = b"POST / HTTP/1.1\r\n" + framing + b"\r\n" + rest
        return rest

    def _new_parser(self) -> httptools.HttpRequestParser:
        """A parser as uvicorn makes its own, with the same leniency."""
        parser = httptools.HttpRequestParser(self)
        # uvicorn's: answer the first of pipelined requests after one that said close.
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
        return parser

    def _refuse(self, error: ConnectError, in_trailer: bool = False) -> None:
        """Refuse the request being parsed. In its trailer, that request is the one being
        answered: it is cut short (its handler sees the client gone) for the refusal."""
        if self.refused is None:
            self.refused = error
            if in_trailer and self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True
                self.cycle.message_event.set()

    def _answering(self) -> bool:
        """Is an earlier request of this connection still owed its answer?"""
        cycle = self.cycle
        return (cycle is not None and not cycle.response_complete
                and not cycle.disconnected) or bool(self.pipeline)

    def _answer_refusal(self) -> None:
        """Answer the refused request and close, once every request before it is answered
        (until then nothing more is read: ``on_response_complete`` comes back here)."""
        assert self.refused is not None
        self._cancel_header_deadline()
        if self._answering():
            self.flow.pause_reading()
            return
        if not self.transport.is_closing():
            prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.info("%sRequest refused by the protocol: %d %s", prefix,
                             self.refused.status, self.refused.message)
            self.transport.write(refusal_response(self.refused, self.server_state.default_headers))
            self.transport.close()

    def on_chunk_header(self) -> None:
        # The last chunk's header is followed by trailer fields, which httptools holds as it
        # holds headers: measured the same way until a data chunk's bytes, or its end, come.
        self.trailing = True
        self.line_bytes = 0

    def on_chunk_complete(self) -> None:
        self.trailing = False

    def on_message_begin(self) -> None:
        if self.continuing is not None:
            return  # the declined upgrade's body, framed anew (``_decline_upgrade``)
        # Pipelined requests begin without an idle pause; the first request's deadline
        # already runs from connection_made and is kept. A message begun is no idle
        # connection: no keep-alive timer (``on_message_complete`` may have armed one in
        # these very bytes) closes it under its headers.
        self._unset_keepalive_if_required()
        self._arm_header_deadline()
        self.url_bytes = self.head_bytes = self.line_bytes = self.fields = 0
        self.in_head = self.began_here = True
        self.trailing = False
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self.continuing is not None:
            return
        self.url_bytes += len(url)
        if self.url_bytes > MAX_LINE:
            self._refuse(HeaderFieldsTooLarge())
            return
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # A trailer field (after a chunked body) counts against the same caps.
        if self.refused is not None:
            return
        size = len(name) + len(value) + 4  # "name: value\r\n"
        self.fields += 1
        self.head_bytes += size
        self.line_bytes = 0
        if size > MAX_LINE or self.head_bytes > MAX_HEAD or self.fields > MAX_FIELDS:
            self._refuse(HeaderFieldsTooLarge(), in_trailer=not self.in_head)
        elif self.continuing is None:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.continuing is not None:
            return
        self.in_head = False
        self._cancel_header_deadline()
        if self.refused is None and not _one_valid_host(self.headers,
                                                       self.parser.get_http_version()):
            self._refuse(BadRequest())
        if self.refused is not None:
            return  # answered once the bytes at hand are parsed (``data_received``)
        super().on_headers_complete()
        extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
        extensions[DROP] = _Drop(self.cycle, self.transport)

    def on_body(self, body: bytes) -> None:
        self.trailing = False  # a data chunk's bytes: no trailer yet
        if self.continuing is not None:
            cycle = self.continuing
            if not cycle.response_complete:
                cycle.body += body
                if len(cycle.body) > HIGH_WATER_LIMIT:
                    self.flow.pause_reading()
                cycle.message_event.set()
            return
        if self.refused is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self.continuing is not None:
            cycle, self.continuing = self.continuing, None
            cycle.more_body = False
            cycle.message_event.set()
            return
        if self.refused is None:
            super().on_message_complete()
            cycle = self.cycle
            if cycle is not None and cycle.response_complete and not self.pipeline:
                # Answered before its body had all come (a bearer refused at once): the body's
                # last bytes end the request, and the connection idles as after any answer,
                # not as if they had begun one more (whose deadline would answer 408).
                self._cancel_header_deadline()
                self._unset_keepalive_if_required()
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.refused is not None:  # a refused request waited for this answer
            if not self._answering():
                self._answer_refusal()
            return
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


def _body_framing(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The header lines that frame a request's body (``Content-Length`` or chunked), to
    parse it again; None for a request without a body."""
    for name, value in headers:
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            return b"transfer-encoding: chunked\r\n"
    for name, value in headers:
        if name == b"content-length" and value.strip() not in (b"", b"0"):
            return b"content-length: " + value.strip() + b"\r\n"
    return None


def _one_valid_host(headers: list[tuple[bytes, bytes]], http_version: str) -> bool:
    """RFC 9112 section 3.2: exactly one ``Host`` in HTTP/1.1 (at most one before), and that
    one a ``host[:port]``."""
    hosts = [value for name, value in headers if name == b"host"]
    if len(hosts) > 1 or (not hosts and http_version == "1.1"):
        return False
    return not hosts or _HOST.fullmatch(hosts[0].strip()) is not None
