"""Retailers and their OAuth clients: set up by an operator (CLI, ``make run``), not the API.

The operator's refusals are two exceptions of their own, not wire errors: nothing here is
answered over HTTP, and the CLI gives each its exit code (``NotFound`` 3, ``Refused`` 4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from connectlink import security, text
from connectlink.clock import Clock
from connectlink.models import (
    ACCOUNT_LINKING,
    AUTHORIZATION_CODE,
    CLIENT_CREDENTIALS,
    FULFILLMENT,
    ConnectUser,
    InstacartAccount,
    OAuthClient,
    Retailer,
)
from connectlink.oauth import redirects
from connectlink.storage.base import Store

# decisions.md "Clients made by the CLI or make run".
DEFAULT_GRANTS = {
    CLIENT_CREDENTIALS: frozenset({FULFILLMENT}),
    AUTHORIZATION_CODE: frozenset({ACCOUNT_LINKING}),
}


class NotFound(LookupError):
    """An operator named a retailer, client or user that does not exist."""


class Refused(ValueError):
    """An operator asked for something the rules forbid: a blank name, no redirect URI, a
    redirect URI that could never be used."""


def check_redirect_uri(uri: str) -> str:
    """``uri``, if a client may register it (``oauth.redirects``); else ``Refused``, with the
    rule it breaks."""
    reason = redirects.problem(uri)
    if reason is not None:
        raise Refused(reason)
    return uri


@dataclass(frozen=True, slots=True)
class NewClient:
    """A client and the only time its secret exists in plaintext."""

    client: OAuthClient
    client_secret: str = field(repr=False)

    def credentials(self) -> dict[str, object]:
        return {
            "retailer_id": self.client.retailer_id,
            "client_id": self.client.client_id,
            "client_secret": self.client_secret,
        }


def draft_client(
    redirect_uris: list[str], require_pkce: bool, grants: Mapping[str, frozenset[str]]
) -> NewClient:
    """A client to store (``pk`` and ``retailer_id`` still 0), with a new id and secret."""
    if not redirect_uris:
        raise Refused("a client needs at least one redirect URI")
    secret = security.new_secret()
    client = OAuthClient(
        pk=0,
        retailer_id=0,
        client_id=security.new_secret(),
        secret_digest=security.digest(secret),
        redirect_uris=tuple(dict.fromkeys(check_redirect_uri(u) for u in redirect_uris)),
        grants=dict(grants),
        require_pkce=require_pkce,
    )
    return NewClient(client, secret)


@dataclass(frozen=True, slots=True)
class NewRetailer:
    """A created retailer and the only time its client secret exists in plaintext."""

    retailer: Retailer
    client: OAuthClient
    client_secret: str = field(repr=False)

    def credentials(self) -> dict[str, object]:
        return NewClient(self.client, self.client_secret).credentials()


async def create(
    store: Store,
    clock: Clock,
    name: str,
    redirect_uris: list[str],
    require_pkce: bool = False,
    grants: Mapping[str, frozenset[str]] = DEFAULT_GRANTS,
) -> NewRetailer:
    """A retailer and its first OAuth client; ``grants`` maps grant type to allowed scopes."""
    if not name.strip() or not text.clean(name):
        raise Refused("a retailer needs a name, without control characters")
    draft = draft_client(redirect_uris, require_pkce, grants)
    retailer, client = await store.create_retailer(name.strip(), draft.client, clock.now())
    return NewRetailer(retailer, client, draft.client_secret)


async def find(store: Store, retailer_id: int) -> Retailer:
    retailer = await store.get_retailer(retailer_id)
    if retailer is None:
        raise NotFound(f"there is no retailer {retailer_id}")
    return retailer


@dataclass(frozen=True, slots=True)
class Overview:
    """A retailer at a glance: what an operator who lost its credentials needs (client ids,
    redirect URIs), and how much it holds."""

    retailer: Retailer
    clients: tuple[OAuthClient, ...]
    users: int
    links: int


async def overview(store: Store, clock: Clock, retailer: Retailer | int) -> Overview:
    if isinstance(retailer, int):
        retailer = await find(store, retailer)
    clients = await store.list_clients(retailer.id)
    users, links = await store.retailer_counts(retailer.id, clock.now())
    return Overview(retailer, tuple(clients), users, links)


async def overviews(store: Store, clock: Clock) -> list[Overview]:
    return [await overview(store, clock, r) for r in await store.list_retailers()]


@dataclass(frozen=True, slots=True)
class UserView:
    """A Connect user as an operator sees it: its fields, and its link's state."""

    user: ConnectUser
    account: InstacartAccount | None

    @property
    def state(self) -> str:
        if not self.user.active:
            return "not active"  # a privacy request: the link went with it
        return "linked" if self.account is not None else "not linked"

    def member(self, now: float) -> bool:
        """Instacart+ now, by the same rule as ``GET .../link``."""
        return self.account is not None and self.account.member_at(now)


async def users(store: Store, clock: Clock, retailer_id: int, limit: int) -> list[UserView]:
    """The retailer's first ``limit`` Connect users, oldest first."""
    await find(store, retailer_id)
    if limit < 1:
        raise Refused("--limit must be at least 1")
    found = await store.list_connect_users(retailer_id, clock.now(), limit)
    return [UserView(user, account) for user, account in found]


async def user(store: Store, clock: Clock, retailer_id: int, user_id: str) -> UserView:
    await find(store, retailer_id)
    # An id no user can have (a control character, too long) never reaches the store.
    found = (await store.find_link(retailer_id, user_id, clock.now())
             if text.identifier(user_id) else None)  # users.stored_id's rule, another error
    if found is None:
        raise NotFound(f"retailer {retailer_id} has no user {user_id!r}")
    return UserView(*found)
