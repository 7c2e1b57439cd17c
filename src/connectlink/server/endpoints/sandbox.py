"""Sandbox Instacart users (connect-api.md section 8): any client-credentials token."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from connectlink import wire
from connectlink.errors import InvalidToken
from connectlink.linking import sandbox
from connectlink.models import AccessToken
from connectlink.server.context import clock_of, context, json_object
from connectlink.server.render import json_response


async def create_instacart_user(request: Request, token: AccessToken) -> Response:
    ctx = context(request)
    # The emulator's sandbox accounts are test fixtures: a cheap hash (security.py says why).
    account = await sandbox.create_account(ctx.db, clock_of(request), await json_object(request),
                                           test_account=ctx.settings.emulated)
    return json_response(wire.SandboxUser(account.id))


async def authorize_instacart_user(request: Request, token: AccessToken) -> Response:
    ctx = context(request)
    client = await ctx.db.get_client_by_pk(token.client_pk)
    if client is None:  # the client was deleted after issuing the token
        raise InvalidToken()
    code = await sandbox.authorize(
        ctx.db, clock_of(request), ctx.settings.code_ttl, client, request.path_params["user_id"],
        await json_object(request),
    )
    return json_response(wire.SandboxCode(code))
