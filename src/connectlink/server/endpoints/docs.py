"""The OpenAPI document and the reference page rendered from it (local assets, no script)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from connectlink.server.context import context
from connectlink.server.pages.templates import page

_JSON = {"Cache-Control": "no-cache"}


async def openapi(request: Request) -> Response:
    return Response(context(request).api.encoded, 200, _JSON, "application/json")


async def reference(request: Request) -> Response:
    """Every operation with its parameters, bodies, statuses and example refusals."""
    return page("reference.html", document=context(request).api.document)
