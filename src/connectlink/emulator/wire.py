"""The admin plane's bodies (docs/emulator.md) as msgspec Structs, as ``connectlink.wire`` is
for the API: what the server encodes and reads, what the OpenAPI document describes and what
the SDK decodes. Times are ``YYYY-MM-DDTHH:MM:SSZ``; fields without a value are left out."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta, Struct

from connectlink import wire
from connectlink.emulator.records import EventName, FaultName, SecretKind
from connectlink.errors import Blank, ConnectError, Invalid

LATEST = 253_402_300_799  # 9999-12-31T23:59:59Z: the last instant a Time can say
Time = Annotated[str, Meta(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$",
                           examples=["2026-12-02T10:00:00Z"])]
Fault = FaultName
Fingerprint = Annotated[str, Meta(pattern=r"^[0-9a-f]{16}$",
                                  description="The first 16 hex digits of the secret's SHA-256")]


class VirtualClock(Struct):
    now: Time
    offset_seconds: float
    frozen: bool


class ClockChange(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Exactly one of these."""

    advance_seconds: Annotated[float, Meta(ge=-LATEST, le=LATEST)] | None = None
    set: Time | None = None
    freeze: bool | None = None
    reset: Literal[True] | None = None


INT32, INT64 = 2**31 - 1, 2**63 - 1  # what the columns hold
Id = Annotated[int, Meta(ge=1, le=INT64)]


class FaultBody(Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    retailer_id: Id | None = None
    client_id: str | None = None
    endpoint: Annotated[str, Meta(examples=["POST /v2/fulfillment/users/{user_id}/link"])]
    fault: Fault
    times: Annotated[int, Meta(ge=1, le=INT32)] | None = None
    every: Annotated[int, Meta(ge=1, le=INT32)] = 1
    probability: Annotated[float, Meta(ge=0, le=1)] = 1.0
    seed: Annotated[int, Meta(ge=-INT64 - 1, le=INT64)] = 0
    retry_after: Annotated[int, Meta(ge=0, le=86_400)] = 1
    latency_ms: Annotated[int, Meta(ge=0, le=60_000)] = 1000


class FaultRule(Struct, kw_only=True, omit_defaults=True):
    """A rule as stored: every setting shown, ``times``, ``retailer_id`` and ``client_id``
    only when set."""

    id: int
    retailer_id: int | None = None
    client_id: str | None = None
    endpoint: str
    fault: Fault
    times: int | None = None
    every: int
    probability: float
    seed: int
    retry_after: int
    latency_ms: int
    matched: int
    fired: int
    created_at: Time


class Created(Struct):
    id: int


class Faults(Struct):
    faults: list[FaultRule]


class Deleted(Struct):
    success: bool = True
    deleted: int = 0


class JournalEntry(Struct, kw_only=True, omit_defaults=True):
    id: int
    at: Time
    method: str
    path: Annotated[str, Meta(description="As requested, not the template")]
    operation: str | None = None
    status: Annotated[int, Meta(description="0: no answer (a drop fault)")]
    error_code: str | None = None
    error_key: str | None = None
    latency_ms: float
    request_id: str
    client_id: str | None = None
    credential: Fingerprint | None = None
    secrets: dict[str, Fingerprint] = {}
    fault: Fault | None = None
    replaced: Annotated[bool, Meta(
        description="True when a text of the request held a character the journal cannot "
                    "hold (NUL, a lone surrogate), stored as U+FFFD")] = False


class Journal(Struct):
    entries: list[JournalEntry]


class JournalQuery(Struct, kw_only=True, omit_defaults=True):
    """``GET .../journal``'s query parameters (for the document)."""

    path: str | None = None
    operation: str | None = None
    status: int | None = None
    since: Time | None = None
    until: Time | None = None
    limit: Annotated[int, Meta(ge=1)] | None = None


class TokenEvent(Struct, omit_defaults=True):
    event: EventName
    at: Time
    request_id: str | None = None


class TokenLifecycle(Struct):
    fingerprint: Fingerprint
    kind: SecretKind
    retailer_id: int
    events: list[TokenEvent]


class MembershipState(Struct, omit_defaults=True):
    instacart_user_id: int
    member: bool
    expires_at: Time | None = None


class MembershipChange(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Exactly one of ``start_days``, ``extend_days``, ``lapse``; ``retailer_id``: whose clock
    reads "now" (default: the server's)."""

    start_days: Annotated[float, Meta(gt=0, le=3_000_000)] | None = None
    extend_days: Annotated[float, Meta(gt=0, le=3_000_000)] | None = None
    lapse: Literal[True] | None = None
    retailer_id: Id | None = None


class Snapshot(Struct, kw_only=True):
    format: Literal["connectlink-snapshot"]
    version: int
    schema: int
    taken_at: Time
    tables: dict[str, Any]


# One name a schema in the OpenAPI document: none of these may share a name with connectlink.wire.
Clock = VirtualClock
Membership = MembershipState
Success = wire.Success

T = TypeVar("T")
_AT = re.compile(r"at `\$\.(\w+)")
_FIELD = re.compile(r"field `(\w+)`")


def read(body: dict[str, object], into: type[T]) -> T:
    """``body`` as ``into``, or the Connect validation error naming the offending key
    (``can't be blank`` for a missing one, ``is invalid`` for anything else)."""
    try:
        return msgspec.convert(body, into, strict=True)
    except msgspec.ValidationError as exc:
        raise _refusal(str(exc)) from None


def _refusal(message: str) -> ConnectError:
    at, field = _AT.search(message), _FIELD.search(message)
    key = at.group(1) if at else field.group(1) if field else None
    return Blank(key) if message.startswith("Object missing required field") else Invalid(key)
