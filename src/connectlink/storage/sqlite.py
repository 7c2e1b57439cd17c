"""The SQLite engine (stdlib ``sqlite3``, WAL) for ``SQLStore``.

Statements run on the event loop's thread: one on a local WAL database takes microseconds,
less than a hop to a worker thread would. A transaction never waits on anything but SQLite, so
no other coroutine can slip in between its statements; ``BEGIN IMMEDIATE`` takes the write
lock up front, which serialises writers across processes (``serve --workers N``).

Checkpoints (copying the WAL back into the database, with an fsync) run in a background thread
every half second rather than inside whichever request's commit crosses the threshold, so they
stay off the request path; the automatic checkpoint remains as a backstop at 40 MB of WAL. A
long run of writes (a retention sweep's batches, some 2 MB of WAL each) never leaves the WAL
fully copied back, so the WAL never restarts and grows to the backstop, whose checkpoint (60-70
ms with its fsyncs) lands in a commit on the event loop's thread: ``settle`` checkpoints at
once, on a thread, between such writes.

Durability: ``synchronous=NORMAL`` in WAL mode survives a crash of the process (the commit is in
the WAL before the response is written); a power cut may lose the last commits. Set
``CONNECTLINK_SQLITE_SYNCHRONOUS=FULL`` to fsync every commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from connectlink.errors import ServiceUnavailable
from connectlink.storage.errors import DatabaseUnreachable
from connectlink.storage.migrations import statements
from connectlink.storage.records import Row
from connectlink.storage.sql import SQLStore

CHECKPOINT_EVERY = 0.5  # seconds
AUTOCHECKPOINT_PAGES = 10_000  # the backstop, should the checkpointer fall behind
# How long a writer waits for another process's write lock before answering 503.
BUSY_TIMEOUT_MS = int(os.environ.get("CONNECTLINK_SQLITE_BUSY_TIMEOUT_MS", "5000"))


def path_from_url(url: str) -> str:
    """``sqlite:///var/db.sqlite`` -> ``var/db.sqlite``; ``sqlite:////abs`` -> ``/abs``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or not url[len(prefix):].strip("/"):
        # An empty path (an unset variable in "sqlite:///$DB") would be SQLite's private
        # temporary database: everything written to it gone when the command ends.
        raise ValueError(f"not a SQLite URL with a path: {url!r} (expected sqlite:///path/to.db)")
    return url[len(prefix):]


class SQLiteConnection:
    __slots__ = ("_db", "path")

    def __init__(self, db: sqlite3.Connection, path: str) -> None:
        self._db = db
        self.path = path

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = self._db.execute(sql, args).fetchone()
        return row

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return self._db.execute(sql, args).fetchall()

    async def execute(self, sql: str, *args: Any) -> int:
        return self._db.execute(sql, args).rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    async def script(self, sql: str) -> None:
        for statement in statements(sql):
            self._db.execute(statement)


def _busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc)
    return "locked" in message or "busy" in message


class Checkpointer(threading.Thread):
    """Passive WAL checkpoints on a connection of its own, off the event loop's thread."""

    def __init__(self, path: str) -> None:
        super().__init__(name="sqlite-checkpointer", daemon=True)
        self.path = path
        self.stopping = threading.Event()

    def run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self.stopping.wait(CHECKPOINT_EVERY):
                with contextlib.suppress(sqlite3.Error):  # busy now: the next round will do
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)


def _checkpoint(path: str) -> None:
    """One passive checkpoint, on a connection of its own (for a thread of the caller's)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        with contextlib.suppress(sqlite3.Error):  # busy: the checkpointer is at it already
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        db.close()


def _unavailable(exc: BaseException | None, path: str) -> None:
    """Another process held the write lock past the busy timeout: 503, try again later. A file
    that cannot be written is a setup mistake, said as one."""
    if isinstance(exc, sqlite3.OperationalError) and _busy(exc):
        raise ServiceUnavailable() from exc
    cause = _setup_problem(exc)
    if cause is not None:
        raise DatabaseUnreachable(f"sqlite:///{path}", cause) from exc


# What SQLite says when a path is wrong, and what the operator should hear.
_SETUP_PROBLEMS = {
    "unable to open database file": "it cannot be opened or created there (is it a directory, "
                                    "or its directory not writable?)",
    "attempt to write a readonly database": "the file is read-only",
    "file is not a database": "the file is not a SQLite database",
    "disk i/o error": "disk I/O error",
}


def _setup_problem(exc: BaseException | None) -> str | None:
    if isinstance(exc, sqlite3.DatabaseError):
        return _SETUP_PROBLEMS.get(str(exc).lower())
    return None


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    """The connection, set up; a path that cannot hold a database is ``DatabaseUnreachable``
    naming it, not a traceback from deep inside sqlite3."""
    url = f"sqlite:///{path}"
    if path != ":memory:":
        parent = Path(path).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise DatabaseUnreachable(url, f"{parent} is not a directory") from exc
        except OSError as exc:
            raise DatabaseUnreachable(
                url, f"its directory {parent} cannot be created ({exc.strerror or exc})"
            ) from exc
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.DatabaseError as exc:
        raise DatabaseUnreachable(url, _setup_problem(exc) or str(exc)) from exc
    try:
        for pragma in (
            f"busy_timeout = {BUSY_TIMEOUT_MS}",
            "journal_mode = WAL",
            f"synchronous = {synchronous}",
            "foreign_keys = ON",
            f"wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}",
        ):
            db.execute(f"PRAGMA {pragma}")
    except sqlite3.DatabaseError as exc:
        db.close()
        raise DatabaseUnreachable(url, _setup_problem(exc) or str(exc)) from exc
    return db


class _Autocommit:
    """``async with engine.connection()``: single statements; a class, not a generator, since
    it wraps every query on the hot path."""

    __slots__ = ("_connection",)

    def __init__(self, connection: SQLiteConnection) -> None:
        self._connection = connection

    async def __aenter__(self) -> SQLiteConnection:
        return self._connection

    async def __aexit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        _unavailable(exc, self._connection.path)


class _Transaction:
    """``async with engine.transaction()``: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error."""

    __slots__ = ("_connection", "_db")

    def __init__(self, db: sqlite3.Connection, connection: SQLiteConnection) -> None:
        self._db = db
        self._connection = connection

    async def __aenter__(self) -> SQLiteConnection:
        if self._db.in_transaction:  # only an await on something else could cause this
            raise RuntimeError("a SQLite transaction may not wait on other work")
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            _unavailable(exc, self._connection.path)
            raise
        return self._connection

    async def __aexit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self._rollback()
            _unavailable(exc, self._connection.path)
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as failed:
            self._rollback()
            _unavailable(failed, self._connection.path)
            raise

    def _rollback(self) -> None:
        if self._db.in_transaction:  # some errors make SQLite roll back by itself
            self._db.execute("ROLLBACK")


class SQLiteEngine:
    name = "sqlite"

    def __init__(self, path: str) -> None:
        synchronous = os.environ.get("CONNECTLINK_SQLITE_SYNCHRONOUS", "NORMAL").upper()
        if synchronous not in {"NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"CONNECTLINK_SQLITE_SYNCHRONOUS={synchronous!r}")
        self._db = _connect(path, synchronous)
        connection = SQLiteConnection(self._db, path)
        self._transaction = _Transaction(self._db, connection)
        self._autocommit = _Autocommit(connection)
        self._checkpointer: Checkpointer | None = None
        if path != ":memory:":
            self._checkpointer = Checkpointer(path)
            self._checkpointer.start()

    def transaction(self) -> _Transaction:
        return self._transaction

    def connection(self) -> _Autocommit:
        return self._autocommit

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)

    def is_bad_data(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError | OverflowError)

    async def table_exists(self, db: Any, name: str) -> bool:
        row = await db.fetchrow(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", name
        )
        return row is not None

    async def is_empty(self, db: Any) -> bool:
        return await db.fetchrow("SELECT 1 FROM sqlite_master LIMIT 1") is None

    async def lock_migrations(self, db: Any) -> None:
        """``BEGIN IMMEDIATE`` already holds the database's one write lock."""

    async def settle(self) -> None:
        """Copy the WAL back now, on a thread, while the event loop serves requests."""
        if self._checkpointer is not None:
            await asyncio.to_thread(_checkpoint, self._checkpointer.path)

    def connections_in_use(self) -> int | None:
        return None  # one connection, and no transaction outlives a step of the event loop

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self._db.close()


def open_sqlite(url: str) -> SQLStore:
    return SQLStore(SQLiteEngine(path_from_url(url)))
