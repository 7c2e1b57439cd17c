"""Sandbox helpers (connect-api.md section 8): test Instacart accounts and consent without a
browser."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from connectlink import security, text
from connectlink.clock import Clock
from connectlink.errors import (
    Blank,
    EmailTaken,
    Invalid,
    InvalidSandboxUserId,
    combine,
)
from connectlink.linking import fields
from connectlink.models import InstacartAccount, OAuthClient
from connectlink.oauth import authorize as authorization
from connectlink.storage.base import Store

YEAR = 365 * 86_400


async def create_account(store: Store, clock: Clock, body: Mapping[str, Any],
                         test_account: bool = False) -> InstacartAccount:
    """``POST /v2/fulfillment_sandbox/instacart_users``; Instacart+ lasts a year from now.
    ``test_account``: the password is hashed at argon2's least cost (``security``), as the
    emulator's sandbox does."""
    reader = fields.FieldReader(body)
    email = reader.required("email", fields.email)
    phone = reader.required("phone")
    password = reader.required("password")
    express = reader.flag("express_member")
    plus = reader.flag("instacartplus_member")
    error = combine(reader.errors)
    if error is not None:
        raise error
    if test_account:  # microseconds: no thread needed
        password_hash = security.hash_password(password, test_account=True)
    else:  # argon2 is slow on purpose; keep it off the event loop
        password_hash = await asyncio.to_thread(security.hash_password, password)
    now = clock.now()
    account = await store.create_instacart_account(
        email.strip().lower(), phone, password_hash, now + YEAR if plus or express else None, now
    )
    if account is None:
        raise EmailTaken()
    return account


def parse_account_id(raw: str) -> int:
    """The sandbox ``user_id`` path parameter: a decimal integer that fits the 64-bit id
    column (``text.decimal_id``), else ``"Invalid user_id"``."""
    account_id = text.decimal_id(raw)
    if account_id is None:
        raise InvalidSandboxUserId()
    return account_id


# The body's fields, in the order their errors are listed (decisions.md "Envelopes").
_AUTHORIZE_FIELDS = ("redirect_uri", "scope", "code_challenge", "code_challenge_method")


async def authorize(
    store: Store,
    clock: Clock,
    code_ttl: int,
    client: OAuthClient,
    raw_account_id: str,
    body: Mapping[str, Any],
) -> str:
    """``POST .../instacart_users/{id}/authorize``: the account consents to ``client``; returns
    the authorization code. The consent is decided by ``oauth.authorize``, as for the Login
    pages; its problems come back as Connect field errors. Extra fields the tutorial sends
    (``response_type``, ``client_id``, ``state``, ``hint``...) are ignored.
    """
    account = await store.get_instacart_account(parse_account_id(raw_account_id))
    if account is None:
        raise InvalidSandboxUserId()
    reader = fields.FieldReader(body)
    values = {name: reader.optional(name) for name in _AUTHORIZE_FIELDS}
    if values["scope"] is None and not reader.errors_for("scope"):
        reader.errors.append(Blank("scope"))  # the sandbox has no default scope
    request = authorization.AuthorizationRequest(
        client_id=client.client_id, redirect_uri=values["redirect_uri"], scope=values["scope"],
        code_challenge=values["code_challenge"],
        code_challenge_method=values["code_challenge_method"],
    )
    for problem in authorization.problems(client, request):
        key = problem.parameter
        if key is not None and not reader.errors_for(key):  # one error a field
            reader.errors.append((Blank if problem.blank else Invalid)(key))
    error = combine(sorted(reader.errors, key=lambda e: _AUTHORIZE_FIELDS.index(e.key or "")))
    if error is not None:
        raise error
    allowed = authorization.consent(client, request)
    return await authorization.grant(store, clock.now(), code_ttl, allowed, account.id)
