"""Link an Instacart account, and read its membership (connect-api.md sections 4, 5)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from connectlink.linking import links
from connectlink.models import FULFILLMENT
from connectlink.server.context import authorize, context, json_object
from connectlink.server.endpoints.users import SUCCESS
from connectlink.server.render import json_response


async def link(request: Request) -> Response:
    token = await authorize(request, FULFILLMENT)
    ctx = context(request)
    await links.link(
        ctx.db, ctx.clock, token.retailer_id, request.path_params["user_id"],
        await json_object(request), request.headers.get("x-retailer-id"),
    )
    return json_response(SUCCESS)


async def membership(request: Request) -> Response:
    token = await authorize(request, FULFILLMENT)
    ctx = context(request)
    found = await links.membership(
        ctx.db, ctx.clock, token.retailer_id, request.path_params["user_id"]
    )
    return json_response(found)
