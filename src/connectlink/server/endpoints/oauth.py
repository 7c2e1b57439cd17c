"""``/v2/oauth/token`` and ``/v2/oauth/token/revoke`` (connect-api.md sections 1, 1b, 3)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from connectlink import wire
from connectlink.errors import NO_STORE
from connectlink.oauth import grants
from connectlink.oauth import requests as token_requests
from connectlink.server.context import context, read_body
from connectlink.server.render import json_response


async def _token_request(request: Request) -> token_requests.TokenRequest:
    return token_requests.parse(
        request.query_params.keys(),
        request.headers.get("content-type", ""),
        await read_body(request),
        request.headers.get("authorization"),
    )


async def token(request: Request) -> Response:
    ctx = context(request)
    token_request = await _token_request(request)
    issued = await grants.issue_token(ctx.db, ctx.clock, ctx.lifetimes, token_request)
    return json_response(issued.body(), headers=NO_STORE)


async def revoke(request: Request) -> Response:
    ctx = context(request)
    await grants.revoke(ctx.db, ctx.clock, await _token_request(request))
    return json_response(wire.REVOKED)
