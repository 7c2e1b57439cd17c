"""What an engine gives the SQL store: connections, transactions, and the few answers that
differ between SQLite and PostgreSQL. ``sqlite.py`` and ``postgres.py`` implement ``Engine``;
``SQLBase`` is what every part of the SQL store (``retailers.py``, ``sql.py``) stands on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

from connectlink.storage.records import Row

T = TypeVar("T")


class Connection(Protocol):
    """One connection, inside a transaction or in autocommit."""

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it touched."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run a statement once for each row of arguments, in one call (a restore's inserts:
        one round trip per batch, not per row)."""
        ...

    async def script(self, sql: str) -> None:
        """Run a migration file's statements."""
        ...


# A write: statements on the connection it is given, and nothing else awaited (an engine may
# run it on a thread of its own, where there is no event loop).
Write = Callable[[Connection], Awaitable[T]]


class Engine(Protocol):
    name: str

    def write(self, body: Write[T], *, atomic: bool = True) -> Awaitable[T]:
        """Run ``body`` as one write transaction, committed before this returns; an exception
        from ``body`` rolls back what it did and is raised here. ``atomic=False``: ``body`` is
        a single statement, which needs no transaction of its own (on PostgreSQL, two round
        trips fewer). An engine may group the writes that arrive together into one commit
        (SQLite's group commit), each still undone alone if it fails."""
        ...

    def connection(self) -> AbstractAsyncContextManager[Connection]:
        """A connection in autocommit, for reads (every write goes through ``write``)."""
        ...

    def is_unique_violation(self, exc: BaseException) -> bool: ...

    def is_bad_data(self, exc: BaseException) -> bool:
        """Did the database refuse the values written (a constraint, a type's range)?"""
        ...

    async def table_exists(self, db: Connection, name: str) -> bool: ...

    async def is_empty(self, db: Connection) -> bool:
        """Does the database (PostgreSQL: the schema tables are created in) hold nothing at all?
        Only such a database gets the schema without being asked (``Schema`` "create")."""
        ...

    async def lock_migrations(self, db: Connection) -> None:
        """Keep concurrent upgrades (several workers) from applying a migration twice."""
        ...

    async def settle(self) -> None:
        """Between the batches of a long run of writes (a retention sweep): let the database
        absorb what was written, off the event loop's thread (SQLite: a WAL checkpoint)."""
        ...

    async def close(self) -> None: ...

    def connections_in_use(self) -> int | None:
        """Connections of its pool handed out right now; None without a pool."""
        ...


class SQLBase:
    """The engine a store runs on, and the one way to read a single record."""

    def __init__(self, engine: Engine) -> None:
        self.db = engine
        self.engine = engine.name

    async def close(self) -> None:
        await self.db.close()

    def connections_in_use(self) -> int | None:
        return self.db.connections_in_use()

    def refuses_values(self, exc: BaseException) -> bool:
        return self.db.is_bad_data(exc)

    async def _one(self, record: Callable[[Row], T], sql: str, *args: Any) -> T | None:
        async with self.db.connection() as db:
            row = await db.fetchrow(sql, *args)
        return record(row) if row is not None else None

    async def _write_one(self, record: Callable[[Row], T], sql: str, *args: Any) -> T | None:
        """A single statement that writes, and the record of the row it returns, if any."""
        row = await self.db.write(lambda db: db.fetchrow(sql, *args), atomic=False)
        return record(row) if row is not None else None

    def _execute(self, sql: str, *args: Any) -> Awaitable[int]:
        """A single statement that writes; the number of rows it touched."""
        return self.db.write(lambda db: db.execute(sql, *args), atomic=False)
