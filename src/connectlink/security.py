"""Secrets: how they are made, stored and compared.

High-entropy values (tokens, codes, client secrets) are stored as their SHA-256 digest, which is
enough for 256-bit random strings; human passwords get argon2id. Comparisons are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): about 45 ms a hash on
# this project's 2-core machines, against 185 ms for argon2-cffi's default. Sandbox accounts are
# made by the hundred in integration suites; the parameters are in each hash, so they can rise.
_passwords = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
# The least argon2id allows (8 KiB, 1 pass): for the emulator's sandbox accounts, test fixtures
# that a retailer's suite makes by the hundred with passwords it writes in its tests, as
# Django's test settings swap in a fast hasher. A few microseconds, where the cost above is
# 45 ms a hash, most of one whole linking flow through the pytest fixture.
_test_passwords = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def new_secret() -> str:
    """A 43-character URL-safe string from 32 random bytes, the shape of Instacart's tokens;
    never one that starts with ``-``, which a command line would read as an option
    (``--client-id -x...``). Rejecting those costs 0.02 of the 256 bits."""
    while (value := secrets.token_urlsafe(32)).startswith("-"):
        pass
    return value


def digest(value: str) -> bytes:
    """The stored form of a high-entropy secret."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def fingerprint(value: str) -> str:
    """How the emulator's journal and lifecycle name a secret: the first 16 hex digits of its
    SHA-256 (of its stored digest), which identify it without revealing it."""
    return digest(value)[:8].hex()


def matches(value: str, stored_digest: bytes) -> bool:
    """Constant-time check of a presented secret against its stored digest."""
    return hmac.compare_digest(digest(value), stored_digest)


def hash_password(password: str, test_account: bool = False) -> str:
    """An argon2id hash of ``password``: at OWASP's cost, or, for a sandbox test account
    (``test_account``), at argon2's least. Verifying reads the cost from the hash."""
    return (_test_passwords if test_account else _passwords).hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Does ``password`` match the argon2 hash? Slow on purpose: call it off the event loop."""
    try:
        return _passwords.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False

