"""The one place errors become responses. Every envelope on the wire is rendered here."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectlink import jsonio
from connectlink.errors import (
    REALM,
    BearerError,
    ConnectError,
    ConnectLinkError,
    InternalError,
    InvalidClient,
    MethodNotAllowed,
    NotFound,
    OAuthError,
    RateLimited,
    RequestTooLarge,
    ServiceUnavailable,
)

log = logging.getLogger("connectlink.errors")

# RFC 6749 section 5.1: token responses, and their errors, must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(jsonio.encode(body), status, headers, "application/json")


def error_response(error: ConnectLinkError) -> Response:
    """The wire form of any ConnectLink error, with the headers its family requires."""
    headers: dict[str, str] = {}
    if isinstance(error, BearerError):
        headers["WWW-Authenticate"] = error.challenge()
    elif isinstance(error, OAuthError):
        headers.update(NO_STORE)
        if isinstance(error, InvalidClient) and error.basic_challenge:
            headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
    elif isinstance(error, MethodNotAllowed) and error.allow:
        headers["Allow"] = error.allow
    elif isinstance(error, RateLimited | ServiceUnavailable):
        headers["Retry-After"] = str(error.retry_after)
    return json_response(error.body(), error.status, headers)


async def on_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConnectLinkError)
    return error_response(exc)


_BY_STATUS: dict[int, type[ConnectError]] = {404: NotFound, 413: RequestTooLarge}


async def on_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (routing) in the Connect envelope."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "").split(", ")
        return error_response(MethodNotAllowed(", ".join(sorted(filter(None, allowed)))))
    error_class = _BY_STATUS.get(exc.status_code)
    if error_class is not None:
        return error_response(error_class())
    log.warning("unmapped HTTP status %s on %s", exc.status_code, request.url.path)
    return error_response(InternalError())


class CatchAll:
    """Anything unhandled is our fault: the documented 5000 envelope, and a log line for us.

    A pure ASGI middleware inside the app rather than Starlette's ``ServerErrorMiddleware``,
    which re-raises and so makes uvicorn drop the client's keep-alive connection. The log names
    the request by method and path only: headers, query and body may hold credentials.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def note_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, note_start)
        except Exception:
            log.exception("unexpected failure on %s %s", scope["method"], scope["path"])
            if started:
                raise  # too late for an envelope; let the server close the connection
            await error_response(InternalError())(scope, receive, send)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ConnectLinkError: on_error,
    HTTPException: on_http_exception,
}
