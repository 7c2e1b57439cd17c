"""Linking and membership (connect-api.md sections 4 and 5; decisions.md check order)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from connectlink import security, wire
from connectlink.clock import Clock
from connectlink.errors import (
    AlreadyLinked,
    Blank,
    LinkingTokenInvalid,
    UserNotActive,
    UserNotFound,
    UserNotLinked,
)
from connectlink.linking.users import find, find_active, stored_id
from connectlink.models import LinkOutcome
from connectlink.storage.base import Store


def iso_utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


_REFUSALS = {
    LinkOutcome.USER_NOT_FOUND: UserNotFound,
    LinkOutcome.USER_INACTIVE: UserNotActive,
    LinkOutcome.TOKEN_INVALID: LinkingTokenInvalid,
    LinkOutcome.ACCOUNT_TAKEN: AlreadyLinked,
}


async def link(
    store: Store,
    clock: Clock,
    retailer_id: int,
    user_id: str,
    body: Mapping[str, Any],
    banner: str | None = None,
) -> LinkOutcome:
    """``POST .../link``, checked in the decided order: user exists, user active, token
    present, token valid, isolation rule. The store decides the last four in one transaction,
    so single use and the isolation rule hold under races."""
    stored_id(user_id)
    token = body.get("linking_token")
    if not isinstance(token, str) or not token.strip():
        await find_active(store, clock, retailer_id, user_id)  # the user's errors come first
        if token is None or isinstance(token, str):
            raise Blank("linking_token")
        raise LinkingTokenInvalid()  # a number, a list...: not a token at all
    outcome = await store.link(retailer_id, user_id, security.digest(token), clock.now(), banner)
    refusal = _REFUSALS.get(outcome)
    if refusal is not None:
        raise refusal()
    return outcome


async def membership(
    store: Store, clock: Clock, retailer_id: int, user_id: str
) -> wire.Membership:
    """``GET .../link``: Instacart+ status computed now, by the server's clock."""
    found = await store.find_link(retailer_id, stored_id(user_id), clock.now())
    if found is None:
        raise UserNotFound()
    user, account = found
    if not user.active:
        raise UserNotActive()
    if account is None:
        raise UserNotLinked()
    ends = account.membership_expires_at
    if ends is None:
        return wire.Membership(express_member=False, instacartplus_member=False)
    member = account.member_at(clock.now())
    return wire.Membership(
        express_member=member, instacartplus_member=member, expired_at=iso_utc(ends)
    )


async def unlink(store: Store, clock: Clock, retailer_id: int, user_id: str) -> bool:
    """The operator's unlink (decisions.md "Unlinking"): False if there was no link."""
    user = await find(store, clock, retailer_id, user_id)
    return await store.unlink(user, clock.now(), "operator")
