"""The one place errors become responses: every envelope on the wire, and every error a
browser sees on the Login pages (a page, or a redirect back to the client), is rendered here."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response

from connectlink import jsonio, text
from connectlink.errors import (
    ConnectError,
    ConnectLinkError,
    FatalAuthorizationError,
    InternalError,
    LoginLocked,
    PageError,
    RedirectableAuthorizationError,
)
from connectlink.linking.links import iso_utc
from connectlink.server.pages.templates import PAGE_HEADERS, page

log = logging.getLogger("connectlink.errors")
Handler = Callable[[Request], Awaitable[Response]]
Renderer = Callable[[ConnectLinkError], Response]

# What the access log records for a client that left before its request was answered (the
# status nginx uses); it is never sent, there is nobody left to send it to.
CLIENT_CLOSED_REQUEST = 499


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(jsonio.encode(body), status, headers, "application/json")


def error_response(error: ConnectLinkError) -> Response:
    """The wire form of any ConnectLink error: its status, body and headers, all its own."""
    return json_response(error.body(), error.status, error.headers())


# What a shopper reads when something outside the authorization rules goes wrong on a page.
_PAGE_WORDS = {
    404: ("Page not found", "There is nothing at this address."),
    405: ("Page not found", "There is nothing at this address."),
    413: ("That was too much", "The form sent more than Instacart accepts."),
}
_TROUBLE = ("Something went wrong", "Instacart could not finish this just now. Please try "
            "again in a moment.")


def page_error_response(error: ConnectLinkError) -> Response:
    """The browser's form of an error: redirectable authorization errors go back to the
    client's registered redirect URI (RFC 6749 section 4.1.2.1); everything else is a page
    saying what happened, with the status and headers its wire form has."""
    if isinstance(error, RedirectableAuthorizationError):
        return RedirectResponse(error.location(), 302, PAGE_HEADERS)
    slug = None
    if isinstance(error, FatalAuthorizationError | PageError):
        title, advice = error.title, error.advice
        slug = error.error
    elif isinstance(error, ConnectError) and error.status < 500:
        title, advice = _PAGE_WORDS.get(error.status, ("Bad request", error.message))
    else:
        title, advice = _TROUBLE
    response = page("error.html", error.status, title=title, advice=advice, slug=slug,
                    **_retry_context(error))
    response.headers.update(error.headers())
    return response


def _retry_context(error: ConnectLinkError) -> dict[str, Any]:
    if not isinstance(error, LoginLocked):
        return {}
    return {
        "retry_at": time.strftime("%H:%M UTC on %d %B %Y", time.gmtime(error.until)),
        "retry_at_iso": iso_utc(error.until),
        "retry_minutes": max(1, math.ceil(error.retry_after / 60)),
    }


def _detached(error: ConnectLinkError) -> ConnectLinkError:
    """The refusal without its traceback and the exceptions chained to it, whose frames hold
    the request: kept in the request's scope, they made every refused request a reference cycle
    for the garbage collector. It has been answered by then; nothing reads them."""
    error.__traceback__ = error.__cause__ = error.__context__ = None
    return error


async def respond(
    handler: Handler, request: Request, render: Renderer = error_response
) -> Response:
    """Run a handler; whatever it raises becomes its wire form here.

    Anything unplanned is our fault: the documented 5000 envelope, and a log line for us that
    names the request by method and path only (headers, query and body may hold credentials).
    The connection stays open for the client's next request. A client that leaves before its
    body has arrived is no failure of ours: one INFO line, and nobody to answer.
    """
    try:
        return await handler(request)
    except ConnectLinkError as error:
        request.scope["error"] = _detached(error)  # for the metrics (observe/asgi.py)
        return render(error)
    except ClientDisconnect:
        log.info("client left during %s %s", request.method, text.for_log(request.url.path))
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    except Exception:
        log.exception("unexpected failure on %s %s", request.method,
                      text.for_log(request.url.path))
        request.scope["error"] = failure = InternalError()
        return render(failure)
