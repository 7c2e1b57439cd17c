"""The one place errors become responses. Every envelope on the wire is rendered here."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from connectlink import jsonio
from connectlink.errors import (
    REALM,
    BearerError,
    ConnectLinkError,
    InternalError,
    InvalidClient,
    MethodNotAllowed,
    OAuthError,
    RateLimited,
    ServiceUnavailable,
)

log = logging.getLogger("connectlink.errors")
Handler = Callable[[Request], Awaitable[Response]]

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


async def respond(handler: Handler, request: Request) -> Response:
    """Run a handler; whatever it raises becomes its wire form here.

    Anything unplanned is our fault: the documented 5000 envelope, and a log line for us that
    names the request by method and path only (headers, query and body may hold credentials).
    The connection stays open for the client's next request.
    """
    try:
        return await handler(request)
    except ConnectLinkError as error:
        return error_response(error)
    except Exception:
        log.exception("unexpected failure on %s %s", request.method, request.url.path)
        return error_response(InternalError())
