"""The ``Authorization`` header (RFC 7235 section 2.1): ``<scheme> <credentials>``."""

from __future__ import annotations


def credentials(authorization: str | None, scheme: str) -> str | None:
    """What follows ``scheme`` (matched case-insensitively), or None for another scheme."""
    if not authorization:
        return None
    sent, _, value = authorization.strip().partition(" ")
    return value.strip() if sent.lower() == scheme else None
