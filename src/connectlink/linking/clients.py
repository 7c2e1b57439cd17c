"""A retailer's OAuth clients after the first (``retailers.create`` makes that one): another
client, a new secret for a lost one, another redirect URI. Operator actions, as in
``retailers``; secrets exist in plaintext only in what these return, and are stored as their
SHA-256 digest."""

from __future__ import annotations

from collections.abc import Mapping

from connectlink import security, text
from connectlink.clock import Clock
from connectlink.linking.retailers import (
    DEFAULT_GRANTS,
    NewClient,
    NotFound,
    check_redirect_uri,
    draft_client,
    find,
)
from connectlink.models import OAuthClient
from connectlink.storage.base import Store


async def create(
    store: Store,
    clock: Clock,
    retailer_id: int,
    redirect_uris: list[str],
    require_pkce: bool = False,
    grants: Mapping[str, frozenset[str]] = DEFAULT_GRANTS,
) -> NewClient:
    """Another client of ``retailer_id`` (a second app, a staging site): same retailer, so the
    same Connect users and links, with credentials and redirect URIs of its own."""
    draft = draft_client(redirect_uris, require_pkce, grants)
    client = await store.create_client(retailer_id, draft.client, clock.now())
    if client is None:
        raise NotFound(f"there is no retailer {retailer_id}")
    return NewClient(client, draft.client_secret)


async def listed(store: Store, retailer_id: int | None = None) -> list[OAuthClient]:
    """The clients of ``retailer_id``, or of every retailer, oldest first."""
    if retailer_id is not None:
        await find(store, retailer_id)
    return await store.list_clients(retailer_id)


async def get(store: Store, client_id: str) -> OAuthClient:
    client = await store.get_client(client_id) if text.identifier(client_id) else None
    if client is None:
        raise NotFound(f"there is no client {client_id!r}")
    return client


async def rotate_secret(store: Store, client_id: str) -> NewClient:
    """A new secret for the client; the old one is refused from this moment (the token
    endpoint reads the digest on every request). Tokens issued before keep their lifetime."""
    secret = security.new_secret()
    client = (await store.set_client_secret(client_id, security.digest(secret))
              if text.identifier(client_id) else None)
    if client is None:
        raise NotFound(f"there is no client {client_id!r}")
    return NewClient(client, secret)


async def add_redirect_uri(store: Store, client_id: str, uri: str) -> tuple[OAuthClient, bool]:
    """Register ``uri`` on the client; says whether it was new (adding one twice is a no-op)."""
    before = await get(store, client_id)
    client = await store.add_redirect_uri(client_id, check_redirect_uri(uri))
    if client is None:
        raise NotFound(f"there is no client {client_id!r}")
    return client, uri not in before.redirect_uris
