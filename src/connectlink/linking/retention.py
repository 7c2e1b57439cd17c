"""Retention: what the store no longer needs goes, in short batches, one sweeper at a time
across every worker and host (the serving processes every ``CONNECTLINK_SWEEP_INTERVAL``
seconds, ``connectlink db sweep`` by hand).

What goes, and when:

- **Tokens and authorization codes whose expiry is more than a day ago** (``GRACE``), whatever
  else happened to them: a revoked or used one waits for that day too. A used code must be
  remembered through its 10-minute life, so that presenting it again is seen as reuse and
  revokes the linking token it produced (decisions.md "Codes and linking tokens"); a day after
  the code expired, that linking token (24 hours from the exchange, which came within the
  code's life) has expired too, and a code that is gone is refused as ``invalid_grant`` as a
  used one is. So every rule answers as it did before the sweep, and one rule on one indexed
  column (``expires_at``) covers every row, with a day's margin for clocks that disagree.
- **Connect users past their privacy retention** (``purge_after``, set by the privacy
  request): no caller has seen them since that moment (every read asks for
  ``purge_after > now``); the sweep removes the rows. Their links went with the privacy
  request; the audit trail, which names users by id, stays.

How: ``Store.sweep`` removes one batch of each, each a short transaction (and on SQLite then
checkpoints the WAL on a thread, so the WAL never grows to the checkpoint that would run inside
a commit); ``Sweeper.sweep`` repeats it until a round leaves nothing behind, and pauses after
each round for as long as the round took, so the sweeper never has more than half of the event
loop (on SQLite the store's statements run on the loop's thread) nor, on PostgreSQL, of a
connection. It holds the lease ``retention`` meanwhile: a row with its holder and an expiry,
renewed as it goes, so a sweeper that dies stops holding it within ``LEASE_TTL`` seconds.
Lease times are the app's clock, like every expiry here; hosts whose clocks disagree by more
than half the lease may now and then sweep two at once, which costs work and breaks nothing
(every delete is of what is due, and idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass

from connectlink.clock import Clock
from connectlink.errors import ServiceUnavailable
from connectlink.models import Lease, SweepCounts
from connectlink.storage.base import Store

log = logging.getLogger("connectlink.retention")

LEASE = "retention"
GRACE = 86_400.0  # seconds past its expiry a token or code is kept
LEASE_TTL = 60.0  # seconds a sweeper that stops renewing (it died) keeps others out
# Rows a statement. SQLite deletes on the event loop's thread, so a batch is a pause in serving:
# 500 tokens (random keys: some 500 pages, 2 MB of WAL) hold the loop about 4-5 ms on a 2-core
# machine, 5,000 about 40 ms. PostgreSQL's statements wait off the loop (bench/sweep.py).
BATCH = {"sqlite": 500, "postgres": 5_000}


class SweepUnderWay(Exception):
    """Another sweeper holds the lease: ``lease`` says who, and until when."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(f"another sweep is under way ({lease.holder})")
        self.lease = lease


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What a sweep removed, in how many rounds (a batch of each kind a round) and seconds."""

    removed: SweepCounts
    rounds: int
    seconds: float
    complete: bool = True  # False: the lease was lost midway, another sweeper took over


def holder_name() -> str:
    """Who a lease names: host and process, to find it; random, to tell two apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Sweeper:
    """Sweeps ``store`` by ``clock``'s time, as ``holder`` (default: a name of its own)."""

    def __init__(self, store: Store, clock: Clock, *, batch: int | None = None,
                 holder: str | None = None) -> None:
        self.store, self.clock = store, clock
        self.batch = batch or BATCH.get(store.engine, min(BATCH.values()))
        self.holder = holder or holder_name()

    async def sweep(self) -> SweepReport:
        """Remove everything due, a round at a time, until a round leaves nothing behind;
        ``SweepUnderWay`` if another sweeper holds the lease."""
        started = time.monotonic()
        try:
            lease = await self._hold(self.clock.now())
        except BaseException:  # cut short (shutdown): it may have been taken all the same
            await self._let_go()
            raise
        if lease.holder != self.holder:
            raise SweepUnderWay(lease)
        try:
            removed, rounds, complete = await self._rounds(lease)
        finally:  # at shutdown too, so that the next worker need not wait for it to expire
            await self._let_go()
        return SweepReport(removed, rounds, time.monotonic() - started, complete)

    async def _rounds(self, lease: Lease) -> tuple[SweepCounts, int, bool]:
        """What the rounds removed, how many there were, and whether they got to the end."""
        removed, rounds = SweepCounts(), 0
        while True:
            round_started = time.monotonic()
            now = self.clock.now()
            counts = await self.store.sweep(now, GRACE, self.batch)
            removed, rounds = removed + counts, rounds + 1
            if counts.most() < self.batch:
                return removed, rounds, True
            await asyncio.sleep(time.monotonic() - round_started)
            if now > lease.expires_at - LEASE_TTL / 2:  # renew while half of it is left
                lease = await self._hold(self.clock.now())
                if lease.holder != self.holder:
                    log.warning("sweep: %s took the lease; stopping", lease.holder)
                    return removed, rounds, False

    async def _let_go(self) -> None:
        with contextlib.suppress(Exception):  # it expires by itself anyway
            await self.store.release_lease(LEASE, self.holder)

    async def _hold(self, now: float) -> Lease:
        return await self.store.take_lease(LEASE, self.holder, now, now + LEASE_TTL)


def describe(report: SweepReport) -> str:
    """The sweep as one line, for the log."""
    removed = report.removed
    return (f"sweep: removed {_many(removed.tokens, 'token')} and "
            f"{_many(removed.codes, 'authorization code')} expired more than a day ago, and "
            f"{_many(removed.users, 'Connect user')} past their privacy retention "
            f"({_many(report.rounds, 'round')}, {report.seconds:.2f} s"
            f"{'' if report.complete else '; stopped: another sweeper took over'})")


def _many(count: int, thing: str) -> str:
    return f"{count} {thing}{'' if count == 1 else 's'}"


class Background:
    """A sweep every ``interval`` seconds in this process, from ``start`` until ``stop``; the
    first one ``interval`` seconds after the start. Each worker runs one, and the lease lets
    one sweep at a time; the others find it taken and wait for their next turn."""

    def __init__(self, sweeper: Sweeper, interval: float) -> None:
        self.sweeper, self.interval = sweeper, interval
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="connectlink-sweep")

    async def stop(self) -> None:
        """Cancel the sweep, midway if it is under way (each batch is its own transaction, so
        nothing is left half done), and wait for it to end."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.sweep_once()

    async def sweep_once(self) -> SweepReport | None:
        """One sweep, logged; a failure is logged too, and the next turn tries again."""
        try:
            report = await self.sweeper.sweep()
        except SweepUnderWay as busy:
            log.debug("sweep: skipped, %s holds the lease", busy.lease.holder)
            return None
        except ServiceUnavailable:
            log.warning("sweep: the database is unavailable; trying again in %g s",
                        self.interval)
            return None
        except Exception:
            log.exception("sweep: failed; trying again in %g s", self.interval)
            return None
        log.info("%s", describe(report))
        return report
