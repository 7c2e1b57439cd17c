"""Link an Instacart account, and read its membership (connect-api.md sections 4, 5)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from connectlink import wire
from connectlink.linking import links
from connectlink.models import AccessToken
from connectlink.server.context import clock_of, context, json_object
from connectlink.server.render import json_response


async def link(request: Request, token: AccessToken) -> Response:
    ctx = context(request)
    await links.link(
        ctx.db, clock_of(request), token.retailer_id, request.path_params["user_id"],
        await json_object(request), request.headers.get("x-retailer-id"),
    )
    return json_response(wire.SUCCESS)


async def membership(request: Request, token: AccessToken) -> Response:
    ctx = context(request)
    found = await links.membership(
        ctx.db, clock_of(request), token.retailer_id, request.path_params["user_id"]
    )
    return json_response(found)
