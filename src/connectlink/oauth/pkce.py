"""Proof Key for Code Exchange (RFC 7636)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

METHODS = ("S256", "plain")
# Section 4.1 (verifier) and 4.2 (challenge): 43 to 128 unreserved characters.
_UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]{43,128}")


def well_formed(value: str) -> bool:
    return _UNRESERVED.fullmatch(value) is not None


def s256(verifier: str) -> str:
    """BASE64URL(SHA256(ASCII(code_verifier))) without padding (section 4.2)."""
    raw = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def verify(verifier: str | None, challenge: str, method: str) -> bool:
    """Does ``verifier`` answer ``challenge`` (section 4.6)?"""
    if verifier is None or not well_formed(verifier):
        return False
    expected = s256(verifier) if method == "S256" else verifier
    return hmac.compare_digest(expected.encode("ascii"), challenge.encode("ascii"))
