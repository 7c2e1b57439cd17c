"""Bearer tokens on resource endpoints (RFC 6750; decisions.md "Which bearer token")."""

from __future__ import annotations

from connectlink import security
from connectlink.clock import Clock, Clocks
from connectlink.errors import ExpiredToken, InsufficientScope, InvalidToken, RevokedToken
from connectlink.models import AccessToken
from connectlink.oauth import headers
from connectlink.storage.base import Store


async def authenticate(
    store: Store, clocks: Clocks, authorization: str | None, scope: str | None
) -> tuple[AccessToken, Clock]:
    """The client-credentials token behind the header, holding ``scope`` when one is given,
    and its retailer's clock (by which it expires, and the request is served).

    Linking tokens are never bearers: they only travel in a link request's body.
    """
    value = headers.credentials(authorization, "bearer")  # section 2.1
    if value is None:
        raise InvalidToken(token_sent=False)
    token = await store.get_token(security.digest(value)) if value else None
    if token is None:
        raise InvalidToken()
    if token.revoked_at is not None:
        raise RevokedToken()
    clock = await clocks.of(token.retailer_id)
    if token.expires_at <= clock.now():
        raise ExpiredToken()
    if token.is_linking_token or (scope is not None and scope not in token.scopes):
        raise InsufficientScope()
    return token, clock
