"""The PostgreSQL engine (asyncpg: a pool, prepared statements) for ``SQLStore``.

Rules hold under concurrency because PostgreSQL enforces them: a conditional ``UPDATE`` takes the
row lock and re-checks its condition once a racing transaction commits, and the unique index
on ``links`` makes the second of two racing links fail. Losing the database (restart, cut
connections) surfaces as ``ServiceUnavailable`` (503, code 2003), and the pool reconnects by
itself once the database is back.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import cache
from typing import Any, TypeVar

import asyncpg

from connectlink.errors import ServiceUnavailable
from connectlink.models import LinkOutcome
from connectlink.storage.engine import Write
from connectlink.storage.errors import DatabaseUnreachable
from connectlink.storage.records import Row
from connectlink.storage.sql import SQLStore

CONNECT_TIMEOUT = 5.0
# No timeout on pool.acquire(): asyncpg implements it with wait_for, a task per request (a tenth
# of the link path's time). Waits stay bounded all the same: a new connection gives up after
# CONNECT_TIMEOUT, and a busy one frees up within COMMAND_TIMEOUT.
COMMAND_TIMEOUT = 30.0
T = TypeVar("T")
_MIGRATIONS_LOCK = 0x636C6E6B  # "clnk": one advisory lock for schema upgrades

# Errors that mean "the database is not there right now", not "the request is wrong".
UNAVAILABLE = (
    OSError,  # refused, reset, and TimeoutError
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, restart, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    asyncpg.exceptions.TransactionRollbackError,  # deadlock or serialization: try again
    asyncpg.InterfaceError,  # the connection closed under us
    # A session the server ended (a restart, a failover, pg_terminate_backend) while the
    # connection sat idle in the pool: its FATAL arrives first, and the next statement on it
    # fails with "cannot switch to state 12; another operation (2) is in progress". Measured:
    # 16 of 100 requests after such ends answered 500 before this was here.
    asyncpg.InternalClientError,
)


@cache
def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...``."""
    counter = iter(range(1, 1000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


def _count(status: str) -> int:
    """Rows touched, from a command tag such as ``INSERT 0 1`` or ``UPDATE 3``."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _why_not_connected(exc: OSError) -> str:
    """``ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")`` -> "connection
    refused (is PostgreSQL running there?)"."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is PostgreSQL running there?)"
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:g} seconds"
    return exc.strerror or str(exc) or type(exc).__name__


async def _nothing_to_reset(connection: asyncpg.Connection) -> None:
    """Replaces asyncpg's reset on release (``RESET ALL``, ``UNLISTEN *``, advisory unlock,
    ``CLOSE ALL``): a round trip per query on the hot path, for session state this code never
    leaves behind (no SET, LISTEN, session locks or cursors; every transaction is closed by its
    ``async with``)."""


class PostgresConnection:
    __slots__ = ("_conn",)

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = await self._conn.fetchrow(numbered(sql), *args)
        return row

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return list(await self._conn.fetch(numbered(sql), *args))

    async def execute(self, sql: str, *args: Any) -> int:
        return _count(await self._conn.execute(numbered(sql), *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(numbered(sql), rows)

    async def script(self, sql: str) -> None:
        await self._conn.execute(sql)


class PostgresEngine:
    name = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, pool_size: int) -> PostgresEngine:
        """The pool, its first connections made: a database or role that does not exist, a
        wrong password or a server that does not answer is ``DatabaseUnreachable`` at once."""
        try:
            pool = await asyncpg.create_pool(
                url, min_size=min(2, pool_size), max_size=pool_size, timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                server_settings={"application_name": "connectlink"}, reset=_nothing_to_reset,
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseUnreachable(url, str(exc)) from exc
        except OSError as exc:  # refused, unknown host, timed out
            raise DatabaseUnreachable(url, _why_not_connected(exc)) from exc
        # A search_path naming no schema that exists would fail every statement later, with
        # "no schema has been selected to create in" at the first migration: say so now.
        if await pool.fetchval("SELECT current_schema()") is None:
            await pool.close()
            raise DatabaseUnreachable(url, "its search_path names no schema that exists "
                                           "(create it first: CREATE SCHEMA ...)")
        return cls(pool)

    async def write(self, body: Write[T], *, atomic: bool = True) -> T:
        if not atomic:
            async with self.connection() as db:
                return await body(db)
        async with self.transaction() as db:
            return await body(db)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresConnection]:
        try:
            async with self._pool.acquire() as conn:
                try:
                    async with conn.transaction():
                        yield PostgresConnection(conn)
                except asyncpg.InternalClientError:
                    conn.terminate()  # broken for good: the pool opens a new one in its place
                    raise
        except UNAVAILABLE as exc:
            raise ServiceUnavailable() from exc

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[PostgresConnection]:
        try:
            async with self._pool.acquire() as conn:
                try:
                    yield PostgresConnection(conn)
                except asyncpg.InternalClientError:
                    conn.terminate()  # as in ``transaction``
                    raise
        except UNAVAILABLE as exc:
            raise ServiceUnavailable() from exc

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, asyncpg.UniqueViolationError)

    def is_bad_data(self, exc: BaseException) -> bool:
        # (a lone surrogate cannot be encoded to be sent at all)
        return isinstance(exc, asyncpg.IntegrityConstraintViolationError | asyncpg.DataError
                          | OverflowError | UnicodeEncodeError)

    async def table_exists(self, db: Any, name: str) -> bool:
        row = await db.fetchrow("SELECT to_regclass(CAST(? AS TEXT)) IS NOT NULL", name)
        return bool(row and row[0])

    async def is_empty(self, db: Any) -> bool:
        row = await db.fetchrow(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'S') "
            "LIMIT 1"
        )
        return row is None

    async def lock_migrations(self, db: Any) -> None:
        await db.execute("SELECT pg_advisory_xact_lock(CAST(? AS BIGINT))", _MIGRATIONS_LOCK)

    async def settle(self) -> None:
        """Nothing to do: the server checkpoints by itself, off every connection's path."""

    async def close(self) -> None:
        await self._pool.close()

    def connections_in_use(self) -> int | None:
        in_use: int = self._pool.get_size() - self._pool.get_idle_size()
        return in_use


# The whole link in one statement, so one round trip: data-modifying CTEs run exactly once and
# the statement is atomic. ``FOR UPDATE`` on the user orders it against a racing privacy
# request; the unique index on links rejects a second Connect user for the same account.
LINK = """
WITH u AS (
    SELECT pk, active FROM connect_users
    WHERE retailer_id = $1 AND user_id = $2 AND (purge_after IS NULL OR purge_after > $3)
    FOR UPDATE
), tok AS (
    UPDATE tokens SET consumed_at = $3
    WHERE digest = $4 AND retailer_id = $1 AND account_id IS NOT NULL AND consumed_at IS NULL
      AND revoked_at IS NULL AND expires_at > $3 AND EXISTS (SELECT 1 FROM u WHERE active)
    RETURNING account_id
), prev AS (
    SELECT l.account_id FROM links l JOIN u ON l.connect_user_pk = u.pk
), ins AS (
    INSERT INTO links (connect_user_pk, retailer_id, account_id, linked_at, banner)
    SELECT u.pk, $1, tok.account_id, $3, CAST($5 AS TEXT) FROM u, tok
    ON CONFLICT (connect_user_pk) DO UPDATE SET account_id = excluded.account_id,
        linked_at = excluded.linked_at, banner = excluded.banner
    RETURNING account_id
), aud AS (
    INSERT INTO audit_events (retailer_id, occurred_at, action, user_id, account_id, detail)
    SELECT $1, $3,
        CASE WHEN p.account_id IS NULL THEN 'link'
             WHEN p.account_id = ins.account_id THEN 'relink' ELSE 'replace' END,
        $2, ins.account_id,
        NULLIF(json_strip_nulls(json_build_object(
            'replaced_account_id',
            CASE WHEN p.account_id <> ins.account_id THEN p.account_id END,
            'banner', CAST($5 AS TEXT)))::text, '{}')
    FROM ins LEFT JOIN prev p ON true
    RETURNING action
)
SELECT (SELECT pk FROM u), (SELECT active FROM u), (SELECT account_id FROM tok),
       (SELECT action FROM aud)
"""


class PostgresStore(SQLStore):
    """``SQLStore`` with the link path in one round trip, and batches deleted by row address."""

    @staticmethod
    def _delete_batch(table: str, key: str, due: str) -> str:
        # ``key IN (SELECT ... LIMIT n)`` plans as a hash join over a scan of the whole table;
        # an array of row addresses is a TID scan of those n rows and nothing else.
        return (f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
                f"SELECT ctid FROM {table} WHERE {due} LIMIT ?))")

    async def link(
        self, retailer_id: int, user_id: str, token_digest: bytes, now: float,
        banner: str | None,
    ) -> LinkOutcome:
        try:
            row = await self.db.write(
                lambda db: db.fetchrow(LINK, retailer_id, user_id, now, token_digest, banner),
                atomic=False)  # one statement, atomic by itself
        except asyncpg.UniqueViolationError:  # the isolation rule, enforced by the index
            return LinkOutcome.ACCOUNT_TAKEN
        assert row is not None
        user_pk, active, account_id, action = row
        if user_pk is None:
            return LinkOutcome.USER_NOT_FOUND
        if not active:
            return LinkOutcome.USER_INACTIVE
        if account_id is None:
            return LinkOutcome.TOKEN_INVALID
        return LinkOutcome(action)


async def open_postgres(url: str, pool_size: int = 10) -> PostgresStore:
    return PostgresStore(await PostgresEngine.connect(url, pool_size))
