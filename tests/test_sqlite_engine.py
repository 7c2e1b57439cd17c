"""The SQLite engine's two ways of writing, and its checkpoints, against real database files.

- Group commit: concurrent writes share one commit, each in its own savepoint (a refusal or a
  failure undoes only itself), every caller is answered after the commit, and the event loop's
  connection cannot write at all.
- Checkpoints: under a steady stream of writes the WAL starts over again and again, so it stays
  bounded, in either way of writing.

Group commit is the default, so every SQLite test of the suite runs on it; the rules of the API
under races, ``kill -9`` and outages also run against direct writes in ``test_races.py`` and
``test_resilience.py`` (the ``sqlite-direct`` engine of ``database_url``).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from connectlink import security
from connectlink.clock import SystemClock
from connectlink.linking import retailers
from connectlink.models import ACCOUNT_LINKING, AccessToken, LinkOutcome, UserFields
from connectlink.storage import migrations
from connectlink.storage.engine import Connection
from connectlink.storage.sql import SQLStore
from connectlink.storage.sqlite import AUTOCHECKPOINT_PAGES, SQLiteEngine
from connectlink.storage.sqlite_threads import WAL_SIZE_LIMIT, Writer
from support import run_sync

DAY = 86_400.0


async def _store(path: Path, group_commit: bool) -> SQLStore:
    store = SQLStore(SQLiteEngine(str(path), group_commit=group_commit))
    await migrations.upgrade(store)
    return store


def _writer(store: SQLStore) -> Writer:
    engine = store.db
    assert isinstance(engine, SQLiteEngine) and engine.writer is not None
    return engine.writer


class Shop:
    """A retailer, and linking tokens for accounts of their own."""

    def __init__(self, store: SQLStore, retailer_id: int, client_pk: int) -> None:
        self.store, self.retailer_id, self.client_pk = store, retailer_id, client_pk
        self.now = time.time()
        self.accounts = 0

    @classmethod
    async def create(cls, store: SQLStore) -> Shop:
        shop = await retailers.create(store, SystemClock(), "Shop", ["https://shop.example/cb"])
        return cls(store, shop.retailer.id, shop.client.pk)

    async def account(self) -> int:
        self.accounts += 1
        account = await self.store.create_instacart_account(
            f"a{self.accounts}@example.com", "+18005550100", "-", None, self.now)
        assert account is not None
        return account.id

    async def token(self, account_id: int) -> bytes:
        digest = security.digest(security.new_secret())
        await self.store.save_token(AccessToken(
            digest, self.client_pk, self.retailer_id, frozenset({ACCOUNT_LINKING}), self.now,
            self.now + DAY, account_id=account_id))
        return digest

    async def user(self, user_id: str) -> None:
        await self.store.upsert_connect_user(self.retailer_id, UserFields(user_id, "U"), self.now)

    def link(self, user_id: str, digest: bytes) -> Any:
        return self.store.link(self.retailer_id, user_id, digest, self.now, None)


def _consumed(path: Path, digest: bytes) -> bool:
    """Read on a connection of its own: what is committed, not what one connection sees."""
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT consumed_at FROM tokens WHERE digest = ?", (digest,)).fetchone()
    return row is not None and row[0] is not None


def test_concurrent_links_share_commits_and_each_gets_its_own_outcome(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _store(tmp_path / "group.db", group_commit=True)
        try:
            shop = await Shop.create(store)
            pairs = []
            for n in range(200):
                await shop.user(f"u{n}")
                pairs.append((f"u{n}", await shop.token(await shop.account())))
            writer = _writer(store)
            batches_before, jobs_before = writer.batches, writer.jobs
            outcomes = await asyncio.gather(*(shop.link(user, token) for user, token in pairs))
            assert outcomes == [LinkOutcome.LINKED] * 200
            assert writer.jobs - jobs_before == 200
            assert writer.batches - batches_before < 200 / 4  # grouped, not one commit each
            assert all(_consumed(tmp_path / "group.db", token) for _, token in pairs)
        finally:
            await store.close()

    run_sync(go())


def test_a_refused_link_in_a_shared_commit_undoes_only_itself(tmp_path: Path) -> None:
    """The second of two links for one Instacart account breaks the isolation rule after its
    token was consumed: its savepoint is rolled back (the token is usable again), while the
    writes committed with it stand."""

    async def go() -> None:
        path = tmp_path / "group.db"
        store = await _store(path, group_commit=True)
        try:
            shop = await Shop.create(store)
            shared, other = await shop.account(), await shop.account()
            for user in ("first", "second", "third"):
                await shop.user(user)
            first, second, third = (await shop.token(shared), await shop.token(shared),
                                    await shop.token(other))
            writer = _writer(store)
            batches_before = writer.batches
            outcomes = await asyncio.gather(
                shop.link("first", first), shop.link("second", second),
                shop.link("third", third))
            assert writer.batches - batches_before == 1  # all three in one commit
            assert outcomes == [LinkOutcome.LINKED, LinkOutcome.ACCOUNT_TAKEN,
                                LinkOutcome.LINKED]
            assert _consumed(path, first) and _consumed(path, third)
            assert not _consumed(path, second)
            # the refused token was never spent: the user who holds the account may use it
            assert await shop.link("first", second) is LinkOutcome.RELINKED
        finally:
            await store.close()

    run_sync(go())


def test_a_failing_write_is_raised_to_its_caller_alone(tmp_path: Path) -> None:
    async def go() -> None:
        path = tmp_path / "group.db"
        store = await _store(path, group_commit=True)
        try:
            shop = await Shop.create(store)

            async def half_then_fail(db: Connection) -> None:
                await db.execute("UPDATE retailers SET name = 'changed' WHERE id = ?",
                                 shop.retailer_id)
                raise LookupError("refused after a statement")

            async def rename(db: Connection) -> int:
                return await db.execute("UPDATE retailers SET name = 'renamed' WHERE id = ?",
                                        shop.retailer_id)

            writer = _writer(store)
            batches_before = writer.batches
            failed, renamed = await asyncio.gather(
                store.db.write(half_then_fail), store.db.write(rename), return_exceptions=True)
            assert writer.batches - batches_before == 1  # one commit for both
            assert isinstance(failed, LookupError) and renamed == 1
            retailer = await store.get_retailer(shop.retailer_id)
            assert retailer is not None and retailer.name == "renamed"
        finally:
            await store.close()

    run_sync(go())


def test_a_write_that_waits_on_other_work_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _store(tmp_path / "group.db", group_commit=True)
        try:
            shop = await Shop.create(store)

            async def sleeps(db: Connection) -> None:
                await db.execute("UPDATE retailers SET name = 'changed' WHERE id = ?",
                                 shop.retailer_id)
                await asyncio.sleep(0)  # no event loop on the writer's thread to wait on

            with pytest.raises(RuntimeError, match="await nothing but its statements"):
                await store.db.write(sleeps)
            retailer = await store.get_retailer(shop.retailer_id)
            assert retailer is not None and retailer.name == "Shop"
        finally:
            await store.close()

    run_sync(go())


def test_the_event_loops_connection_cannot_write_under_group_commit(tmp_path: Path) -> None:
    async def go() -> None:
        store = await _store(tmp_path / "group.db", group_commit=True)
        try:
            with pytest.raises(RuntimeError, match=r"a write outside Engine\.write"):
                async with store.db.connection() as db:
                    await db.execute("DELETE FROM retailers")
        finally:
            await store.close()

    run_sync(go())


def test_closing_answers_every_queued_write_and_refuses_later_ones(tmp_path: Path) -> None:
    """No caller is left waiting: writes queued when the engine closes are written (or
    refused), and a write after it is refused at once."""

    async def go() -> None:
        path = tmp_path / "group.db"
        store = await _store(path, group_commit=True)
        shop = await Shop.create(store)
        account = await shop.account()
        queued = [asyncio.ensure_future(shop.token(account)) for _ in range(300)]
        await asyncio.sleep(0)  # every write handed to the writer
        await store.close()
        done, waiting = await asyncio.wait(queued, timeout=10)
        assert not waiting
        written = [task for task in done if task.exception() is None]
        assert len(written) == 300  # stop() lets the queue drain first
        with pytest.raises(RuntimeError, match="writer has stopped"):
            await shop.token(account)

    run_sync(go())


def test_every_write_is_committed_before_its_caller_hears_of_it(tmp_path: Path) -> None:
    """What a caller was told is on disk for any other connection (a restarted process)."""

    async def go() -> None:
        path = tmp_path / "group.db"
        store = await _store(path, group_commit=True)
        try:
            shop = await Shop.create(store)
            for n in range(50):
                await shop.user(f"u{n}")
                token = await shop.token(await shop.account())
                assert await shop.link(f"u{n}", token) is LinkOutcome.LINKED
                assert _consumed(path, token)
        finally:
            await store.close()

    run_sync(go())


@pytest.mark.parametrize("group_commit", [True, False], ids=["group", "direct"])
def test_the_wal_starts_over_under_a_steady_stream_of_writes(tmp_path: Path,
                                                             group_commit: bool) -> None:
    """Without a checkpoint that completes, a passive checkpointer never catches up with a
    steady stream of commits, the WAL never starts over and grows to the backstop (41 MB).
    Here writes come faster than a server makes them: with group commit the writer finishes
    a checkpoint, off the event loop, whenever the WAL is past ``WAL_SIZE_LIMIT``, so it stays
    near that; direct writes finish one on the event loop only once it is nearly copied (or
    four times as long as the threshold), so a torrent like this one is held at the backstop,
    as it was before, while the WAL still starts over again and again."""

    async def go() -> None:
        path = tmp_path / "wal.db"
        store = await _store(path, group_commit=group_commit)
        try:
            shop = await Shop.create(store)
            account = await shop.account()
            engine = store.db
            assert isinstance(engine, SQLiteEngine) and engine.checkpointer is not None
            deadline = time.monotonic() + 4
            largest = 0
            while time.monotonic() < deadline:  # up to 10,000 writes a second: twice the most
                await asyncio.gather(*(shop.token(account) for _ in range(50)))  # links a
                largest = max(largest, os.path.getsize(f"{path}-wal"))  # server made here
                await asyncio.sleep(0.005)
            assert engine.checkpointer.restarts > 0
            bound = 1.5 * WAL_SIZE_LIMIT if group_commit else 1.25 * AUTOCHECKPOINT_PAGES * 4096
            assert largest < bound, f"{largest / 2**20:.1f} MiB of WAL"
        finally:
            await store.close()

    run_sync(go())
