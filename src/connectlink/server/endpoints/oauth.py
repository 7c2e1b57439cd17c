"""``/v2/oauth/token`` and ``/v2/oauth/token/revoke`` (connect-api.md sections 1, 1b, 3).

The operation table parses the request (``context.token_request``), authenticates its client
once and checks that client's rate limit before these run (decisions.md "Rate limits").
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from connectlink import wire
from connectlink.errors import NO_STORE
from connectlink.models import OAuthClient
from connectlink.oauth import grants
from connectlink.oauth.requests import TokenRequest
from connectlink.server.context import context
from connectlink.server.render import json_response


async def token(request: Request, token_request: TokenRequest,
                client: OAuthClient) -> Response:
    ctx = context(request)
    # (the emulator's expired_token fault issues this one with no lifetime: server/controls.py)
    lifetimes = request.scope.get("lifetimes", ctx.lifetimes)
    issued = await grants.issue_token(ctx.db, ctx.clocks, lifetimes, token_request,
                                     client)
    request.scope["grant"] = token_request.get("grant_type")  # for the metrics: one that worked
    return json_response(issued.body(), headers=NO_STORE)


async def revoke(request: Request, token_request: TokenRequest,
                 client: OAuthClient) -> Response:
    ctx = context(request)
    await grants.revoke(ctx.db, ctx.clocks, token_request, client)
    return json_response(wire.REVOKED)
