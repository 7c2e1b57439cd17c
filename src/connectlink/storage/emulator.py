"""The emulator's controls in SQL, for both engines (docs/emulator.md): the retailers' virtual
clocks, fault rules, the request journal, secrets found by fingerprint, Instacart+ memberships,
and the snapshot, restore and reset of the whole state.

What must hold across workers is the database's to hold: a rule fires at most ``times`` times
because each firing is one conditional ``UPDATE``; a snapshot is one consistent read; a restore
or a reset is one transaction that no other write interleaves with.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectlink.emulator.records import (
    ACCESS_TOKEN,
    AUTHORIZATION_CODE,
    LINKING_TOKEN,
    ClockSetting,
    FaultRule,
    JournalEntry,
    JournalQuery,
    StoredSecret,
    Tables,
)
from connectlink.models import InstacartAccount
from connectlink.storage import records
from connectlink.storage.engine import Connection, Engine, SQLBase
from connectlink.storage.records import ACCOUNT_COLUMNS, Row

# Journal inserts of one retailer (by one store) between two trims of its journal: the trim
# walks back ``keep`` entries by index, too much work for every request; readers never see
# more than ``keep`` all the same (``read_journal``).
TRIM_EVERY = 50

# FaultRule's fields, in order.
_FAULT_COLUMNS = (
    "id, retailer_id, client_id, endpoint, fault, times, every, probability, seed, retry_after, "
    "latency_ms, matched, fired, created_at"
)
_LIVE = "(times IS NULL OR fired < times)"  # a rule that is not spent


def _fault(row: Row) -> FaultRule:
    return FaultRule(*row)


# JournalEntry's fields, in order, but its ``id`` (the database's), which comes last.
_JOURNAL_COLUMNS = (
    "retailer_id, at, method, path, operation, status, latency_ms, request_id, error_code, "
    "error_key, client_id, credential, secrets, fault, replaced"
)
_REPLACED = _JOURNAL_COLUMNS.split(", ").index("replaced")
_SECRETS = _JOURNAL_COLUMNS.split(", ").index("secrets")  # a JSON object in the table


def _entry(row: Row) -> JournalEntry:
    values = list(row)
    values[_SECRETS] = json.loads(values[_SECRETS])
    values[_REPLACED] = bool(values[_REPLACED])  # SQLite's 0 and 1
    return JournalEntry(*values)


def _entry_values(entry: JournalEntry) -> list[Any]:
    values = [getattr(entry, column) for column in _JOURNAL_COLUMNS.split(", ")]
    values[_SECRETS] = json.dumps(entry.secrets, separators=(",", ":"))  # see _journal_filters
    return values


def _like(text: str) -> str:
    """``text`` as a LIKE pattern matching only itself (``ESCAPE '\\'``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _journal_filters(query: JournalQuery) -> list[tuple[str, Any]]:
    """The conditions ``query`` sets, each with its argument."""
    # A fingerprint among the values of the secrets object: in its compact JSON a value, and
    # only a value, follows ':"' (a quote inside a string is escaped). Fingerprints are
    # lowercase hex, and so is the one looked for: SQLite's LIKE ignores case, PostgreSQL's not.
    secret = None if query.secret is None else f'%:"{_like(query.secret.lower())}"%'
    conditions = [
        ("path = ?", query.path), ("operation = ?", query.operation),
        ("status = ?", query.status), ("at >= ?", query.since), ("at <= ?", query.until),
        ("credential = ?", query.credential), ("secrets LIKE ? ESCAPE '\\'", secret),
    ]
    return [(condition, value) for condition, value in conditions if value is not None]


def _prefix_range(prefix: bytes) -> tuple[str, list[bytes]]:
    """The condition that ``digest`` starts with ``prefix``, as a range the primary key's
    index answers: from the prefix up to the next one (``12 34 ff`` -> ``12 35``), not
    included; a prefix of 0xff bytes only has no upper bound. Bytes compare alike as SQLite
    BLOBs and PostgreSQL BYTEA (byte by byte, then by length)."""
    head = prefix.rstrip(b"\xff")
    if not head:
        return "digest >= ?", [prefix]
    return "digest >= ? AND digest < ?", [prefix, head[:-1] + bytes([head[-1] + 1])]


# The snapshot's tables ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Table:
    """One table of the state as a snapshot holds it: its columns, in order, each with what it
    holds; the first is its primary key."""

    name: str
    kinds: dict[str, str]  # column -> "identity", "int", "real", "text", "hex" or "flag"

    @property
    def columns(self) -> list[str]:
        return list(self.kinds)

    @property
    def identity(self) -> str | None:
        """The key PostgreSQL generates (GENERATED ALWAYS AS IDENTITY), if there is one."""
        return next((c for c, kind in self.kinds.items() if kind == "identity"), None)


def _table(name: str, columns: str) -> _Table:
    """``"id identity, name text"`` -> its ``_Table``."""
    return _Table(name, {column: kind for column, kind in (c.split() for c in columns.split(", "))})


# The state, parents before children (restored in this order, emptied in the reverse): every
# table but the server's secrets, the leases and the migrations. Columns are listed, not read
# from the catalogue, so both engines give the same snapshot. "identity": an integer key that
# PostgreSQL generates; "hex": bytes, lowercase hex in a snapshot; "flag": a boolean (INTEGER on
# SQLite, BOOLEAN on PostgreSQL), true or false in a snapshot from either.
_STATE = tuple(_table(name, columns) for name, columns in (
    ("retailers", "id identity, name text, created_at real"),
    ("oauth_clients", "pk identity, retailer_id int, client_id text, secret_digest hex, "
                      "redirect_uris text, grants text, require_pkce flag, created_at real"),
    ("instacart_accounts", "id identity, email text, phone text, password_hash text, "
                           "membership_expires_at real, created_at real"),
    ("authorization_codes", "digest hex, client_pk int, retailer_id int, account_id int, "
                            "redirect_uri text, scopes text, code_challenge text, "
                            "code_challenge_method text, created_at real, expires_at real, "
                            "consumed_at real"),
    ("tokens", "digest hex, client_pk int, retailer_id int, scopes text, created_at real, "
               "expires_at real, account_id int, code_digest hex, revoked_at real, "
               "consumed_at real"),
    ("connect_users", "pk identity, retailer_id int, user_id text, first_name text, "
                      "last_name text, phone_number text, locale text, active flag, "
                      "purge_after real, created_at real, updated_at real"),
    ("links", "connect_user_pk int, retailer_id int, account_id int, linked_at real, "
              "banner text"),
    ("audit_events", "id identity, retailer_id int, occurred_at real, action text, "
                     "user_id text, account_id int, detail text"),
    ("login_throttles", "subject text, failures text, locked_until real"),
    ("retailer_clocks", "retailer_id int, offset_seconds real, frozen_at real"),
    ("emulator_faults", "id identity, retailer_id int, client_id text, endpoint text, "
                        "fault text, times int, every int, probability real, seed int, "
                        "retry_after int, latency_ms int, matched int, fired int, "
                        "created_at real"),
    ("emulator_journal", "id identity, retailer_id int, at real, method text, path text, "
                         "operation text, status int, latency_ms real, request_id text, "
                         "error_code text, error_key text, client_id text, credential text, "
                         "secrets text, fault text, replaced flag"),
))

# Columns added after snapshot version 1 began, which an older snapshot does not have.
_ADDED_LATER = {"emulator_journal": frozenset({"replaced"})}
# Tables no snapshot holds that its state's rows own: emptied by a restore and a reset (a
# signed-in session is for an account that a restore may give to someone else).
_OWNED = ("login_sessions",)

# A stored value as a snapshot gives it, by kind (None stays None; the rest as they are).
_DUMP: dict[str, Callable[[Any], Any]] = {"hex": lambda value: bytes(value).hex(), "flag": bool}
# What a restore takes for each kind, and how it is stored.
_TAKES: dict[str, tuple[tuple[type, ...], str]] = {
    "identity": ((int,), "an integer"), "int": ((int,), "an integer"),
    "real": ((int, float), "a number"), "text": ((str,), "a string"),
    "hex": ((str,), "a hex string"), "flag": ((bool,), "true or false"),
}
_LOAD: dict[str, Callable[[Any], Any]] = {"hex": bytes.fromhex, "real": float}


def _dump(table: _Table, rows: list[Row]) -> dict[str, Any]:
    """A table's rows for a snapshot, sorted by key in Python: the same order on both engines,
    whatever their collations."""
    dumps = [_DUMP.get(kind) for kind in table.kinds.values()]
    dumped = [
        [value if value is None or dump is None else dump(value)
         for dump, value in zip(dumps, row, strict=True)]
        for row in rows
    ]
    dumped.sort(key=lambda row: row[0])
    return {"columns": table.columns, "rows": dumped}


def _loaded(column: str, kind: str, value: Any) -> Any:
    """A snapshot's value as the column stores it; ``ValueError`` if it is not what the column
    holds (PostgreSQL would refuse it less clearly, SQLite not at all)."""
    if value is None:
        return None  # NOT NULL is the database's to enforce
    types, what = _TAKES[kind]
    # A boolean is an int to Python: only a flag takes one, and a flag nothing else.
    if isinstance(value, bool) != (kind == "flag") or not isinstance(value, types):
        raise ValueError(f"{column} takes {what}, not {type(value).__name__}")
    load = _LOAD.get(kind)
    try:
        return value if load is None else load(value)
    except ValueError:
        raise ValueError(f"{column} takes {what}, not {value!r}") from None


def _checked_table(table: _Table, given: Any) -> tuple[list[str], list[list[Any]]]:
    """The columns (as named: any order) and rows to insert into ``table``."""
    if given is None:
        raise ValueError(f"the snapshot has no table {table.name!r}")
    if not (isinstance(given, dict) and isinstance(given.get("columns"), list)
            and isinstance(given.get("rows"), list)):
        raise ValueError(f'table {table.name!r}: expected {{"columns": [...], "rows": [...]}}')
    columns = given["columns"]
    # Checked against the known names, so that only those ever reach a statement; a column
    # added since snapshots began may be missing (its default is stored).
    later = _ADDED_LATER.get(table.name, frozenset())
    if not (all(isinstance(column, str) for column in columns)
            and len(columns) == len(set(columns))
            and set(table.kinds) - later <= set(columns) <= set(table.kinds)):
        raise ValueError(f"table {table.name!r} has the columns {', '.join(table.kinds)} "
                         f"(in any order), not {columns!r}")
    kinds = [table.kinds[column] for column in columns]
    rows = []
    for number, row in enumerate(given["rows"]):
        if not isinstance(row, list | tuple) or len(row) != len(columns):
            raise ValueError(f"table {table.name!r}, row {number}: expected a list of "
                             f"{len(columns)} values")
        try:
            rows.append([_loaded(*value) for value in zip(columns, kinds, row, strict=True)])
        except ValueError as bad:
            raise ValueError(f"table {table.name!r}, row {number}: {bad}") from None
    return columns, rows


def _checked(tables: Tables) -> list[tuple[_Table, list[str], list[list[Any]]]]:
    """Every table's columns and rows, in ``_STATE``'s order, checked before anything is
    changed: ``ValueError`` saying what does not fit."""
    if not isinstance(tables, dict):
        raise ValueError("the tables are not an object of table name -> table")
    unknown = sorted(set(tables) - {table.name for table in _STATE})
    if unknown:
        raise ValueError(f"unknown table {unknown[0]!r}")
    return [(table, *_checked_table(table, tables.get(table.name))) for table in _STATE]


class EmulatorSQL(SQLBase):
    """The emulator-control verbs of ``Store``."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._journaled: dict[int, int] = {}  # journal inserts so far, by retailer

    @property
    def _postgres(self) -> bool:
        """The few statements here that cannot be written once for both engines ask this."""
        return self.engine == "postgres"

    # virtual clocks -------------------------------------------------------------------------
    async def get_clock(self, retailer_id: int) -> ClockSetting:
        setting = await self._one(
            lambda row: ClockSetting(row[0], row[1]),
            "SELECT offset_seconds, frozen_at FROM retailer_clocks WHERE retailer_id = ?",
            retailer_id,
        )
        return setting if setting is not None else ClockSetting()

    async def all_clocks(self) -> dict[int, ClockSetting]:
        async with self.db.connection() as db:
            rows = await db.fetch(
                "SELECT retailer_id, offset_seconds, frozen_at FROM retailer_clocks")
        return {row[0]: ClockSetting(row[1], row[2]) for row in rows}

    async def change_clock(
        self, retailer_id: int, change: Callable[[ClockSetting], ClockSetting]
    ) -> ClockSetting | None:
        async def change_row(db: Connection) -> ClockSetting | None:
            if await db.fetchrow("SELECT 1 FROM retailers WHERE id = ?", retailer_id) is None:
                return None
            # An upsert that changes nothing, for the row lock it takes (SQLite's BEGIN
            # IMMEDIATE holds the whole database's): racing changes apply one after the other.
            row = await db.fetchrow(
                "INSERT INTO retailer_clocks (retailer_id) VALUES (?) ON CONFLICT (retailer_id) "
                "DO UPDATE SET retailer_id = excluded.retailer_id "
                "RETURNING offset_seconds, frozen_at", retailer_id)
            assert row is not None
            setting = change(ClockSetting(row[0], row[1]))
            if setting.is_wall:  # the default has no row
                await db.execute("DELETE FROM retailer_clocks WHERE retailer_id = ?", retailer_id)
            else:
                await db.execute(
                    "UPDATE retailer_clocks SET offset_seconds = ?, frozen_at = ? "
                    "WHERE retailer_id = ?", setting.offset, setting.frozen_at, retailer_id)
            return setting

        return await self.db.write(change_row)

    # faults ---------------------------------------------------------------------------------
    async def add_fault(self, rule: FaultRule, now: float) -> int:
        fault_id = await self._write_one(
            lambda row: int(row[0]),
            "INSERT INTO emulator_faults (retailer_id, client_id, endpoint, fault, times, "
            "every, probability, seed, retry_after, latency_ms, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            rule.retailer_id, rule.client_id, rule.endpoint, rule.fault, rule.times,
            rule.every, rule.probability, rule.seed, rule.retry_after, rule.latency_ms, now,
        )
        assert fault_id is not None
        return fault_id

    async def list_faults(self) -> list[FaultRule]:
        async with self.db.connection() as db:
            rows = await db.fetch(f"SELECT {_FAULT_COLUMNS} FROM emulator_faults ORDER BY id")
        return [_fault(row) for row in rows]

    async def delete_fault(self, fault_id: int) -> bool:
        return await self._execute("DELETE FROM emulator_faults WHERE id = ?", fault_id) > 0

    async def clear_faults(self) -> int:
        return await self._execute("DELETE FROM emulator_faults")

    async def live_faults(self) -> list[FaultRule]:
        async with self.db.connection() as db:
            rows = await db.fetch(
                f"SELECT {_FAULT_COLUMNS} FROM emulator_faults WHERE {_LIVE} ORDER BY id")
        return [_fault(row) for row in rows]

    async def match_fault(self, fault_id: int) -> FaultRule | None:
        return await self._write_one(
            _fault,
            f"UPDATE emulator_faults SET matched = matched + 1 WHERE id = ? AND {_LIVE} "
            f"RETURNING {_FAULT_COLUMNS}",
            fault_id,
        )

    async def fire_fault(self, fault_id: int) -> bool:
        # The condition is checked on the row as it stands once a racing firing has committed
        # (PostgreSQL re-reads it under the row lock; SQLite has one writer at a time).
        return await self._execute(
            f"UPDATE emulator_faults SET fired = fired + 1 WHERE id = ? AND {_LIVE}", fault_id
        ) > 0

    # the journal ----------------------------------------------------------------------------
    _INSERT_ENTRY = (
        f"INSERT INTO emulator_journal ({_JOURNAL_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    # The id of the retailer's (n + 1)-th newest entry, for OFFSET n (NULL if it has fewer): a
    # walk back along the (retailer_id, id) index, never a scan of the table.
    _NTH_NEWEST = (
        "(SELECT id FROM emulator_journal WHERE retailer_id = ? ORDER BY id DESC LIMIT 1 "
        "OFFSET ?)"
    )

    async def journal(self, entries: list[JournalEntry], keep: int) -> None:
        if keep <= 0 or not entries:
            return  # a journal that keeps nothing
        due: list[int] = []  # retailers whose journals are trimmed this time
        for entry in entries:
            count = self._journaled.get(entry.retailer_id, 0)
            self._journaled[entry.retailer_id] = count + 1
            if count % TRIM_EVERY == 0 and entry.retailer_id not in due:
                due.append(entry.retailer_id)  # the first insert too: a new worker tidies up
        async def write(db: Connection) -> None:
            await db.executemany(self._INSERT_ENTRY, [_entry_values(e) for e in entries])
            for retailer_id in due:
                await db.execute(
                    "DELETE FROM emulator_journal WHERE retailer_id = ? "
                    f"AND id <= {self._NTH_NEWEST}",
                    retailer_id, retailer_id, keep,
                )

        await self.db.write(write)

    async def raise_barrier(self) -> int:
        value = await self._write_one(
            lambda row: int(row[0]),
            "UPDATE emulator_barrier SET value = value + 1 WHERE id = 1 RETURNING value")
        assert value is not None, "migration 5 makes the barrier's row"
        return value

    async def barrier(self) -> int:
        async with self.db.connection() as db:
            row = await db.fetchrow("SELECT value FROM emulator_barrier WHERE id = 1")
        return int(row[0]) if row is not None else 0

    async def worker_seen(self, worker: str, barrier: int, now: float) -> None:
        await self._execute(
            "INSERT INTO emulator_workers (worker, heartbeat_at, barrier) VALUES (?, ?, ?) "
            "ON CONFLICT (worker) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, "
            "barrier = excluded.barrier", worker, now, barrier)

    async def worker_gone(self, worker: str) -> None:
        await self._execute("DELETE FROM emulator_workers WHERE worker = ?", worker)

    async def workers_behind(self, barrier: int, alive_since: float) -> int:
        async with self.db.connection() as db:
            row = await db.fetchrow(
                "SELECT count(*) FROM emulator_workers WHERE heartbeat_at >= ? AND barrier < ?",
                alive_since, barrier)
        return int(row[0]) if row is not None else 0

    async def read_journal(self, retailer_id: int, query: JournalQuery) -> list[JournalEntry]:
        where, args = ["retailer_id = ?"], [retailer_id]
        if query.keep is not None:  # among the newest ``keep``: none of those due for a trim
            if query.keep <= 0:
                return []
            where.append(f"id >= coalesce({self._NTH_NEWEST}, 0)")
            args += [retailer_id, query.keep - 1]
        for condition, value in _journal_filters(query):
            where.append(condition)
            args.append(value)
        async with self.db.connection() as db:
            rows = await db.fetch(
                f"SELECT {_JOURNAL_COLUMNS}, id FROM emulator_journal "
                f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                *args, query.limit,
            )
        return [_entry(row) for row in rows]

    # secrets by fingerprint, memberships ------------------------------------------------------
    async def find_secret(self, fingerprint: bytes) -> StoredSecret | None:
        span, bounds = _prefix_range(fingerprint)
        async with self.db.connection() as db:
            token = await db.fetchrow(
                "SELECT account_id, retailer_id, created_at, expires_at, consumed_at, revoked_at "
                f"FROM tokens WHERE {span} ORDER BY digest LIMIT 1",
                *bounds,
            )
            if token is not None:
                kind = LINKING_TOKEN if token[0] is not None else ACCESS_TOKEN
                return StoredSecret(kind, *token[1:])
            code = await db.fetchrow(
                "SELECT retailer_id, created_at, expires_at, consumed_at FROM authorization_codes "
                f"WHERE {span} ORDER BY digest LIMIT 1",
                *bounds,
            )
        return StoredSecret(AUTHORIZATION_CODE, *code) if code is not None else None

    async def change_membership(
        self, account_id: int, change: Callable[[float | None], float | None]
    ) -> InstacartAccount | None:
        async def change_row(db: Connection) -> Row | None:
            # An update that changes nothing, for the row lock it takes, as ``change_clock``.
            row = await db.fetchrow(
                "UPDATE instacart_accounts SET membership_expires_at = membership_expires_at "
                "WHERE id = ? RETURNING membership_expires_at", account_id)
            if row is None:
                return None
            return await db.fetchrow(
                "UPDATE instacart_accounts SET membership_expires_at = ? WHERE id = ? "
                f"RETURNING {ACCOUNT_COLUMNS}", change(row[0]), account_id)

        changed = await self.db.write(change_row)
        return records.account(changed) if changed is not None else None

    # snapshot, restore, reset -----------------------------------------------------------------
    async def snapshot(self) -> tuple[int, Tables]:
        tables: Tables = {}

        # A write transaction for its one view of the data (SQLite: BEGIN IMMEDIATE, no
        # writer meanwhile), though it writes nothing.
        async def read(db: Connection) -> Row | None:
            if self._postgres:  # one view of the data for every statement, not one each
                await db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            version = await db.fetchrow("SELECT max(version) FROM schema_migrations")
            for table in _STATE:
                rows = await db.fetch(f"SELECT {', '.join(table.columns)} FROM {table.name}")
                tables[table.name] = _dump(table, rows)
            return version

        version = await self.db.write(read)
        assert version is not None
        return int(version[0]), tables

    async def restore(self, tables: Tables) -> None:
        checked = _checked(tables)

        async def restore(db: Connection) -> None:
            await self._empty(db)
            for table, columns, rows in checked:
                if rows:
                    await db.executemany(self._insert(table, columns), rows)
            await self._renumber(db)

        try:
            await self.db.write(restore)
        except Exception as exc:  # rolled back: rows that break a rule of the schema
            if self.db.is_bad_data(exc):
                raise ValueError(f"the snapshot's rows break the schema: {exc}") from None
            raise

    async def reset(self) -> None:
        async def reset(db: Connection) -> None:
            await self._empty(db)
            await self._renumber(db)

        await self.db.write(reset)

    def _insert(self, table: _Table, columns: list[str]) -> str:
        # PostgreSQL generates an identity column's values unless told to take the ones given.
        override = " OVERRIDING SYSTEM VALUE" if self._postgres and table.identity else ""
        marks = ", ".join("?" for _ in columns)
        return f"INSERT INTO {table.name} ({', '.join(columns)}){override} VALUES ({marks})"

    async def _empty(self, db: Connection) -> None:
        """Delete the whole state, children first. On PostgreSQL, lock every table against
        writes until the transaction ends first (SQLite's BEGIN IMMEDIATE holds the whole
        database already): a write slipping in could leave a row of the old state among the
        new, or take an id that ``_renumber`` would then hand out a second time."""
        names = [*_OWNED, *(table.name for table in reversed(_STATE))]
        if self._postgres:
            await db.execute(f"LOCK TABLE {', '.join(names)} IN EXCLUSIVE MODE")
        for name in names:
            await db.execute(f"DELETE FROM {name}")

    async def _renumber(self, db: Connection) -> None:
        """On PostgreSQL, have every identity continue after the largest id now stored (from 1
        in an empty table), as SQLite's integer keys do by themselves: new rows after a restore
        or reset get the ids they would on either engine."""
        if not self._postgres:
            return
        for table in _STATE:
            if table.identity is not None:
                key = table.identity
                await db.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', '{key}'), "
                    f"coalesce(max({key}), 0) + 1, false) FROM {table.name}"
                )
