"""The token endpoint's grants and the revocation endpoint (RFC 6749 sections 4.1.3, 4.4;
RFC 7009), as connect-api.md sections 1, 1b and 3 and decisions.md settle them."""

from __future__ import annotations

from dataclasses import dataclass

from connectlink import security, text, wire
from connectlink.clock import Clocks
from connectlink.errors import (
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    UnauthorizedGrant,
    UnauthorizedRevoke,
    UnsupportedGrantType,
)
from connectlink.models import (
    AUTHORIZATION_CODE,
    CLIENT_CREDENTIALS,
    AccessToken,
    AuthorizationCode,
    OAuthClient,
    RevokeOutcome,
)
from connectlink.oauth import pkce, scopes
from connectlink.oauth.requests import TokenRequest
from connectlink.storage.base import Store

SUPPORTED_GRANTS = (CLIENT_CREDENTIALS, AUTHORIZATION_CODE)
# Compared against when the client_id is unknown, so both failures take the same time.
_NO_SUCH_SECRET = security.digest("")


@dataclass(frozen=True, slots=True)
class TokenLifetimes:
    access_token: int
    linking_token: int


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """The token object of connect-api.md section 1 (Doorkeeper's shape)."""

    access_token: str
    expires_in: int
    created_at: int
    scope: str | None

    def body(self) -> wire.Token:
        return wire.Token(access_token=self.access_token, token_type="Bearer",
                          expires_in=self.expires_in,
                          scope=self.scope or None, created_at=self.created_at)


async def find_client(store: Store, client_id: str | None) -> OAuthClient | None:
    """The client ``client_id`` names; text no client_id can hold (a control character, too
    long) names none, and never reaches the store."""
    if client_id is None or not text.identifier(client_id):
        return None
    return await store.get_client(client_id)


async def named_client(store: Store, request: TokenRequest) -> OAuthClient | None:
    """The client a token request names, whether or not its secret is right: the one read
    of the client a token request makes (``authenticate`` then checks the secret)."""
    credentials = request.credentials
    return await find_client(store, credentials.client_id if credentials else None)


def authenticate(request: TokenRequest, named: OAuthClient | None) -> OAuthClient:
    """RFC 6749 section 2.3: ``named`` (``named_client``'s answer), if the request's secret is
    its secret. An unknown client is compared against a decoy, so both take the same time."""
    credentials = request.credentials
    if credentials is None:
        raise InvalidClient()
    stored = named.secret_digest if named is not None else _NO_SUCH_SECRET
    if not security.matches(credentials.client_secret, stored) or named is None:
        raise InvalidClient(basic_challenge=credentials.via_basic)
    return named


def check_grant_type(request: TokenRequest) -> str:
    """The grant a token request names, checked before its client is (connect-api.md
    section 1): none is ``invalid_request``, one not supported ``unsupported_grant_type``."""
    grant_type = request.get("grant_type")
    if grant_type is None:
        raise InvalidRequest()
    if grant_type not in SUPPORTED_GRANTS:
        raise UnsupportedGrantType()
    return grant_type


async def issue_token(
    store: Store, clocks: Clocks, lifetimes: TokenLifetimes, request: TokenRequest,
    client: OAuthClient,
) -> IssuedToken:
    """``POST /v2/oauth/token``: the grant named by ``grant_type``, for ``client`` (already
    authenticated: ``authenticate``), by the time of the client's retailer."""
    grant_type = check_grant_type(request)
    allowed = client.scopes_for(grant_type)
    if allowed is None:
        raise UnauthorizedGrant()
    now = (await clocks.of(client.retailer_id)).now()
    if grant_type == CLIENT_CREDENTIALS:
        return await _client_credentials(store, now, lifetimes, client, allowed, request)
    return await _authorization_code(store, now, lifetimes, client, request)


async def _client_credentials(
    store: Store,
    now: float,
    lifetimes: TokenLifetimes,
    client: OAuthClient,
    allowed: frozenset[str],
    request: TokenRequest,
) -> IssuedToken:
    """Section 4.4; an omitted scope means every scope the client has for this grant."""
    requested = scopes.parse(request.get("scope"))
    if requested is not None and not requested <= allowed:
        raise InvalidScope()
    granted = allowed if requested is None else requested
    value = security.new_secret()
    await store.save_token(
        AccessToken(
            digest=security.digest(value),
            client_pk=client.pk,
            retailer_id=client.retailer_id,
            scopes=granted,
            created_at=now,
            expires_at=now + lifetimes.access_token,
        )
    )
    return IssuedToken(value, lifetimes.access_token, int(now), scopes.render(granted))


async def _authorization_code(
    store: Store, now: float, lifetimes: TokenLifetimes, client: OAuthClient, request: TokenRequest
) -> IssuedToken:
    """Section 4.1.3: redeem a code for a single-use linking token (connect-api.md section 3).

    A ``scope`` parameter is ignored: the token carries the scope the shopper consented to.
    """
    code, redirect_uri = request.get("code"), request.get("redirect_uri")
    if code is None or redirect_uri is None:
        raise InvalidRequest()
    verifier = request.get("code_verifier")
    value = security.new_secret()

    def check(grant: AuthorizationCode) -> AccessToken:
        if grant.expires_at <= now:
            raise InvalidGrant()
        if redirect_uri != grant.redirect_uri or redirect_uri not in client.redirect_uris:
            raise InvalidGrant()
        if grant.code_challenge is None:
            # RFC 9700 sections 2.1.1 and 4.8.2: a verifier for a code issued without a
            # challenge means the challenge was stripped on the way (a PKCE downgrade).
            if verifier is not None:
                raise InvalidGrant()
        elif not pkce.verify(verifier, grant.code_challenge,
                             grant.code_challenge_method or "plain"):
            raise InvalidGrant()
        return AccessToken(
            digest=security.digest(value),
            client_pk=client.pk,
            retailer_id=client.retailer_id,
            scopes=grant.scopes,
            created_at=now,
            expires_at=now + lifetimes.linking_token,
            account_id=grant.account_id,
            code_digest=grant.digest,
        )

    token = await store.redeem_code(security.digest(code), client.pk, now, check)
    if token is None:
        raise InvalidGrant()
    return IssuedToken(value, lifetimes.linking_token, int(now), scopes.render(token.scopes))


async def revoke(store: Store, clocks: Clocks, request: TokenRequest,
                 client: OAuthClient) -> None:
    """``POST /v2/oauth/token/revoke`` (RFC 7009), by ``client`` (already authenticated): only
    the issuing client may revoke."""
    token = request.get("token")
    if token is None:
        raise InvalidRequest()
    now = (await clocks.of(client.retailer_id)).now()
    outcome = await store.revoke_token(security.digest(token), client.pk, now)
    if outcome is RevokeOutcome.FOREIGN:
        raise UnauthorizedRevoke()
