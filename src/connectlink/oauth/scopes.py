"""Scope strings (RFC 6749 section 3.3; Connect also accepts commas, connect-api.md section 1)."""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s,]+")

# Asked for by OpenID-style authorization URLs ("openid account_linking"); grants nothing here.
IGNORED_AT_CONSENT = frozenset({"openid"})


def parse(value: str | None) -> frozenset[str] | None:
    """The scopes in a ``scope`` parameter, or None when it is absent or empty."""
    if value is None:
        return None
    scopes = frozenset(s for s in _SEPARATORS.split(value) if s)
    return scopes or None


def render(scopes: frozenset[str]) -> str:
    return " ".join(sorted(scopes))


def consented(requested: frozenset[str], allowed: frozenset[str]) -> frozenset[str] | None:
    """What a consent grants: the requested scopes the client may have, ignoring ``openid``.

    None when something else is asked for or nothing would be granted.
    """
    wanted = requested - IGNORED_AT_CONSENT
    if not wanted or not wanted <= allowed:
        return None
    return wanted
