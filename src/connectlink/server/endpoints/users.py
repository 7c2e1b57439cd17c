"""Connect users (connect-api.md section 7)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from connectlink.linking import users
from connectlink.models import FULFILLMENT
from connectlink.server.context import authorize, context, json_object
from connectlink.server.render import json_response

SUCCESS = {"success": True}


async def create(request: Request) -> Response:
    token = await authorize(request, FULFILLMENT)
    ctx = context(request)
    user = await users.create_or_update(
        ctx.db, ctx.clock, token.retailer_id, await json_object(request),
        request.headers.get("accept-language"),
    )
    return json_response(users.render(user))


async def read(request: Request) -> Response:
    token = await authorize(request, FULFILLMENT)
    ctx = context(request)
    user = await users.find(ctx.db, ctx.clock, token.retailer_id, request.path_params["user_id"])
    return json_response(users.render(user))


async def privacy_request(request: Request) -> Response:
    token = await authorize(request, FULFILLMENT)
    ctx = context(request)
    await users.request_privacy(
        ctx.db, ctx.clock, ctx.settings.privacy_retention, token.retailer_id,
        request.path_params["user_id"],
    )
    return json_response(SUCCESS)
