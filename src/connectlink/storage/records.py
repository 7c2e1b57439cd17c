"""Rows to domain records. Both engines select the same columns in the same order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from connectlink.models import (
    AccessToken,
    AuthorizationCode,
    ConnectUser,
    InstacartAccount,
    LoginThrottle,
    OAuthClient,
)

Row = Sequence[Any]

TOKEN_COLUMNS = (
    "digest, client_pk, retailer_id, scopes, created_at, expires_at, account_id, code_digest, "
    "revoked_at, consumed_at"
)
CODE_COLUMNS = (
    "digest, client_pk, retailer_id, account_id, redirect_uri, scopes, created_at, expires_at, "
    "code_challenge, code_challenge_method, consumed_at"
)
USER_COLUMNS = (
    "pk, retailer_id, user_id, first_name, last_name, phone_number, locale, active, purge_after"
)
CLIENT_COLUMNS = "pk, retailer_id, client_id, secret_digest, redirect_uris, grants, require_pkce"
ACCOUNT_COLUMNS = "id, email, phone, membership_expires_at, created_at"


def of(alias: str, columns: str) -> str:
    """``"a", "id, email"`` -> ``"a.id, a.email"``."""
    return ", ".join(f"{alias}.{column}" for column in columns.split(", "))


def scopes_of(text: str) -> frozenset[str]:
    return frozenset(text.split())


def scopes_text(scopes: frozenset[str]) -> str:
    return " ".join(sorted(scopes))


def token(row: Row) -> AccessToken:
    return AccessToken(
        digest=bytes(row[0]), client_pk=row[1], retailer_id=row[2], scopes=scopes_of(row[3]),
        created_at=row[4], expires_at=row[5], account_id=row[6],
        code_digest=bytes(row[7]) if row[7] is not None else None,
        revoked_at=row[8], consumed_at=row[9],
    )


def token_values(t: AccessToken) -> tuple[Any, ...]:
    return (t.digest, t.client_pk, t.retailer_id, scopes_text(t.scopes), t.created_at,
            t.expires_at, t.account_id, t.code_digest, t.revoked_at, t.consumed_at)


def code(row: Row) -> AuthorizationCode:
    return AuthorizationCode(
        digest=bytes(row[0]), client_pk=row[1], retailer_id=row[2], account_id=row[3],
        redirect_uri=row[4], scopes=scopes_of(row[5]), created_at=row[6], expires_at=row[7],
        code_challenge=row[8], code_challenge_method=row[9], consumed_at=row[10],
    )


def code_values(c: AuthorizationCode) -> tuple[Any, ...]:
    return (c.digest, c.client_pk, c.retailer_id, c.account_id, c.redirect_uri,
            scopes_text(c.scopes), c.created_at, c.expires_at, c.code_challenge,
            c.code_challenge_method, c.consumed_at)


def user(row: Row) -> ConnectUser:
    return ConnectUser(
        pk=row[0], retailer_id=row[1], user_id=row[2], first_name=row[3], last_name=row[4],
        phone_number=row[5], locale=row[6], active=bool(row[7]), purge_after=row[8],
    )


def client(row: Row) -> OAuthClient:
    return OAuthClient(
        pk=row[0], retailer_id=row[1], client_id=row[2], secret_digest=bytes(row[3]),
        redirect_uris=tuple(json.loads(row[4])),
        grants={grant: frozenset(s) for grant, s in json.loads(row[5]).items()},
        require_pkce=bool(row[6]),
    )


def grants_text(grants: dict[str, frozenset[str]]) -> str:
    return json.dumps({grant: sorted(scopes) for grant, scopes in grants.items()})


def account(row: Row) -> InstacartAccount:
    return InstacartAccount(
        id=row[0], email=row[1], phone=row[2], membership_expires_at=row[3], created_at=row[4]
    )


THROTTLE_COLUMNS = "subject, failures, locked_until"


def throttle(row: Row) -> LoginThrottle:
    return LoginThrottle(
        subject=row[0], failures=tuple(float(t) for t in row[1].split()), locked_until=row[2]
    )


def throttle_values(t: LoginThrottle) -> tuple[Any, ...]:
    return (t.subject, " ".join(repr(at) for at in t.failures), t.locked_until)
