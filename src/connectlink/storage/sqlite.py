"""The SQLite engine (stdlib ``sqlite3``, WAL) for ``SQLStore``.

Statements run on the event loop's thread: one on a local WAL database takes microseconds,
less than a hop to a worker thread would. A transaction never waits on anything but SQLite, so
no other coroutine can slip in between its statements; ``BEGIN IMMEDIATE`` takes the write
lock up front, which serialises writers across processes (``serve --workers N``).

Durability: ``synchronous=NORMAL`` in WAL mode survives a crash of the process (the commit is in
the WAL before the response is written); a power cut may lose the last commits. Set
``CONNECTLINK_SQLITE_SYNCHRONOUS=FULL`` to fsync every commit.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from connectlink.errors import ServiceUnavailable
from connectlink.storage.migrations import Migration
from connectlink.storage.records import Row
from connectlink.storage.sql import SQLStore

# How long a writer waits for another process's write lock before answering 503.
BUSY_TIMEOUT_MS = int(os.environ.get("CONNECTLINK_SQLITE_BUSY_TIMEOUT_MS", "5000"))


def path_from_url(url: str) -> str:
    """``sqlite:///var/db.sqlite`` -> ``var/db.sqlite``; ``sqlite:////abs`` -> ``/abs``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:///path/to.db)")
    return url[len(prefix):]


class SQLiteConnection:
    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = self._db.execute(sql, args).fetchone()
        return row

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return self._db.execute(sql, args).fetchall()

    async def execute(self, sql: str, *args: Any) -> int:
        return self._db.execute(sql, args).rowcount

    async def script(self, sql: str) -> None:
        for statement in Migration(0, "", sql).statements():
            self._db.execute(statement)


def _busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc)
    return "locked" in message or "busy" in message


class SQLiteEngine:
    name = "sqlite"

    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        synchronous = os.environ.get("CONNECTLINK_SQLITE_SYNCHRONOUS", "NORMAL").upper()
        if synchronous not in {"NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"CONNECTLINK_SQLITE_SYNCHRONOUS={synchronous!r}")
        for pragma in (
            f"busy_timeout = {BUSY_TIMEOUT_MS}",
            "journal_mode = WAL",
            f"synchronous = {synchronous}",
            "foreign_keys = ON",
        ):
            self._db.execute(f"PRAGMA {pragma}")
        self._connection = SQLiteConnection(self._db)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SQLiteConnection]:
        if self._db.in_transaction:  # only an await on something else could cause this
            raise RuntimeError("a SQLite transaction may not wait on other work")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if _busy(exc):  # another process held the write lock past the busy timeout
                raise ServiceUnavailable() from exc
            raise

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[SQLiteConnection]:
        try:
            yield self._connection
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                raise ServiceUnavailable() from exc
            raise

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)

    async def table_exists(self, db: Any, name: str) -> bool:
        row = await db.fetchrow(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", name
        )
        return row is not None

    async def lock_migrations(self, db: Any) -> None:
        """``BEGIN IMMEDIATE`` already holds the database's one write lock."""

    async def close(self) -> None:
        self._db.close()


def open_sqlite(url: str) -> SQLStore:
    return SQLStore(SQLiteEngine(path_from_url(url)))
