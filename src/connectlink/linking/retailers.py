"""Retailers and their OAuth clients: set up by an operator (CLI, ``make run``), not the API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from connectlink import security
from connectlink.clock import Clock
from connectlink.models import (
    ACCOUNT_LINKING,
    AUTHORIZATION_CODE,
    CLIENT_CREDENTIALS,
    FULFILLMENT,
    OAuthClient,
    Retailer,
)
from connectlink.storage.base import Store

# decisions.md "Clients made by the CLI or make run".
DEFAULT_GRANTS = {
    CLIENT_CREDENTIALS: frozenset({FULFILLMENT}),
    AUTHORIZATION_CODE: frozenset({ACCOUNT_LINKING}),
}


@dataclass(frozen=True, slots=True)
class NewRetailer:
    """A created retailer and the only time its client secret exists in plaintext."""

    retailer: Retailer
    client: OAuthClient
    client_secret: str

    def credentials(self) -> dict[str, object]:
        return {
            "retailer_id": self.retailer.id,
            "client_id": self.client.client_id,
            "client_secret": self.client_secret,
        }


async def create(
    store: Store,
    clock: Clock,
    name: str,
    redirect_uris: list[str],
    require_pkce: bool = False,
    grants: Mapping[str, frozenset[str]] = DEFAULT_GRANTS,
) -> NewRetailer:
    """A retailer and its first OAuth client; ``grants`` maps grant type to allowed scopes."""
    if not name.strip():
        raise ValueError("a retailer needs a name")
    if not redirect_uris:
        raise ValueError("a retailer needs at least one redirect URI")
    secret = security.new_secret()
    draft = OAuthClient(
        pk=0,
        retailer_id=0,
        client_id=security.new_secret(),
        secret_digest=security.digest(secret),
        redirect_uris=tuple(dict.fromkeys(redirect_uris)),
        grants=dict(grants),
        require_pkce=require_pkce,
    )
    retailer, client = await store.create_retailer(name.strip(), draft, clock.now())
    return NewRetailer(retailer, client, secret)
