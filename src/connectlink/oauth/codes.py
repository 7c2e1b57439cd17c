"""Authorization codes: what a shopper's consent produces (RFC 6749 section 4.1.2)."""

from __future__ import annotations

from connectlink import security
from connectlink.models import AuthorizationCode, OAuthClient
from connectlink.storage.base import Store


async def issue(
    store: Store,
    now: float,
    ttl: int,
    client: OAuthClient,
    account_id: int,
    redirect_uri: str,
    granted: frozenset[str],
    challenge: tuple[str, str] | None,
) -> str:
    """Store a single-use code for this consent and return it; ``challenge`` is PKCE's
    (code_challenge, method)."""
    code = security.new_secret()
    await store.save_code(
        AuthorizationCode(
            digest=security.digest(code),
            client_pk=client.pk,
            retailer_id=client.retailer_id,
            account_id=account_id,
            redirect_uri=redirect_uri,
            scopes=granted,
            created_at=now,
            expires_at=now + ttl,
            code_challenge=challenge[0] if challenge else None,
            code_challenge_method=challenge[1] if challenge else None,
        )
    )
    return code
