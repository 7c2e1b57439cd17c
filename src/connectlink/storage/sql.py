"""The ``Store`` in SQL, once for both engines.

The domain operations are the same statements on SQLite and PostgreSQL; what differs is the
driver, the placeholders, how a transaction starts and which errors mean "taken" or "try again
later". Those live in an ``Engine`` (``engine.py`` the interface; ``sqlite.py``,
``postgres.py``); this module and ``retailers.py`` (retailers and their OAuth clients) hold
every statement and the rules they enforce:

- single use of codes and linking tokens: a conditional ``UPDATE ... WHERE consumed_at IS NULL``;
- one Connect user per Instacart account and retailer: the ``UNIQUE (retailer_id, account_id)``
  constraint on ``links``;
- a link and the consumption of its token commit together or not at all.

Statements use ``?`` placeholders; an engine may rewrite them. Parameters that only a ``SELECT``
list sees are ``CAST`` so PostgreSQL knows their types.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from connectlink.models import (
    AccessToken,
    AuthorizationCode,
    ConnectUser,
    InstacartAccount,
    Lease,
    LinkOutcome,
    LoginThrottle,
    RevokeOutcome,
    SweepCounts,
    UserFields,
)
from connectlink.storage import records
from connectlink.storage.emulator import EmulatorSQL
from connectlink.storage.engine import Connection, Engine
from connectlink.storage.migrations import Migration
from connectlink.storage.records import (
    ACCOUNT_COLUMNS,
    CODE_COLUMNS,
    THROTTLE_COLUMNS,
    TOKEN_COLUMNS,
    USER_COLUMNS,
    Row,
)
from connectlink.storage.retailers import RetailerSQL

__all__ = ["Connection", "Engine", "SQLStore"]


class _Undo(Exception):
    """Roll the transaction back and report ``outcome`` instead."""

    def __init__(self, outcome: LinkOutcome) -> None:
        super().__init__(outcome.value)
        self.outcome = outcome


class SQLStore(RetailerSQL, EmulatorSQL):
    """Every ``Store`` verb, on whichever ``Engine`` it is given (retailers and clients in
    ``retailers.py``, the emulator's controls in ``emulator.py``)."""

    # schema -------------------------------------------------------------------------------
    async def applied_migrations(self) -> set[int]:
        async with self.db.connection() as db:
            if not await self.db.table_exists(db, "schema_migrations"):
                return set()  # a new database
            return {row[0] for row in await db.fetch("SELECT version FROM schema_migrations")}

    async def is_empty(self) -> bool:
        async with self.db.connection() as db:
            return await self.db.is_empty(db)

    async def apply_migration(self, migration: Migration) -> bool:
        async def apply(db: Connection) -> bool:
            await self.db.lock_migrations(db)
            await db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            if await db.fetchrow(
                "SELECT 1 FROM schema_migrations WHERE version = ?", migration.version
            ):
                return False  # another process got there first
            await db.script(migration.sql)
            await db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                migration.version, migration.name, time.time(),
            )
            return True

        return await self.db.write(apply)

    # tokens -------------------------------------------------------------------------------
    _INSERT_TOKEN = f"INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

    async def save_token(self, token: AccessToken) -> None:
        await self._execute(self._INSERT_TOKEN, *records.token_values(token))

    async def get_token(self, digest: bytes) -> AccessToken | None:
        return await self._one(
            records.token, f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE digest = ?", digest
        )

    async def revoke_token(self, digest: bytes, client_pk: int, now: float) -> RevokeOutcome:
        async def revoke(db: Connection) -> RevokeOutcome:
            row = await db.fetchrow("SELECT client_pk FROM tokens WHERE digest = ?", digest)
            if row is None:
                return RevokeOutcome.UNKNOWN
            if row[0] != client_pk:
                return RevokeOutcome.FOREIGN
            await db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE digest = ? AND revoked_at IS NULL",
                now, digest,
            )
            return RevokeOutcome.REVOKED

        return await self.db.write(revoke)

    # authorization codes --------------------------------------------------------------------
    async def save_code(self, code: AuthorizationCode) -> None:
        await self._execute(
            f"INSERT INTO authorization_codes ({CODE_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            *records.code_values(code),
        )

    async def redeem_code(
        self,
        digest: bytes,
        client_pk: int,
        now: float,
        check: Callable[[AuthorizationCode], AccessToken],
    ) -> AccessToken | None:
        async def redeem(db: Connection) -> AccessToken | Exception | None:
            row = await db.fetchrow(
                "UPDATE authorization_codes SET consumed_at = ? WHERE digest = ? "
                f"AND client_pk = ? AND consumed_at IS NULL RETURNING {CODE_COLUMNS}",
                now, digest, client_pk,
            )
            if row is None:
                # A replay: the token the first redemption produced must not outlive it.
                await db.execute(
                    "UPDATE tokens SET revoked_at = ? WHERE code_digest = ? AND client_pk = ? "
                    "AND consumed_at IS NULL AND revoked_at IS NULL",
                    now, digest, client_pk,
                )
                return None
            try:
                token = check(records.code(row))
            except Exception as exc:  # refused: the code stays used up (committed all the same)
                return exc
            await db.execute(self._INSERT_TOKEN, *records.token_values(token))
            return token

        redeemed = await self.db.write(redeem)
        if isinstance(redeemed, Exception):
            raise redeemed
        return redeemed

    # Connect users ----------------------------------------------------------------------------
    async def upsert_connect_user(
        self, retailer_id: int, fields: UserFields, now: float
    ) -> ConnectUser:
        async def upsert(db: Connection) -> Row | None:
            # A user purged after a privacy request is gone: its id starts afresh.
            await db.execute(
                "DELETE FROM connect_users WHERE retailer_id = ? AND user_id = ? "
                "AND purge_after <= ?",
                retailer_id, fields.user_id, now,
            )
            return await db.fetchrow(
                "INSERT INTO connect_users (retailer_id, user_id, first_name, last_name, "
                "phone_number, locale, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (retailer_id, user_id) DO UPDATE SET "
                "first_name = excluded.first_name, "
                "last_name = coalesce(excluded.last_name, connect_users.last_name), "
                "phone_number = coalesce(excluded.phone_number, connect_users.phone_number), "
                "locale = coalesce(excluded.locale, connect_users.locale), "
                f"updated_at = excluded.updated_at RETURNING {USER_COLUMNS}",
                retailer_id, fields.user_id, fields.first_name, fields.last_name,
                fields.phone_number, fields.locale, now, now,
            )

        row = await self.db.write(upsert)
        assert row is not None
        return records.user(row)

    # A user past its privacy retention is purged: it no longer exists for any caller.
    _FIND_USER = (
        f"SELECT {USER_COLUMNS} FROM connect_users WHERE retailer_id = ? AND user_id = ? "
        "AND (purge_after IS NULL OR purge_after > ?)"
    )

    async def get_connect_user(
        self, retailer_id: int, user_id: str, now: float
    ) -> ConnectUser | None:
        return await self._one(records.user, self._FIND_USER, retailer_id, user_id, now)

    async def deactivate_connect_user(
        self, user: ConnectUser, now: float, purge_after: float, reason: str
    ) -> None:
        async def deactivate(db: Connection) -> None:
            await db.execute(
                "UPDATE connect_users SET active = false, purge_after = ?, updated_at = ? "
                "WHERE pk = ?",
                purge_after, now, user.pk,
            )
            dropped = await db.fetchrow(
                "DELETE FROM links WHERE connect_user_pk = ? RETURNING account_id", user.pk
            )
            await self._audit(db, user, now, reason, dropped[0] if dropped else None)
            # Purge what is past its retention, so deleted data does not linger.
            await db.execute("DELETE FROM connect_users WHERE purge_after <= ?", now)

        await self.db.write(deactivate)

    async def _audit(
        self, db: Connection, user: ConnectUser, now: float, action: str,
        account_id: int | None, detail: dict[str, Any] | None = None,
    ) -> None:
        await db.execute(
            "INSERT INTO audit_events (retailer_id, occurred_at, action, user_id, account_id, "
            "detail) VALUES (?, ?, ?, ?, ?, ?)",
            user.retailer_id, now, action, user.user_id, account_id,
            json.dumps(detail) if detail else None,
        )

    # links ------------------------------------------------------------------------------------
    async def link(
        self, retailer_id: int, user_id: str, token_digest: bytes, now: float,
        banner: str | None,
    ) -> LinkOutcome:
        try:
            return await self.db.write(
                lambda db: self._link(db, retailer_id, user_id, token_digest, now, banner))
        except _Undo as undo:
            return undo.outcome

    async def _link(
        self, db: Connection, retailer_id: int, user_id: str, token_digest: bytes, now: float,
        banner: str | None,
    ) -> LinkOutcome:
        found = await db.fetchrow(self._FIND_USER, retailer_id, user_id, now)
        if found is None:
            return LinkOutcome.USER_NOT_FOUND
        user = records.user(found)
        if not user.active:
            return LinkOutcome.USER_INACTIVE
        token = await db.fetchrow(
            "UPDATE tokens SET consumed_at = ? WHERE digest = ? AND retailer_id = ? "
            "AND account_id IS NOT NULL AND consumed_at IS NULL AND revoked_at IS NULL "
            "AND expires_at > ? RETURNING account_id",
            now, token_digest, retailer_id, now,
        )
        if token is None:
            raise _Undo(LinkOutcome.TOKEN_INVALID)
        account_id = token[0]
        previous = await db.fetchrow(
            "SELECT account_id FROM links WHERE connect_user_pk = ?", user.pk
        )
        try:
            await db.execute(
                "INSERT INTO links (connect_user_pk, retailer_id, account_id, linked_at, banner) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (connect_user_pk) DO UPDATE SET "
                "account_id = excluded.account_id, linked_at = excluded.linked_at, "
                "banner = excluded.banner",
                user.pk, retailer_id, account_id, now, banner,
            )
        except Exception as exc:
            if self.db.is_unique_violation(exc):  # the isolation rule, enforced by the index
                raise _Undo(LinkOutcome.ACCOUNT_TAKEN) from exc
            raise
        outcome = (
            LinkOutcome.LINKED if previous is None
            else LinkOutcome.RELINKED if previous[0] == account_id
            else LinkOutcome.REPLACED
        )
        detail: dict[str, Any] = {}
        if outcome is LinkOutcome.REPLACED and previous is not None:
            detail["replaced_account_id"] = previous[0]
        if banner:
            detail["banner"] = banner
        await self._audit(db, user, now, outcome.value, account_id, detail)
        return outcome

    async def unlink(self, user: ConnectUser, now: float, reason: str) -> bool:
        async def unlink(db: Connection) -> bool:
            dropped = await db.fetchrow(
                "DELETE FROM links WHERE connect_user_pk = ? RETURNING account_id", user.pk
            )
            if dropped is not None:
                await self._audit(db, user, now, "unlink", dropped[0], {"reason": reason})
            return dropped is not None

        return await self.db.write(unlink)

    # A user, its link and the linked account, in one row; ``_split`` cuts it in two.
    _USER_AND_ACCOUNT = (
        f"SELECT {records.of('u', USER_COLUMNS)}, {records.of('a', ACCOUNT_COLUMNS)} "
        "FROM connect_users u LEFT JOIN links l ON l.connect_user_pk = u.pk "
        "LEFT JOIN instacart_accounts a ON a.id = l.account_id "
        "WHERE u.retailer_id = ? AND (u.purge_after IS NULL OR u.purge_after > ?)"
    )
    _FIND_LINK = _USER_AND_ACCOUNT + " AND u.user_id = ?"
    _LIST_USERS = _USER_AND_ACCOUNT + " ORDER BY u.pk LIMIT ?"
    _USER_WIDTH = len(USER_COLUMNS.split(", "))

    def _split(self, row: Row) -> tuple[ConnectUser, InstacartAccount | None]:
        width = self._USER_WIDTH
        linked = row[width] is not None
        return records.user(row[:width]), records.account(row[width:]) if linked else None

    async def find_link(
        self, retailer_id: int, user_id: str, now: float
    ) -> tuple[ConnectUser, InstacartAccount | None] | None:
        async with self.db.connection() as db:
            row = await db.fetchrow(self._FIND_LINK, retailer_id, now, user_id)
        return self._split(row) if row is not None else None

    async def list_connect_users(
        self, retailer_id: int, now: float, limit: int
    ) -> list[tuple[ConnectUser, InstacartAccount | None]]:
        async with self.db.connection() as db:
            rows = await db.fetch(self._LIST_USERS, retailer_id, now, limit)
        return [self._split(row) for row in rows]

    # Instacart accounts -------------------------------------------------------------------------
    async def create_instacart_account(
        self, email: str, phone: str, password_hash: str, membership_expires_at: float | None,
        now: float,
    ) -> InstacartAccount | None:
        try:
            return await self._write_one(
                records.account,
                "INSERT INTO instacart_accounts (email, phone, password_hash, "
                "membership_expires_at, created_at) VALUES (?, ?, ?, ?, ?) "
                f"RETURNING {ACCOUNT_COLUMNS}",
                email, phone, password_hash, membership_expires_at, now,
            )
        except Exception as exc:
            if self.db.is_unique_violation(exc):
                return None
            raise

    async def get_instacart_account(self, account_id: int) -> InstacartAccount | None:
        return await self._one(
            records.account, f"SELECT {ACCOUNT_COLUMNS} FROM instacart_accounts WHERE id = ?",
            account_id,
        )

    async def get_instacart_login(self, email: str) -> tuple[InstacartAccount, str] | None:
        return await self._one(
            lambda row: (records.account(row[:-1]), row[-1]),
            f"SELECT {ACCOUNT_COLUMNS}, password_hash FROM instacart_accounts WHERE email = ?",
            email,
        )

    # web sign-in throttling ---------------------------------------------------------------------
    async def get_login_throttles(self, subjects: list[str]) -> list[LoginThrottle]:
        marks = ", ".join("?" for _ in subjects)
        async with self.db.connection() as db:
            rows = await db.fetch(
                f"SELECT {THROTTLE_COLUMNS} FROM login_throttles WHERE subject IN ({marks})",
                *subjects,
            )
        return [records.throttle(row) for row in rows]

    async def update_login_throttle(
        self, subject: str, change: Callable[[LoginThrottle], LoginThrottle]
    ) -> LoginThrottle:
        async def update(db: Connection) -> LoginThrottle:
            # An upsert that changes nothing, for the row lock it takes (SQLite's BEGIN
            # IMMEDIATE holds the whole database's): racing failures are counted one by one.
            row = await db.fetchrow(
                "INSERT INTO login_throttles (subject, failures) VALUES (?, '') "
                "ON CONFLICT (subject) DO UPDATE SET subject = excluded.subject "
                f"RETURNING {THROTTLE_COLUMNS}",
                subject,
            )
            assert row is not None
            changed = change(records.throttle(row))
            await db.execute(
                "UPDATE login_throttles SET failures = ?, locked_until = ? WHERE subject = ?",
                *records.throttle_values(changed)[1:], subject,
            )
            return changed

        return await self.db.write(update)

    async def clear_login_throttle(self, subject: str) -> None:
        await self._execute("DELETE FROM login_throttles WHERE subject = ?", subject)

    # signed-in sessions of the Login pages ---------------------------------------------------
    _EXPIRED_SESSIONS = 100  # removed with each new session, by the expiry index

    async def start_login_session(self, id_digest: bytes, account_id: int, now: float,
                                  expires_at: float) -> None:
        async def start(db: Connection) -> None:
            await db.execute(self._delete_batch("login_sessions", "id_digest", "expires_at <= ?"),
                             now, self._EXPIRED_SESSIONS)
            await db.execute(
                "INSERT INTO login_sessions (id_digest, account_id, created_at, expires_at) "
                "VALUES (?, ?, ?, ?)", id_digest, account_id, now, expires_at)

        await self.db.write(start)

    async def login_session_live(self, id_digest: bytes, account_id: int, now: float) -> bool:
        found = await self._one(
            lambda row: True,
            "SELECT 1 FROM login_sessions WHERE id_digest = ? AND account_id = ? "
            "AND expires_at > ?", id_digest, account_id, now)
        return found is not None

    async def end_login_session(self, id_digest: bytes) -> None:
        await self._execute("DELETE FROM login_sessions WHERE id_digest = ?", id_digest)

    async def end_login_sessions(self, account_id: int) -> int:
        return await self._execute("DELETE FROM login_sessions WHERE account_id = ?",
                                   account_id)

    async def server_secret(self, name: str, candidate: str, now: float) -> str:
        await self._execute(
            "INSERT INTO server_secrets (name, value, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO NOTHING",
            name, candidate, now,
        )
        value = await self._one(
            lambda row: str(row[0]), "SELECT value FROM server_secrets WHERE name = ?", name)
        assert value is not None
        return value

    # retention ----------------------------------------------------------------------------
    # What is due, table by table: (table, key, condition on the time given). Each gets one
    # batch a round, by key: the subquery walks the expiry (or purge) index for at most
    # ``batch`` keys, so no statement touches more rows than that, nor holds its locks (on
    # SQLite, the database's one write lock) for longer. Users cascade to their links (gone
    # already since the privacy request); the audit trail names users by id, and stays.
    _DUE = (
        ("tokens", "digest", "expires_at < ?"),
        ("authorization_codes", "digest", "expires_at < ?"),
        ("connect_users", "pk", "purge_after <= ?"),
    )

    @staticmethod
    def _delete_batch(table: str, key: str, due: str) -> str:
        return f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {due} LIMIT ?)"

    async def sweep(self, now: float, older_than: float, batch: int) -> SweepCounts:
        removed = []
        for (table, key, due), before in zip(
            self._DUE, (now - older_than, now - older_than, now), strict=True
        ):
            removed.append(await self._execute(self._delete_batch(table, key, due), before, batch))
        if any(removed):
            await self.db.settle()
        return SweepCounts(*removed)

    _LEASE_COLUMNS = "name, holder, expires_at"

    async def take_lease(self, name: str, holder: str, now: float, until: float) -> Lease:
        async def take(db: Connection) -> Row | None:
            # The conflict path takes the row's lock whether or not its WHERE holds: of racing
            # takers, the first commits and the others see its lease.
            row = await db.fetchrow(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                "expires_at = excluded.expires_at "
                "WHERE leases.holder = excluded.holder OR leases.expires_at <= ? "
                f"RETURNING {self._LEASE_COLUMNS}",
                name, holder, until, now,
            )
            if row is None:
                row = await db.fetchrow(
                    f"SELECT {self._LEASE_COLUMNS} FROM leases WHERE name = ?", name
                )
            return row

        row = await self.db.write(take)
        assert row is not None
        return Lease(row[0], row[1], row[2])

    async def release_lease(self, name: str, holder: str) -> None:
        await self._execute("DELETE FROM leases WHERE name = ? AND holder = ?", name, holder)

    async def audit_trail(self, retailer_id: int) -> list[tuple[float, str, str, int | None]]:
        async with self.db.connection() as db:
            rows = await db.fetch(
                "SELECT occurred_at, action, user_id, account_id FROM audit_events "
                "WHERE retailer_id = ? ORDER BY id",
                retailer_id,
            )
        return [(row[0], row[1], row[2], row[3]) for row in rows]
