"""The security headers on every response, added in this one place.

Every response ConnectLink sends carries, unless it set the header itself:

- ``X-Content-Type-Options: nosniff``: a body is what its ``Content-Type`` says;
- ``Cache-Control: no-store``: tokens and user data must not sit in a browser's or a proxy's
  cache (a response with its own ``Cache-Control`` keeps it: the pages' stylesheet, the OpenAPI
  document, the OAuth errors' ``no-store`` with ``Pragma``);
- ``Referrer-Policy: no-referrer``: codes and user ids travel in URLs;
- ``Strict-Transport-Security: max-age=31536000; includeSubDomains``, in the production profile
  only, and only on a request that came over https (the scheme uvicorn saw, after the proxy
  headers it was told to trust: ``Settings.forwarded_allow_ips``). RFC 6797 section 7.2: a host
  must not send it over plain http, where it would prove nothing. The emulator never sends it:
  it would pin ``localhost`` to https in the developer's browser for a year, for every server
  on it.

The Login pages add their own on top (``pages/templates.py``: the CSP, ``X-Frame-Options``).
The headers are encoded once; a response pays for one closure, one look at its own few header
names and a new header list: about 1 us, and as much again for uvicorn to write the three
headers (measured with uvicorn's httptools protocol on a bare request loop). The 408 of
``protocol.py``, written before any app runs, carries ``EVERY_RESPONSE`` too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable

from starlette.types import Message, Scope, Send

from connectlink.settings import Settings

Header = tuple[bytes, bytes]

EVERY_RESPONSE: tuple[Header, ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
)
HSTS: Header = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
NAMES = frozenset(name for name, _ in (*EVERY_RESPONSE, HSTS))


class SecurityHeaders:
    """The headers a server with these settings adds to each response it sends."""

    def __init__(self, settings: Settings) -> None:
        self.over_http = EVERY_RESPONSE
        self.over_https = (*EVERY_RESPONSE, HSTS) if settings.profile == "production" \
            else EVERY_RESPONSE

    def sender(self, scope: Scope, send: Send) -> Send:
        """``send``, with the headers added to the response's start."""
        added = self.over_https if scope.get("scheme") == "https" else self.over_http

        # A plain function that returns ``send``'s awaitable: one coroutine a message fewer
        # than an ``async def`` wrapper would cost.
        def send_secured(message: Message) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                message["headers"] = with_added(message.get("headers", ()), added)
            return send(message)

        return send_secured


def with_added(headers: Iterable[Header], added: tuple[Header, ...]) -> list[Header]:
    """``headers`` and those of ``added`` that they lack, as a new list (a response's own may
    be shared). ASGI header names are lower case."""
    own = list(headers)
    for name, _ in own:
        if name in NAMES:  # the response set one itself (a page, an OAuth error): it keeps it
            present = {name for name, _ in own}
            return own + [header for header in added if header[0] not in present]
    return own + list(added)
