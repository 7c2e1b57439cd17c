"""Connect users (connect-api.md section 7)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from connectlink import wire
from connectlink.linking import users
from connectlink.models import AccessToken
from connectlink.server.context import clock_of, context, json_object
from connectlink.server.render import json_response


async def create(request: Request, token: AccessToken) -> Response:
    ctx = context(request)
    user = await users.create_or_update(
        ctx.db, clock_of(request), token.retailer_id, await json_object(request),
        request.headers.get("accept-language"),
    )
    return json_response(users.render(user))


async def read(request: Request, token: AccessToken) -> Response:
    ctx = context(request)
    user = await users.find(ctx.db, clock_of(request), token.retailer_id,
                            request.path_params["user_id"])
    return json_response(users.render(user))


async def privacy_request(request: Request, token: AccessToken) -> Response:
    """The request has no fields; a body that is sent must still be JSON (decisions.md)."""
    ctx = context(request)
    await json_object(request)
    await users.request_privacy(
        ctx.db, clock_of(request), ctx.settings.privacy_retention, token.retailer_id,
        request.path_params["user_id"],
    )
    return json_response(wire.SUCCESS)
