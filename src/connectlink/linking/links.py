"""Linking and membership (connect-api.md sections 4 and 5; decisions.md check order)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from connectlink import security
from connectlink.clock import Clock
from connectlink.errors import (
    AlreadyLinked,
    Blank,
    LinkingTokenInvalid,
    UserNotActive,
    UserNotLinked,
)
from connectlink.linking.users import find, find_active
from connectlink.models import LinkOutcome
from connectlink.storage.base import Store


class Membership(msgspec.Struct, omit_defaults=True):
    """The body of ``GET .../link``; ``expired_at`` only when a membership exists."""

    express_member: bool
    instacartplus_member: bool
    expired_at: str | None = None


def iso_utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


async def link(
    store: Store,
    clock: Clock,
    retailer_id: int,
    user_id: str,
    body: Mapping[str, Any],
    banner: str | None = None,
) -> LinkOutcome:
    """``POST .../link``. Checks run in the decided order; the store consumes the token and
    writes the link in one transaction, so single use holds under races."""
    user = await find_active(store, clock, retailer_id, user_id)
    token = body.get("linking_token")
    if token is None or (isinstance(token, str) and not token.strip()):
        raise Blank("linking_token")
    if not isinstance(token, str):
        raise LinkingTokenInvalid()
    outcome = await store.link(user, security.digest(token), clock.now(), banner)
    if outcome is LinkOutcome.TOKEN_INVALID:
        raise LinkingTokenInvalid()
    if outcome is LinkOutcome.ACCOUNT_TAKEN:
        raise AlreadyLinked()
    if outcome is LinkOutcome.USER_INACTIVE:  # a privacy request won the race
        raise UserNotActive()
    return outcome


async def membership(store: Store, clock: Clock, retailer_id: int, user_id: str) -> Membership:
    """``GET .../link``: Instacart+ status computed now, by the server's clock."""
    user = await find_active(store, clock, retailer_id, user_id)
    account = await store.linked_account(user)
    if account is None:
        raise UserNotLinked()
    ends = account.membership_expires_at
    if ends is None:
        return Membership(express_member=False, instacartplus_member=False)
    member = ends > clock.now()
    return Membership(express_member=member, instacartplus_member=member, expired_at=iso_utc(ends))


async def unlink(store: Store, clock: Clock, retailer_id: int, user_id: str) -> bool:
    """The operator's unlink (decisions.md "Unlinking"): False if there was no link."""
    user = await find(store, clock, retailer_id, user_id)
    return await store.unlink(user, clock.now(), "operator")
