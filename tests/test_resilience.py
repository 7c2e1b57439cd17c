"""Crashes and outages against a real multi-worker server, on each engine.

- Crash: ``kill -9`` mid-load loses no acknowledged link, and no linking token is consumed
  without its link (nor a link made without its token consumed).
- Outage: while the database is unreachable (PostgreSQL's connections cut; SQLite's write lock
  held by another process) requests get a clean 503 envelope with ``Retry-After``, never a
  500, and the server recovers by itself.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from conftest import WRITE_ENGINES, upgraded
from proxy import CuttableProxy
from support import ServeProcess, engine_of, query_sql, seed

UNAVAILABLE = {"error": {"message": "Service temporarily unavailable. Please try again later.",
                         "code": 2003}, "meta": {}}
BROKEN_CONNECTION = (httpx.TransportError,)


# on each engine, and on SQLite in both ways of writing (group commit, direct)
@pytest.mark.parametrize("database_url", WRITE_ENGINES, indirect=True)
def test_kill_9_mid_load_loses_no_acknowledged_link(database_url: str) -> None:
    seeded = seed(upgraded(database_url), 600)
    headers = {"Authorization": f"Bearer {seeded.bearer}"}
    server = ServeProcess(database_url, "--no-demo", "--no-access-log", "--workers", "2")
    acknowledged: list[int] = []
    pending = iter(seeded.pairs)

    async def link_until_the_crash(http: httpx.AsyncClient) -> None:
        for user_id, token, account in pending:
            try:
                response = await http.post(f"/v2/fulfillment/users/{user_id}/link",
                                           json={"linking_token": token}, headers=headers)
            except BROKEN_CONNECTION:
                return
            assert response.status_code == 200, response.text
            acknowledged.append(account)

    async def load() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            clients = [asyncio.create_task(link_until_the_crash(http)) for _ in range(32)]
            # crash once 150 links are acknowledged, however long that takes (or once every
            # client has stopped, which the assertions below then report)
            while len(acknowledged) < 150 and not all(task.done() for task in clients):
                await asyncio.sleep(0.005)
            server.kill_9()
            await asyncio.gather(*clients)

    try:
        asyncio.run(load())
    finally:
        if server.process.poll() is None:  # the load failed before the crash
            server.kill_9()
    assert 150 <= len(acknowledged) < len(seeded.pairs)  # it really died mid-load

    restarted = ServeProcess(database_url, "--no-demo", "--no-access-log", "--workers", "2")
    try:
        links = dict(query_sql(database_url, (
            "SELECT u.user_id, l.account_id FROM links l "
            f"JOIN connect_users u ON u.pk = l.connect_user_pk WHERE l.retailer_id = "
            f"{seeded.retailer_id}")))
        consumed = {row[0] for row in query_sql(database_url, (
            "SELECT account_id FROM tokens WHERE account_id IS NOT NULL "
            f"AND consumed_at IS NOT NULL AND retailer_id = {seeded.retailer_id}"))}
        expected = {user_id: account for user_id, _, account in seeded.pairs}
        assert set(acknowledged) <= set(links.values())  # lost = 0
        assert consumed == set(links.values())  # token consumed <=> link written
        assert all(expected[user_id] == account for user_id, account in links.items())
        print(f"\n{engine_of(database_url)}: {len(acknowledged)} links acknowledged before "
              f"kill -9, {len(links)} found after restart, lost "
              f"{len(set(acknowledged) - set(links.values()))}")
        # and it serves again: the next link goes through
        user_id, token, _ = seeded.pairs[-1]
        with httpx.Client(base_url=restarted.url, headers=headers) as http:
            assert http.post(f"/v2/fulfillment/users/{user_id}/link",
                             json={"linking_token": token}).status_code == 200
            assert http.get(f"/v2/fulfillment/users/{user_id}/link").status_code == 200
    finally:
        restarted.stop()


def _through(proxy: CuttableProxy, database_url: str) -> str:
    parts = urlsplit(database_url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


class Outage:
    """When the database really went away and came back, as the proxy (PostgreSQL) or the
    process holding the write lock (SQLite) saw it, on ``time.monotonic()``: ``began``, the
    earliest it could affect a request; ``total``, from when nothing gets through; ``lifting``,
    from when something may get through again; ``ended``, from when everything does."""

    began = total = lifting = ended = math.inf

    async def start(self) -> None:
        raise NotImplementedError

    async def end(self) -> None:
        raise NotImplementedError


class ProxyOutage(Outage):
    """PostgreSQL's connections cut at the proxy, and new ones refused."""

    def __init__(self, proxy: CuttableProxy) -> None:
        self.proxy = proxy

    async def start(self) -> None:
        self.proxy.cut()
        assert self.proxy.cut_started is not None and self.proxy.cut_done is not None
        self.began, self.total = self.proxy.cut_started, self.proxy.cut_done

    async def end(self) -> None:
        self.proxy.restore()
        assert self.proxy.restore_started is not None and self.proxy.restored is not None
        self.lifting, self.ended = self.proxy.restore_started, self.proxy.restored


class LockOutage(Outage):
    """SQLite's write lock held by another connection (a thread's) until ended."""

    def __init__(self, database_url: str) -> None:
        from connectlink.storage.sqlite import path_from_url

        self.path = path_from_url(database_url)
        self.holding, self.release = threading.Event(), threading.Event()
        self.holder: asyncio.Future[None] | None = None

    def _hold(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            self.began = time.monotonic()
            db.execute("BEGIN EXCLUSIVE")
            self.total = time.monotonic()
            self.holding.set()
            self.release.wait()
            self.lifting = time.monotonic()
            db.execute("ROLLBACK")
        finally:
            db.close()
            self.ended = time.monotonic()
            self.holding.set()

    async def start(self) -> None:
        self.holder = asyncio.ensure_future(asyncio.to_thread(self._hold))
        await asyncio.to_thread(self.holding.wait)
        assert not self.holder.done(), "the write lock was not taken"

    async def end(self) -> None:
        self.release.set()
        if self.holder is not None:
            await self.holder


@dataclass(frozen=True)
class Answer:
    client: int
    kind: str  # "write" (create or update user c<client> to first name v<version>) or "read"
    version: int  # the last version this client had sent when the request went out
    sent: float
    answered: float
    status: int
    body: Any
    retry_after: str | None


CLIENTS = 8
WARM_UP = 3  # answers each client gets before the outage begins
OUTAGE_AT_LEAST = 2.0  # seconds the outage is held at least (the stimulus; nothing is timed)
NOTICED = 2  # 503s each client gets before the outage ends
AFTER = 10  # writes each client sends after the outage ended


@pytest.mark.parametrize("database_url", WRITE_ENGINES, indirect=True)
def test_outage_answers_503_and_recovers(database_url: str) -> None:
    """Every answer is placed against when the outage really began and ended: a 503 only for a
    request that overlapped the outage, nothing through while it held, every request sent once
    it was over served; and no acknowledged write lost across it."""
    url = upgraded(database_url)
    seeded = seed(url, 1)
    proxy: CuttableProxy | None = None
    env: dict[str, str] = {}
    if engine_of(url) == "postgres":
        parts = urlsplit(url)
        proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
        served_url = _through(proxy, url)
        outage: Outage = ProxyOutage(proxy)
    else:
        served_url, env = url, {"CONNECTLINK_SQLITE_BUSY_TIMEOUT_MS": "100"}
        outage = LockOutage(url)

    server = ServeProcess(served_url, "--no-demo", "--no-access-log", "--workers", "2", env=env)
    try:
        answers = asyncio.run(_drive(server.url, seeded.bearer, outage))
    finally:
        server.stop()
        accepted = list(proxy.accepted) if proxy is not None else []
        if proxy is not None:
            proxy.close()

    assert outage.began <= outage.total <= outage.lifting <= outage.ended < math.inf
    unavailable = [a for a in answers if a.status == 503]
    first_served = min((a.answered for a in answers if a.status == 200 and a.sent > outage.ended),
                       default=math.nan)
    print(f"\n{engine_of(url)}: {len(answers)} answers, {len(unavailable)} of them 503; the "
          f"outage lasted {outage.ended - outage.began:.3f} s, and the first request sent after "
          f"it was served {first_served - outage.ended:.3f} s after it ended")

    # never a 500; a read is 400 only while none of its client's writes has been acknowledged
    assert [a for a in answers if a.status not in (200, 503) and not (
        a.kind == "read" and a.status == 400 and not _acknowledged(answers, a)
        and a.body["error"]["message"] == "User Not Found")][:3] == []
    # the 503s: the documented envelope, to every client, only for requests that overlapped
    # the outage (answered once it had begun, sent before it ended)
    assert [c for c in range(CLIENTS) if sum(a.client == c for a in unavailable) < NOTICED] == []
    assert [a for a in unavailable if a.body != UNAVAILABLE or a.retry_after != "1"][:3] == []
    assert [a for a in unavailable
            if not (outage.began < a.answered and a.sent < outage.ended)][:3] == []
    # before it, every client served; while it held, nothing through (SQLite's readers are
    # never blocked); after it, everything served, by itself
    assert [c for c in range(CLIENTS) if sum(
        a.client == c and a.status == 200 for a in answers if a.answered < outage.began
    ) < WARM_UP] == []
    blocked = [a for a in answers if outage.total < a.sent and (
        a.kind == "write" or engine_of(url) == "postgres")]
    assert [a for a in blocked if a.status == 200 and a.answered < outage.lifting][:3] == []
    after = [a for a in answers if a.sent > outage.ended]
    assert [a for a in after if a.status != 200][:3] == []
    assert [c for c in range(CLIENTS)
            if sum(a.client == c and a.kind == "write" for a in after) < AFTER] == []
    if proxy is not None:  # ...through connections the pool opened again on its own
        reconnected = [t for t in accepted if t > outage.lifting]
        assert reconnected, "the server never reconnected"
        assert [a for a in blocked if a.status == 200 and a.answered < min(reconnected)] == []

    # no acknowledged write lost, none made up: a read shows at least the version last
    # acknowledged before it went out and at most the last one sent; the database ends with
    # each client's last write (acknowledged, since every write after the outage is)
    for read in (a for a in answers if a.kind == "read" and a.status == 200):
        assert _acknowledged(answers, read) <= int(read.body["first_name"][1:]) <= read.version
    last = {c: max(a.version for a in answers if a.client == c) for c in range(CLIENTS)}
    stored = dict(query_sql(url, "SELECT user_id, first_name FROM connect_users "
                                 f"WHERE retailer_id = {seeded.retailer_id} "
                                 "AND user_id LIKE 'c%'"))
    assert stored == {f"c{c}": f"V{version}" for c, version in last.items()}


def _acknowledged(answers: list[Answer], read: Answer) -> int:
    """The last version of ``read``'s client acknowledged before ``read`` was sent (0: none)."""
    return max((a.version for a in answers if a.client == read.client and a.kind == "write"
                and a.status == 200 and a.answered <= read.sent), default=0)


async def _drive(url: str, bearer: str, outage: Outage) -> list[Answer]:
    """Writes and reads from CLIENTS clients: until each has WARM_UP answers, then through an
    outage held until every client has had NOTICED 503s (and OUTAGE_AT_LEAST seconds), then
    until each has sent AFTER writes once the outage is over."""
    answers: list[Answer] = []
    headers = {"Authorization": f"Bearer {bearer}"}
    failed: list[BaseException] = []  # the outage could not be staged or lifted: stop

    def answer(n: int, kind: str, version: int, sent: float, response: httpx.Response) -> None:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        answers.append(Answer(n, kind, version, sent, time.monotonic(), response.status_code,
                              body, response.headers.get("retry-after")))

    async def client(http: httpx.AsyncClient, n: int) -> None:
        version = after = 0
        while after < AFTER and not failed:
            version += 1
            was_over = time.monotonic() > outage.ended
            sent = time.monotonic()
            answer(n, "write", version, sent, await http.post(
                "/v2/fulfillment/users", headers=headers,
                json={"user_id": f"c{n}", "first_name": f"v{version}"}))
            sent = time.monotonic()
            answer(n, "read", version, sent,
                   await http.get(f"/v2/fulfillment/users/c{n}", headers=headers))
            after += was_over
            await asyncio.sleep(0.01)

    def count(status: int | None, since: float = -math.inf) -> list[int]:
        return [sum(a.client == c and status in (None, a.status) and a.answered > since
                    for a in answers) for c in range(CLIENTS)]

    async def until(condition: Callable[[], bool], give_up_after: float = 60) -> None:
        """Wait for ``condition``; past ``give_up_after`` seconds, go on and let the
        assertions say what did not happen."""
        deadline = time.monotonic() + give_up_after
        while not condition() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def conduct() -> None:
        try:
            await until(lambda: min(count(None)) >= WARM_UP)
            try:
                await outage.start()
                await asyncio.sleep(OUTAGE_AT_LEAST)
                await until(lambda: min(count(503, outage.began)) >= NOTICED)
            finally:
                await outage.end()
        except BaseException as exc:
            failed.append(exc)
            raise

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await asyncio.gather(conduct(), *(client(http, n) for n in range(CLIENTS)))
    return answers
