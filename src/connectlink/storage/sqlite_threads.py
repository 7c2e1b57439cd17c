"""The SQLite engine's two threads: the checkpointer, and the group-commit writer.

``sqlite.py`` is the engine; this module holds what runs beside the event loop, each on a
connection of its own. Neither thread touches the event loop but to answer it
(``call_soon_threadsafe``), and neither leaves a caller waiting: a write handed to a writer
that has stopped, or is stopping, is refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from connectlink.storage.engine import Connection, Write

CHECKPOINT_EVERY = 0.1  # seconds
RESTART_PAGES = 1_000  # WAL pages (4 KiB) past which the writer finishes a checkpoint
FINISH_PAGES = 250  # at most this many pages left for the writer to copy, or it is not asked
WAL_SIZE_LIMIT = 16 * 2**20  # bytes a WAL file is cut back to when it starts over, and
# (group commit) past which the writer finishes a checkpoint however far the checkpointer got
MAX_BATCH = 256  # writes in one group commit at most

T = TypeVar("T")


class Checkpointer(threading.Thread):
    """WAL checkpoints on a connection of its own, off the event loop's thread, that let the
    WAL start over.

    A passive checkpoint copies what the WAL holds without waiting for anyone, but under a
    steady stream of commits it never catches up with the WAL's end (frames arrive while it
    copies), so the WAL would never start over and would grow to the backstop. So this thread
    copies the bulk, in two passes (the second takes what came in during the first), and once
    the WAL holds ``RESTART_PAGES`` it asks the connection that writes to finish (``finish``,
    between two of its writes, while this thread stays out of its way): no write of this
    process can arrive while that one copies, so the copy completes, the next write starts the
    WAL over from its beginning, and ``journal_size_limit`` cuts the file back (with ``serve
    --workers N`` another process's writes may still slip in: then a later round does it).
    Where the writing connection is the event loop's (direct writes), it is asked only when at
    most ``FINISH_PAGES`` are left to copy, or when the WAL has grown four times as long.

    No checkpoint here waits on a writer: one that did (RESTART) made the event loop's next
    ``BEGIN IMMEDIATE`` sleep through SQLite's busy handler (1, 2, 5, 10 ms...), 25-40 ms
    stalls ten times a second.
    """

    def __init__(self, path: str, writer_off_loop: bool) -> None:
        super().__init__(name="sqlite-checkpointer", daemon=True)
        self.path = path
        self.writer_off_loop = writer_off_loop
        self.stopping = threading.Event()
        self.due = False  # the WAL is long: the writer is to finish the checkpoint
        self.restarts = 0  # checkpoints the writer completed, each letting the WAL start over

    def run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self.stopping.wait(CHECKPOINT_EVERY):
                self.round(db)
        finally:
            db.close()

    def round(self, db: sqlite3.Connection) -> None:
        if self.due:  # the writer's to finish: a checkpoint of ours would make it find one busy
            return
        with contextlib.suppress(sqlite3.Error):  # busy now: the next round will do
            frames = copied = 0
            for _ in range(2):
                _busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames >= RESTART_PAGES and (
                    self.writer_off_loop or frames - copied <= FINISH_PAGES
                    or frames >= 4 * RESTART_PAGES):
                self.due = True

    def finish(self, db: sqlite3.Connection) -> None:
        """On the writing connection, between two writes: copy the frames the last round left
        (a millisecond or two), which completes the checkpoint."""
        self.due = False
        with contextlib.suppress(sqlite3.Error):
            busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.restarts += not busy and frames > 0 and frames == copied

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)


def _run(body: Write[T], connection: Connection) -> T:
    """``body``, run to its end here and now: its statements never suspend it, so one step of
    its coroutine is the whole of it (and a coroutine that does suspend is a mistake)."""
    coroutine = body(connection)
    if not isinstance(coroutine, Coroutine):
        raise TypeError(f"a write is an async function, not {type(coroutine).__name__}")
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    coroutine.close()
    raise RuntimeError("a SQLite write may await nothing but its statements")


class Job:
    """One write handed to the writer, and how it went."""

    __slots__ = ("body", "cancelled", "error", "future", "result")

    def __init__(self, body: Write[Any], future: asyncio.Future[Any]) -> None:
        self.body: Write[Any] | None = body
        self.future: asyncio.Future[Any] | None = future
        self.result: Any = None
        self.error: BaseException | None = None
        self.cancelled = False  # its caller has gone: not to be run if not run yet


def _answer(jobs: list[Job]) -> None:
    """On the event loop: answer each job's caller (unless it has gone meanwhile), then let go
    of everything the job held, so that a failure's traceback (which holds the writer's frame,
    which holds the batch) makes no reference cycle."""
    for job in jobs:
        future = job.future
        if future is not None and not future.done():
            if job.error is not None:
                future.set_exception(job.error)
            else:
                future.set_result(job.result)
        job.body = job.future = job.result = job.error = None


def _own(exc: BaseException) -> BaseException:
    """A copy of a batch's failure for one of its writes: one exception object raised in many
    tasks would have its traceback rewritten by each."""
    try:
        copy = type(exc)(*exc.args)
    except Exception:  # an exception that cannot be made again: share it after all
        return exc
    copy.__cause__ = exc
    return copy


class Writer(threading.Thread):
    """Group commit: the writes that are waiting, in one transaction, a savepoint each."""

    def __init__(self, db: sqlite3.Connection, connection: Connection, wal: str,
                 checkpointer: Checkpointer) -> None:
        super().__init__(name="sqlite-writer", daemon=True)
        self._db = db
        self._connection = connection
        self._wal = wal  # the WAL file's path
        self._checkpointer = checkpointer
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._closing = False
        self.batches = 0  # commits made, for the tests and the benchmark
        self.jobs = 0

    def submit(self, job: Job) -> None:
        if self._closing or not self.is_alive():
            raise RuntimeError("the SQLite writer has stopped: no write is possible")
        self._jobs.put(job)

    def run(self) -> None:
        try:
            while (jobs := self._take()) is not None:
                try:
                    self._batch(jobs)
                except Exception as exc:  # a failure of this code: fail the batch, go on
                    for job in jobs:
                        job.error = _own(exc)
                self._answer(jobs)
                if self._checkpointer.due or self._wal_size() > WAL_SIZE_LIMIT:
                    # The second: the checkpointer has fallen behind (a torrent of writes, a
                    # starved thread). Tried after every batch until one completes: cheap
                    # while the checkpointer is busy copying (SQLite says so at once), and a
                    # WAL held back by a reader elsewhere costs an fsync a batch, no more.
                    self._checkpointer.finish(self._db)
        finally:
            self._refuse_leftovers()
            self._db.close()

    def _refuse_leftovers(self) -> None:
        """Whatever came in as the thread stopped: refused, not left waiting."""
        leftover = []
        with contextlib.suppress(queue.Empty):
            while True:
                job = self._jobs.get_nowait()
                if job is not None:
                    job.error = RuntimeError("the SQLite writer has stopped")
                    leftover.append(job)
        if leftover:
            self._answer(leftover)

    def _wal_size(self) -> int:
        try:
            return os.stat(self._wal).st_size
        except OSError:
            return 0

    def _take(self) -> list[Job] | None:
        """The next batch: the first write to come, and all that are waiting behind it."""
        first = self._jobs.get()
        if first is None:
            return None
        jobs = [first]
        while len(jobs) < MAX_BATCH:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._jobs.put(None)  # stop after this batch
                break
            jobs.append(job)
        return jobs

    def _batch(self, jobs: list[Job]) -> None:
        """Run ``jobs`` in one transaction and commit it. If SQLite gives up the transaction
        itself (disk full, an I/O error), every write done so far is gone with it: the one that
        failed gets its error, and the rest are run again in a new transaction."""
        pending = [job for job in jobs if not job.cancelled]
        for job in jobs:
            if job.cancelled:
                job.error = asyncio.CancelledError()
        while pending:
            db = self._db
            if db.in_transaction:  # a rollback that failed before: start clean
                db.execute("ROLLBACK")
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:  # another process held the write lock past the timeout
                for job in pending:
                    job.error = _own(exc)
                return
            lost = self._savepoints(pending)
            if lost is None:
                try:
                    db.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback()
                    for job in pending:
                        job.error, job.result = _own(exc), None
                return
            pending = [job for job in pending if job is not lost]
            for job in pending:
                job.error, job.result = None, None

    def _savepoints(self, jobs: list[Job]) -> Job | None:
        """Each job in a savepoint of its own; the job whose failure lost the whole transaction,
        if one did."""
        db = self._db
        for job in jobs:
            db.execute("SAVEPOINT job")
            try:
                assert job.body is not None
                job.result = _run(job.body, self._connection)
            except BaseException as exc:
                job.error = exc
                if not db.in_transaction:
                    return job
                db.execute("ROLLBACK TO job")
            else:
                if not db.in_transaction:  # the body went on after SQLite gave up: lost too
                    job.error = RuntimeError("the transaction was lost during this write")
                    job.result = None
                    return job
            db.execute("RELEASE job")
        return None

    def _rollback(self) -> None:
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def _answer(self, jobs: list[Job]) -> None:
        self.batches += 1
        self.jobs += len(jobs)
        by_loop: dict[asyncio.AbstractEventLoop, list[Job]] = {}
        for job in jobs:
            if job.future is not None:
                by_loop.setdefault(job.future.get_loop(), []).append(job)
        for loop, answered in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_answer, answered)

    def stop(self) -> None:
        self._closing = True
        self._jobs.put(None)
        self.join(10)
        self._refuse_leftovers()  # any that slipped in as the thread drained the queue
