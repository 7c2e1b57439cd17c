"""Sandbox helpers (connect-api.md section 8): test Instacart accounts and consent without a
browser."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from connectlink import security
from connectlink.clock import Clock
from connectlink.errors import (
    Blank,
    EmailTaken,
    Invalid,
    InvalidSandboxUserId,
    combine,
)
from connectlink.linking import fields
from connectlink.models import AUTHORIZATION_CODE, InstacartAccount, OAuthClient
from connectlink.oauth import codes, pkce, scopes
from connectlink.storage.base import Store

YEAR = 365 * 86_400
_MAX_ID = 2**63 - 1


async def create_account(store: Store, clock: Clock, body: Mapping[str, Any]) -> InstacartAccount:
    """``POST /v2/fulfillment_sandbox/instacart_users``; Instacart+ lasts a year from now."""
    reader = fields.FieldReader(body)
    email = reader.required("email", fields.email)
    phone = reader.required("phone")
    password = reader.required("password")
    express = reader.flag("express_member")
    plus = reader.flag("instacartplus_member")
    error = combine(reader.errors)
    if error is not None:
        raise error
    # argon2 is slow on purpose; keep it off the event loop.
    password_hash = await asyncio.to_thread(security.hash_password, password)
    now = clock.now()
    account = await store.create_instacart_account(
        email.strip().lower(), phone, password_hash, now + YEAR if plus or express else None, now
    )
    if account is None:
        raise EmailTaken()
    return account


def parse_account_id(raw: str) -> int:
    """The sandbox ``user_id`` path parameter: an integer, else ``"Invalid user_id"``."""
    if not (raw.isascii() and raw.isdigit()) or int(raw) > _MAX_ID:
        raise InvalidSandboxUserId()
    return int(raw)


async def authorize(
    store: Store,
    clock: Clock,
    code_ttl: int,
    client: OAuthClient,
    raw_account_id: str,
    body: Mapping[str, Any],
) -> str:
    """``POST .../instacart_users/{id}/authorize``: the account consents to ``client``; returns
    the authorization code. Extra fields the tutorial sends (``state``, ``hint``...) are ignored.
    """
    account = await store.get_instacart_account(parse_account_id(raw_account_id))
    if account is None:
        raise InvalidSandboxUserId()
    reader = fields.FieldReader(body)
    redirect_uri = reader.required("redirect_uri", lambda uri: uri in client.redirect_uris)
    requested = reader.required("scope")
    challenge = reader.optional("code_challenge", pkce.well_formed)
    method = reader.optional("code_challenge_method", lambda m: m in pkce.METHODS)
    granted = scopes.consented(
        scopes.parse(requested) or frozenset(), client.scopes_for(AUTHORIZATION_CODE) or frozenset()
    )
    if requested and granted is None:
        reader.errors.append(Invalid("scope"))
    if challenge is None and not reader.errors and (client.require_pkce or method is not None):
        reader.errors.append(Blank("code_challenge"))
    error = combine(reader.errors)
    if error is not None or granted is None:
        raise error or Invalid("scope")
    return await codes.issue(
        store,
        clock.now(),
        code_ttl,
        client,
        account.id,
        redirect_uri,
        granted,
        (challenge, method or "plain") if challenge is not None else None,
    )
