"""Sandbox Instacart users (connect-api.md section 8): any client-credentials token."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from connectlink.errors import InvalidToken
from connectlink.linking import sandbox
from connectlink.server.context import authorize, context, json_object
from connectlink.server.render import json_response


async def create_instacart_user(request: Request) -> Response:
    await authorize(request, None)
    ctx = context(request)
    account = await sandbox.create_account(ctx.db, ctx.clock, await json_object(request))
    return json_response({"id": account.id})


async def authorize_instacart_user(request: Request) -> Response:
    token = await authorize(request, None)
    ctx = context(request)
    client = await ctx.db.get_client_by_pk(token.client_pk)
    if client is None:  # the client was deleted after issuing the token
        raise InvalidToken()
    code = await sandbox.authorize(
        ctx.db, ctx.clock, ctx.settings.code_ttl, client, request.path_params["user_id"],
        await json_object(request),
    )
    return json_response({"code": code})
