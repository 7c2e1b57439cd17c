"""Frozen domain records. Storage returns these, never driver rows."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# Scope and grant names from connect-api.md section 1.
FULFILLMENT = "connect:fulfillment"
ACCOUNT_LINKING = "account_linking"
CLIENT_CREDENTIALS = "client_credentials"
AUTHORIZATION_CODE = "authorization_code"


@dataclass(frozen=True, slots=True)
class Retailer:
    id: int
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """A retailer's OAuth application: what it may ask for and where it may send shoppers."""

    pk: int
    retailer_id: int
    client_id: str
    secret_digest: bytes
    redirect_uris: tuple[str, ...]
    # grant type -> the scopes that grant may carry for this client
    grants: dict[str, frozenset[str]] = field(hash=False)
    require_pkce: bool = False

    def scopes_for(self, grant_type: str) -> frozenset[str] | None:
        """The scopes this client may get with ``grant_type``; None if it may not use it."""
        return self.grants.get(grant_type)


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An issued token. With an ``account_id`` it is a linking token (scope account_linking)."""

    digest: bytes
    client_pk: int
    retailer_id: int
    scopes: frozenset[str]
    created_at: float
    expires_at: float
    account_id: int | None = None
    code_digest: bytes | None = None
    revoked_at: float | None = None
    consumed_at: float | None = None

    @property
    def is_linking_token(self) -> bool:
        return self.account_id is not None


@dataclass(frozen=True, slots=True)
class AuthorizationCode:
    """A shopper's consent, redeemable once for a linking token (RFC 6749 section 4.1)."""

    digest: bytes
    client_pk: int
    retailer_id: int
    account_id: int
    redirect_uri: str
    scopes: frozenset[str]
    created_at: float
    expires_at: float
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    consumed_at: float | None = None


@dataclass(frozen=True, slots=True)
class ConnectUser:
    """The retailer's own identity for a shopper (connect-api.md section 7)."""

    pk: int
    retailer_id: int
    user_id: str
    first_name: str
    last_name: str | None = None
    phone_number: str | None = None
    locale: str | None = None
    active: bool = True
    purge_after: float | None = None


@dataclass(frozen=True, slots=True)
class UserFields:
    """What a create-or-update request sets; None leaves a stored value as it is."""

    user_id: str
    first_name: str
    last_name: str | None = None
    phone_number: str | None = None
    locale: str | None = None


@dataclass(frozen=True, slots=True)
class InstacartAccount:
    """A (sandbox) Instacart account; global, owned by no retailer."""

    id: int
    email: str
    phone: str
    membership_expires_at: float | None
    created_at: float

    def member_at(self, now: float) -> bool:
        """Instacart+ at ``now``: a membership whose end is still ahead (decisions.md
        "Membership"); ``GET .../link``, the CLI and the operator views all ask this."""
        ends = self.membership_expires_at
        return ends is not None and ends > now


@dataclass(frozen=True, slots=True)
class LoginThrottle:
    """Failed web sign-ins of one subject (an account's email, or a client address)."""

    subject: str
    failures: tuple[float, ...] = ()  # when, oldest first, within the counting window
    locked_until: float | None = None

    def locked(self, now: float) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def failed(self, now: float, window: float, limit: int, lock_for: float) -> LoginThrottle:
        """One more failure at ``now``; the ``limit``-th within ``window`` locks the subject
        for ``lock_for`` and starts the count afresh."""
        recent = (*(t for t in self.failures if t > now - window), now)
        if len(recent) >= limit:
            return LoginThrottle(self.subject, (), now + lock_for)
        return LoginThrottle(self.subject, recent, self.locked_until)


class LinkOutcome(enum.Enum):
    """What a link attempt did; the storage layer decides it atomically."""

    LINKED = "link"
    RELINKED = "relink"
    REPLACED = "replace"
    TOKEN_INVALID = "token_invalid"
    ACCOUNT_TAKEN = "account_taken"
    USER_NOT_FOUND = "user_not_found"
    USER_INACTIVE = "user_inactive"


class RevokeOutcome(enum.Enum):
    REVOKED = "revoked"
    UNKNOWN = "unknown"
    FOREIGN = "foreign"


@dataclass(frozen=True, slots=True)
class SweepCounts:
    """What one round of retention removed (``linking/retention.py``)."""

    tokens: int = 0  # access and linking tokens, their expiry a day gone
    codes: int = 0  # authorization codes, likewise
    users: int = 0  # Connect users past their privacy retention

    def __add__(self, other: SweepCounts) -> SweepCounts:
        return SweepCounts(self.tokens + other.tokens, self.codes + other.codes,
                           self.users + other.users)

    def most(self) -> int:
        """The largest of the three: a round that removed a whole batch of any may have left
        more of it."""
        return max(self.tokens, self.codes, self.users)


@dataclass(frozen=True, slots=True)
class Lease:
    """Who may run a job that only one process at a time may run, and until when."""

    name: str
    holder: str
    expires_at: float
