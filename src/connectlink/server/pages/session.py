"""The Login pages' session: a signed cookie (decisions.md "Session" and "CSRF").

The cookie holds who is signed in (an Instacart account id, or nobody yet), the session's CSRF
token and when it was issued, signed with HMAC-SHA256 under a key derived from the server's
secret key. It expires 12 hours after it was issued, by the server's clock (so tests move time
rather than wait), and the browser drops it after the same time.

A signed-in session also carries a random id that the store records (as its SHA-256) until
the session ends: signing out, a lock of the account or a change of its password end it there,
so a copy of the cookie taken before stops working too (OWASP ASVS V3.3.1). Every page checks
it (``views._signed_in``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field

import msgspec

from connectlink import security
from connectlink.errors import CsrfRejected

COOKIE = "connectlink_session"
COOKIE_PATH = "/oauth"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    issued_at: float
    account_id: int | None = None
    sid: str | None = field(default=None, repr=False)  # a signed-in session's recorded id

    @classmethod
    def new(cls, now: float, account_id: int | None = None) -> Session:
        """A fresh session, with a fresh CSRF token (and, signed in, a fresh id): made on first
        visit, at sign-in (against session fixation) and at sign-out."""
        sid = security.new_secret() if account_id is not None else None
        return cls(security.new_secret(), now, account_id, sid)

    @property
    def sid_digest(self) -> bytes | None:
        """What the store knows the session by."""
        return security.digest(self.sid) if self.sid is not None else None

    def check_csrf(self, sent: str | None) -> None:
        """A form's token must be this session's (constant-time), else 403."""
        if not sent or not hmac.compare_digest(sent.encode(), self.csrf.encode()):
            raise CsrfRejected()


class _Payload(msgspec.Struct, array_like=True):
    csrf: str
    issued_at: float
    account_id: int | None
    sid: str | None = None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCookies:
    """Signs sessions into cookie values and reads them back."""

    def __init__(self, secret_key: str, ttl: int) -> None:
        # A key of its own, so the secret key can sign other things without confusion.
        self._key = hmac.new(secret_key.encode(), b"connectlink login session",
                             hashlib.sha256).digest()
        self.ttl = ttl

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def dumps(self, session: Session) -> str:
        payload = _b64(msgspec.json.encode(
            _Payload(session.csrf, session.issued_at, session.account_id, session.sid)))
        return f"{payload}.{self._sign(payload)}"

    def loads(self, value: str | None, now: float) -> Session | None:
        """The session in a cookie value; None if absent, forged, malformed or expired."""
        if not value or not value.isascii():
            return None
        payload, _, signature = value.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            decoded = msgspec.json.decode(_unb64(payload), type=_Payload)
        except (binascii.Error, ValueError, msgspec.DecodeError):
            return None
        if not decoded.issued_at <= now < decoded.issued_at + self.ttl:
            return None
        return Session(decoded.csrf, decoded.issued_at, decoded.account_id, decoded.sid)
