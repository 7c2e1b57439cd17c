"""What the store keeps of the emulator's controls: frozen records, as ``models.py`` is for the
domain."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# A retailer's virtual clock is a record of the store's too; the clocks define it.
from connectlink.clock import ClockSetting as ClockSetting

# The names the wire uses (emulator/wire.py), as types.
FaultName = Literal["429", "503", "500", "latency", "drop", "invalid_grant",
                    "linking_token_invalid", "deny", "expired_token"]
SecretKind = Literal["access_token", "linking_token", "authorization_code"]
EventName = Literal["issued", "used", "revoked", "expired"]
ACCESS_TOKEN: SecretKind = "access_token"
LINKING_TOKEN: SecretKind = "linking_token"
AUTHORIZATION_CODE: SecretKind = "authorization_code"


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One rule (docs/emulator.md "Faults"). ``matched`` counts the requests it has seen,
    ``fired`` those it failed; the store keeps both, atomically, for every worker."""

    id: int
    retailer_id: int | None
    client_id: str | None
    endpoint: str  # "POST /v2/fulfillment/users/{user_id}/link": method and path template
    fault: FaultName
    times: int | None = None  # fire at most this many times; None: no limit
    every: int = 1  # fire on every Nth matching request
    probability: float = 1.0
    seed: int = 0
    retry_after: int = 1  # seconds, for 429 and 503
    latency_ms: int = 1000  # for "latency"
    matched: int = 0
    fired: int = 0
    created_at: float = 0.0

    @property
    def spent(self) -> bool:
        return self.times is not None and self.fired >= self.times


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled request (docs/emulator.md "Request journal"). Secrets only as
    fingerprints: the first 16 hex digits of their SHA-256."""

    retailer_id: int
    at: float  # the retailer's virtual time
    method: str
    path: str  # as requested, not the template
    operation: str | None
    status: int
    latency_ms: float
    request_id: str
    error_code: str | None = None
    error_key: str | None = None
    client_id: str | None = None
    credential: str | None = None  # the bearer token's fingerprint
    secrets: dict[str, str] = field(default_factory=dict)  # body field -> fingerprint
    fault: FaultName | None = None  # the fault that answered it
    # A text held a character the database cannot hold (NUL, a lone surrogate): stored with
    # U+FFFD in its place (``storable``).
    replaced: bool = False
    id: int = 0  # given by the store


@dataclass(frozen=True, slots=True)
class JournalQuery:
    """Which entries to read, newest first; every filter that is set must hold."""

    limit: int
    path: str | None = None
    operation: str | None = None
    status: int | None = None
    since: float | None = None
    until: float | None = None
    credential: str | None = None  # entries whose credential is this fingerprint
    secret: str | None = None  # entries that carried a secret with this fingerprint
    # Look among the newest ``keep`` only (the journal's size): the store trims in batches, so
    # without it a filter could still find an entry that is already due to be dropped.
    keep: int | None = None


@dataclass(frozen=True, slots=True)
class StoredSecret:
    """What the store holds of a token, linking token or code, found by its fingerprint."""

    kind: SecretKind
    retailer_id: int
    created_at: float
    expires_at: float
    consumed_at: float | None = None
    revoked_at: float | None = None


# A snapshot's tables: name -> {"columns": [...], "rows": [[...], ...]}, bytes as hex strings.
Tables = dict[str, dict[str, Any]]
