"""Rendering the pages: Jinja2 templates and the headers every page carries."""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse, Response

from connectlink import jsonio

# decisions.md "Headers on every page". Codes travel in URLs, hence no-referrer; every asset is
# ConnectLink's own, hence default-src 'self'.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("connectlink.server.pages", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # A body as the wire carries it (key order kept), for the reference page; autoescaped.
    env.filters["wire"] = lambda value: jsonio.encode(value).decode()
    return env


def origin(uri: str) -> str:
    """The CSP source for a redirect URI: its origin, or its scheme for an app's URI."""
    parts = urlsplit(uri)
    if parts.scheme in {"http", "https"}:
        return f"{parts.scheme}://{parts.netloc}"
    return f"{parts.scheme}:"


def security_headers(redirect_uri: str | None = None) -> dict[str, str]:
    """``form-action`` must allow the redirect URI's origin too: browsers apply it to the
    redirect that answers a form post (the consent's Allow and Deny)."""
    form_action = "'self'" + (f" {origin(redirect_uri)}" if redirect_uri else "")
    policy = (
        f"default-src 'self'; form-action {form_action}; frame-ancestors 'none'; "
        "base-uri 'none'; object-src 'none'"
    )
    return {**PAGE_HEADERS, "Content-Security-Policy": policy}


def page(
    template: str, status: int = 200, redirect_uri: str | None = None, **context: Any
) -> Response:
    html = environment().get_template(template).render(**context)
    return HTMLResponse(html, status, security_headers(redirect_uri))
