"""The emulator's admin plane, ``/_connectlink/`` (docs/emulator.md), as ``Call``s: what
``client.emulator`` sends, each body one of ``connectlink.emulator.wire``'s Structs (the ones the
server reads and encodes), as ``calls`` is for the API.

Admin calls present no access token: the admin token, when the client was given one
(``admin_token=``, by default ``$CONNECTLINK_ADMIN_TOKEN``), else nothing, which the server
admits only from the loopback interface, naming a loopback host.

Safe to repeat (``replay_safe``), so retried even after an answer was lost: every read, and
the writes whose second try finds what the first left: setting, freezing, unfreezing and
resetting a clock, ``clear_faults`` (the rules are gone either way; only the count it answers
would say 0), starting or lapsing a membership (from "now" again), ``restore`` (the same state
again) and ``reset``.

Not safe, so retried only when the server surely did not act (``retry.py``): advancing a clock
(a second try would advance it twice), ``add_fault`` (a second rule), ``delete_fault`` (a second
try would answer "Fault Not Found", though the rule was deleted) and extending a membership
(twice the days).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote, urlencode

from connectlink import wire
from connectlink.client.core import Call
from connectlink.emulator import wire as ew

_ADMIN = "/_connectlink"
_FINGERPRINT = re.compile(r"[0-9a-fA-F]{16}")
When = datetime | str  # a time: an aware datetime (a naive one is read as UTC) or ISO 8601


def wire_time(when: When) -> str:
    """``when`` as the admin plane writes times, ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds).
    A string Python cannot read as ISO 8601 goes to the server as given, to be refused there
    as any invalid value is (``Invalid``, naming the key)."""
    if isinstance(when, datetime):
        at = when
    else:
        try:
            at = datetime.fromisoformat(when)
        except ValueError:
            return when
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fingerprint_of(secret: str | wire.Token) -> str:
    """A secret's fingerprint as the journal and ``tokens`` name it: the first 16 hex digits
    of its SHA-256. Sixteen hex digits are taken to be a fingerprint already."""
    value = secret.access_token if isinstance(secret, wire.Token) else secret
    if _FINGERPRINT.fullmatch(value):
        return value.lower()
    from connectlink.security import fingerprint  # argon2 with it: only when a token is given

    return fingerprint(value)


def _retailer(retailer_id: int, tail: str) -> str:
    return f"{_ADMIN}/retailers/{int(retailer_id)}/{tail}"


def _query(params: Mapping[str, object]) -> str:
    given = {name: value for name, value in params.items() if value is not None}
    return f"?{urlencode(given)}" if given else ""


# clocks -------------------------------------------------------------------------------------
def read_clock(retailer_id: int) -> Call[ew.Clock]:
    return Call("read_clock", "GET", _retailer(retailer_id, "clock"), ew.Clock, bearer=False,
                admin=True)


def move_clock(retailer_id: int, change: ew.ClockChange) -> Call[ew.Clock]:
    """One change of ``ClockChange``; only ``advance_seconds`` is no replay."""
    return Call("move_clock", "POST", _retailer(retailer_id, "clock"), ew.Clock, change,
                bearer=False, replay_safe=change.advance_seconds is None, admin=True)


def advance_clock(retailer_id: int, seconds: float) -> Call[ew.Clock]:
    """``seconds`` on (back, if negative); a frozen clock stays frozen, that much later."""
    return move_clock(retailer_id, ew.ClockChange(advance_seconds=float(seconds)))


def set_clock(retailer_id: int, when: When) -> Call[ew.Clock]:
    """The clock reads ``when`` now (a frozen one stays frozen, at ``when``)."""
    return move_clock(retailer_id, ew.ClockChange(set=wire_time(when)))


def freeze_clock(retailer_id: int, frozen: bool = True) -> Call[ew.Clock]:
    """Stop at the current virtual time, or (``frozen=False``) run on from where it stood."""
    return move_clock(retailer_id, ew.ClockChange(freeze=frozen))


def reset_clock(retailer_id: int) -> Call[ew.Clock]:
    """The wall clock again, running."""
    return move_clock(retailer_id, ew.ClockChange(reset=True))


# faults -------------------------------------------------------------------------------------
def add_fault(endpoint: str, fault: ew.Fault | int, *, retailer_id: int | None = None,
              client_id: str | None = None, times: int | None = None,
              every: int | None = None, probability: float | None = None,
              seed: int | None = None, retry_after: int | None = None,
              latency_ms: int | None = None) -> Call[ew.Created]:
    """A fault rule (docs/emulator.md, "Faults"): ``fault`` as the table names it (``503``
    or ``"503"``, ``"latency"``...); of the options, only those given are sent, so the rest
    take the server's defaults."""
    options: dict[str, Any] = {
        "retailer_id": retailer_id, "client_id": client_id, "times": times, "every": every,
        "probability": probability, "seed": seed, "retry_after": retry_after,
        "latency_ms": latency_ms}
    body = ew.FaultBody(endpoint=endpoint, fault=cast(ew.Fault, str(fault)),
                        **{name: value for name, value in options.items() if value is not None})
    return Call("add_fault", "POST", f"{_ADMIN}/faults", ew.Created, body, bearer=False,
                replay_safe=False, admin=True)


def list_faults() -> Call[ew.Faults]:
    return Call("list_faults", "GET", f"{_ADMIN}/faults", ew.Faults, bearer=False, admin=True)


def delete_fault(fault_id: int) -> Call[ew.Success]:
    return Call("delete_fault", "DELETE", f"{_ADMIN}/faults/{int(fault_id)}", ew.Success,
                bearer=False, replay_safe=False, admin=True)


def clear_faults() -> Call[ew.Deleted]:
    return Call("clear_faults", "DELETE", f"{_ADMIN}/faults", ew.Deleted, bearer=False,
                admin=True)


# the journal, token lifecycles ----------------------------------------------------------------
def read_journal(retailer_id: int, path: str | None = None, operation: str | None = None,
                 status: int | None = None, since: When | None = None,
                 until: When | None = None, limit: int | None = None) -> Call[ew.Journal]:
    query = _query({"path": path, "operation": operation, "status": status,
                    "since": wire_time(since) if since is not None else None,
                    "until": wire_time(until) if until is not None else None, "limit": limit})
    return Call("read_journal", "GET", _retailer(retailer_id, "journal") + query, ew.Journal,
                bearer=False, admin=True)


def token_lifecycle(secret: str | wire.Token) -> Call[ew.TokenLifecycle]:
    fingerprint = quote(fingerprint_of(secret), safe="")
    return Call("token_lifecycle", "GET", f"{_ADMIN}/tokens/{fingerprint}", ew.TokenLifecycle,
                bearer=False, admin=True)


# memberships ----------------------------------------------------------------------------------
def _membership(instacart_user_id: int) -> str:
    return f"{_ADMIN}/instacart_users/{int(instacart_user_id)}/membership"


def read_membership(instacart_user_id: int, retailer_id: int | None = None
                    ) -> Call[ew.Membership]:
    """By the retailer's clock, or by the server's without one."""
    query = _query({"retailer_id": retailer_id})
    return Call("read_membership", "GET", _membership(instacart_user_id) + query, ew.Membership,
                bearer=False, admin=True)


def change_membership(instacart_user_id: int, change: ew.MembershipChange
                      ) -> Call[ew.Membership]:
    """One change of ``MembershipChange``; only ``extend_days`` is no replay."""
    return Call("change_membership", "POST", _membership(instacart_user_id), ew.Membership,
                change, bearer=False, replay_safe=change.extend_days is None, admin=True)


def start_membership(instacart_user_id: int, days: float, retailer_id: int | None = None
                     ) -> Call[ew.Membership]:
    """A member for ``days`` from now (the retailer's now, if one is named)."""
    return change_membership(instacart_user_id, ew.MembershipChange(
        start_days=float(days), retailer_id=retailer_id))


def extend_membership(instacart_user_id: int, days: float, retailer_id: int | None = None
                      ) -> Call[ew.Membership]:
    """``days`` more, from the current expiry, or from now if it has lapsed."""
    return change_membership(instacart_user_id, ew.MembershipChange(
        extend_days=float(days), retailer_id=retailer_id))


def lapse_membership(instacart_user_id: int, retailer_id: int | None = None
                     ) -> Call[ew.Membership]:
    """Not a member from now on."""
    return change_membership(instacart_user_id, ew.MembershipChange(
        lapse=True, retailer_id=retailer_id))


# snapshots ------------------------------------------------------------------------------------
def snapshot() -> Call[ew.Snapshot]:
    return Call("snapshot", "GET", f"{_ADMIN}/snapshot", ew.Snapshot, bearer=False, admin=True)


def restore(taken: ew.Snapshot | Mapping[str, Any]) -> Call[ew.Success]:
    """A snapshot as ``snapshot`` answered it, or its JSON as read from a file: sent as it is,
    so that one of another version or schema gets the server's refusal naming both."""
    body = taken if isinstance(taken, ew.Snapshot) else dict(taken)
    return Call("restore", "POST", f"{_ADMIN}/restore", ew.Success, body, bearer=False,
                admin=True)


def reset() -> Call[ew.Success]:
    """Its body is ``{}``: the admin plane takes a write only in JSON."""
    return Call("reset", "POST", f"{_ADMIN}/reset", ew.Success, {}, bearer=False, admin=True)
