"""The storage interface. Its verbs are domain operations; each engine implements all of them
and both pass the same test suite. Rules that must hold under races (single use, one Connect
user per Instacart account and retailer) are enforced inside these calls by the database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from connectlink.emulator.records import (
    ClockSetting,
    FaultRule,
    JournalEntry,
    JournalQuery,
    StoredSecret,
    Tables,
)
from connectlink.models import (
    AccessToken,
    AuthorizationCode,
    ConnectUser,
    InstacartAccount,
    Lease,
    LinkOutcome,
    LoginThrottle,
    OAuthClient,
    Retailer,
    RevokeOutcome,
    SweepCounts,
    UserFields,
)
from connectlink.storage.migrations import Migratable


class Store(Migratable, Protocol):
    async def close(self) -> None: ...

    def connections_in_use(self) -> int | None:
        """Database connections in use right now (the metrics' pool gauge); None for an
        engine without a pool (SQLite: a connection for reads, and the writer's)."""
        ...

    def refuses_values(self, exc: BaseException) -> bool:
        """Was ``exc`` the database refusing the values written (a type's range, a constraint,
        text it cannot hold): a write that no retry will ever get in?"""
        ...

    # retailers and their OAuth clients ----
    async def create_retailer(
        self, name: str, client: OAuthClient, now: float
    ) -> tuple[Retailer, OAuthClient]:
        """Create a retailer with its first client (``client.pk``/``retailer_id`` are ignored)."""
        ...

    async def create_client(
        self, retailer_id: int, client: OAuthClient, now: float
    ) -> OAuthClient | None:
        """Another client of an existing retailer (``client.pk``/``retailer_id`` are ignored);
        None if there is no such retailer."""
        ...

    async def count_retailers(self) -> int: ...

    async def get_retailer(self, retailer_id: int) -> Retailer | None: ...

    async def list_retailers(self) -> list[Retailer]:
        """Every retailer, oldest first."""
        ...

    async def retailer_counts(self, retailer_id: int, now: float) -> tuple[int, int]:
        """How many Connect users the retailer has (purged ones are gone), and how many of them
        are linked."""
        ...

    async def get_client(self, client_id: str) -> OAuthClient | None: ...

    async def get_client_by_pk(self, pk: int) -> OAuthClient | None: ...

    async def list_clients(self, retailer_id: int | None = None) -> list[OAuthClient]:
        """Every client of ``retailer_id`` (default: of every retailer), oldest first."""
        ...

    async def set_client_secret(self, client_id: str, secret_digest: bytes) -> OAuthClient | None:
        """Replace the client's secret: the old one stops working with this call. None if there
        is no such client."""
        ...

    async def add_redirect_uri(self, client_id: str, uri: str) -> OAuthClient | None:
        """Register one more redirect URI (already there: unchanged), atomically against other
        additions. None if there is no such client."""
        ...

    # tokens ----
    async def save_token(self, token: AccessToken) -> None: ...

    async def get_token(self, digest: bytes) -> AccessToken | None: ...

    async def revoke_token(self, digest: bytes, client_pk: int, now: float) -> RevokeOutcome:
        """RFC 7009: revoke if ``client_pk`` issued it; say what happened."""
        ...

    # authorization codes ----
    async def save_code(self, code: AuthorizationCode) -> None: ...

    async def redeem_code(
        self,
        digest: bytes,
        client_pk: int,
        now: float,
        check: Callable[[AuthorizationCode], AccessToken],
    ) -> AccessToken | None:
        """Consume a code and issue its linking token in one transaction.

        The code is marked used whether or not ``check`` accepts it (no second try on a code);
        ``check`` raises to refuse, or returns the linking token to store and hand out. None if
        ``client_pk`` holds no such unused code; on a replay the linking token the code produced
        is revoked too, if still unused (RFC 6749 section 4.1.2).
        """
        ...

    # Connect users ----
    async def upsert_connect_user(
        self, retailer_id: int, fields: UserFields, now: float
    ) -> ConnectUser: ...

    async def get_connect_user(
        self, retailer_id: int, user_id: str, now: float
    ) -> ConnectUser | None:
        """The user, unless unknown or purged (past its privacy retention)."""
        ...

    async def deactivate_connect_user(
        self, user: ConnectUser, now: float, purge_after: float, reason: str
    ) -> None:
        """Mark the user not active, drop its link at once, and record why."""
        ...

    # links ----
    async def link(
        self, retailer_id: int, user_id: str, token_digest: bytes, now: float,
        banner: str | None,
    ) -> LinkOutcome:
        """Link the user to the linking token's Instacart account, atomically: find the user
        (not found, not active), consume the token, write the link (isolation rule), audit."""
        ...

    async def unlink(self, user: ConnectUser, now: float, reason: str) -> bool: ...

    async def find_link(
        self, retailer_id: int, user_id: str, now: float
    ) -> tuple[ConnectUser, InstacartAccount | None] | None:
        """The user and its linked Instacart account (None: not linked), in one lookup; None if
        there is no such user."""
        ...

    async def list_connect_users(
        self, retailer_id: int, now: float, limit: int
    ) -> list[tuple[ConnectUser, InstacartAccount | None]]:
        """The retailer's first ``limit`` users, oldest first, each with its linked account."""
        ...

    # Instacart accounts (sandbox) -----------------------------------------------------------------
    async def create_instacart_account(
        self, email: str, phone: str, password_hash: str, membership_expires_at: float | None,
        now: float,
    ) -> InstacartAccount | None:
        """None if the email is taken (emails are unique across the server)."""
        ...

    async def get_instacart_account(self, account_id: int) -> InstacartAccount | None: ...

    async def get_instacart_login(self, email: str) -> tuple[InstacartAccount, str] | None:
        """The account with this (normalised) email and its argon2 password hash."""
        ...

    # web sign-in throttling (the Login pages) ---------------------------------------------------
    async def get_login_throttles(self, subjects: list[str]) -> list[LoginThrottle]:
        """The throttles of those subjects that have one."""
        ...

    async def update_login_throttle(
        self, subject: str, change: Callable[[LoginThrottle], LoginThrottle]
    ) -> LoginThrottle:
        """Apply ``change`` to the subject's throttle and store the result, in one transaction
        that no other update of the same subject interleaves with."""
        ...

    async def clear_login_throttle(self, subject: str) -> None: ...

    # signed-in sessions of the Login pages -------------------------------------------------------
    async def start_login_session(self, id_digest: bytes, account_id: int, now: float,
                                  expires_at: float) -> None:
        """Record a signed-in session (by the SHA-256 of its id); a batch of sessions that
        have expired goes at the same time, so the table holds about the live ones."""
        ...

    async def login_session_live(self, id_digest: bytes, account_id: int, now: float) -> bool:
        """Is this session of this account recorded and not expired (nor ended)?"""
        ...

    async def end_login_session(self, id_digest: bytes) -> None:
        """Sign-out: the session ends, wherever its cookie is."""
        ...

    async def end_login_sessions(self, account_id: int) -> int:
        """Every session of the account ends (a lock, a password change): how many did."""
        ...

    # server secrets ---------------------------------------------------------------------------
    async def server_secret(self, name: str, candidate: str, now: float) -> str:
        """The secret stored under ``name``; ``candidate`` becomes it if there is none yet (the
        first of several racing workers wins, and all of them get the same value)."""
        ...

    # retention ----------------------------------------------------------------------------
    async def sweep(self, now: float, older_than: float, batch: int) -> SweepCounts:
        """One round of retention: delete up to ``batch`` tokens and up to ``batch``
        authorization codes whose expiry is more than ``older_than`` seconds before ``now``, and
        up to ``batch`` Connect users whose purge time has come (their links went with the
        privacy request; the audit trail stays). Each is a short transaction of its own."""
        ...

    async def take_lease(self, name: str, holder: str, now: float, until: float) -> Lease:
        """Take the lease ``name`` for ``holder`` until ``until``, or extend it, if it is free
        (never taken, let go, or expired by ``now``) or ``holder``'s already: atomically, so
        that of racing takers one wins. The lease as it stands after the call: ``holder``'s
        if taken, else whoever holds it."""
        ...

    async def release_lease(self, name: str, holder: str) -> None:
        """Let the lease go, if ``holder`` still holds it."""
        ...

    # operator views ----
    async def audit_trail(self, retailer_id: int) -> list[tuple[float, str, str, int | None]]:
        """(when, action, Connect user_id, Instacart account id), oldest first."""
        ...

    # the emulator's controls (docs/emulator.md; storage/emulator.py) ------------------------
    async def get_clock(self, retailer_id: int) -> ClockSetting:
        """The retailer's virtual clock (the default ``ClockSetting()`` if never set)."""
        ...

    async def all_clocks(self) -> dict[int, ClockSetting]:
        """Every retailer's clock that is not the wall clock."""
        ...

    async def change_clock(
        self, retailer_id: int, change: Callable[[ClockSetting], ClockSetting]
    ) -> ClockSetting | None:
        """Apply ``change`` to the retailer's clock and store the result (the default one:
        forget it), in one transaction no other change of it interleaves with; the new
        setting, or None if there is no such retailer."""
        ...

    async def add_fault(self, rule: FaultRule, now: float) -> int:
        """Store a rule (its ``id``, ``matched``, ``fired`` and ``created_at`` are ignored);
        its new id."""
        ...

    async def list_faults(self) -> list[FaultRule]:
        """Every rule, oldest first."""
        ...

    async def delete_fault(self, fault_id: int) -> bool: ...

    async def clear_faults(self) -> int:
        """Delete every rule; how many there were."""
        ...

    async def live_faults(self) -> list[FaultRule]:
        """Every rule that is not spent, oldest first."""
        ...

    async def match_fault(self, fault_id: int) -> FaultRule | None:
        """Count one more request seen by the rule, atomically; the rule after that (None if
        it is gone)."""
        ...

    async def fire_fault(self, fault_id: int) -> bool:
        """Count one firing, atomically, unless the rule is spent (or gone): False then, and
        the request goes unfaulted. Of racing workers, no more than ``times`` fire."""
        ...

    async def journal(self, entries: list[JournalEntry], keep: int) -> None:
        """Add entries to their retailers' journals (one transaction), of which the newest
        ``keep`` are kept."""
        ...

    # The journal's barrier (server/controls.py): workers write their entries in batches; a
    # reader raises the barrier and waits until no live worker is behind it.
    async def raise_barrier(self) -> int:
        """One more than the barrier stood at, atomically; the new value."""
        ...

    async def barrier(self) -> int: ...

    async def worker_seen(self, worker: str, barrier: int, now: float) -> None:
        """The worker is alive at ``now`` and has written out its entries up to ``barrier``."""
        ...

    async def worker_gone(self, worker: str) -> None: ...

    async def workers_behind(self, barrier: int, alive_since: float) -> int:
        """How many workers heard from since ``alive_since`` have not reached ``barrier``."""
        ...

    async def read_journal(self, retailer_id: int, query: JournalQuery) -> list[JournalEntry]:
        """The retailer's entries that ``query`` selects, newest first."""
        ...

    async def find_secret(self, fingerprint: bytes) -> StoredSecret | None:
        """The token, linking token or code whose SHA-256 digest starts with ``fingerprint``
        (8 bytes), if there is one."""
        ...

    async def change_membership(
        self, account_id: int, change: Callable[[float | None], float | None]
    ) -> InstacartAccount | None:
        """Apply ``change`` to when the account's Instacart+ membership ends (None: not a
        member), in one transaction as ``change_clock``; None if there is no such account."""
        ...

    async def snapshot(self) -> tuple[int, Tables]:
        """The schema version and every table of the state (not the server's secrets, leases
        or migrations), in one consistent read."""
        ...

    async def restore(self, tables: Tables) -> None:
        """Replace the whole state with ``tables`` (as ``snapshot`` gives them), in one
        transaction."""
        ...

    async def reset(self) -> None:
        """Empty every table of the state (retailers included), in one transaction."""
        ...
