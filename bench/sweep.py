"""What does a retention sweep of a million tokens cost the requests served meanwhile?

For each engine: a fresh database (SQLite file; PostgreSQL schema on
``CONNECTLINK_BENCH_POSTGRES``) with a few linked Connect users, then 10^6 tokens that expired
two days ago, written in bulk (executemany / COPY, in chunks). Then ``connectlink serve`` (one
worker, 127.0.0.1, pinned to CPU 1 when ``taskset`` is there) with the load, a few asyncio httpx
clients reading ``GET /v2/fulfillment/users/{id}/link`` back to back (pinned to CPU 0), and:

- *background*: the server's own sweeper, its interval set so the first sweep starts after a
  stretch of load without it; the sweep's one log line says how long it took;
- *by hand* (``--by-hand``): the server's sweeper off, ``connectlink db sweep`` in a process of
  its own instead.

Reads completed before the sweep started are "without"; those that overlapped it, "during".
Bounded: every phase has a deadline. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from connectlink import security
from connectlink.clock import SystemClock
from connectlink.linking import retailers
from connectlink.models import ACCOUNT_LINKING, FULFILLMENT, AccessToken, UserFields
from connectlink.storage import Store, using_store
from connectlink.storage.sql import SQLStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import postgres_schema

DAY = 86_400.0
SERVER_CPU, LOAD_CPU = "1", "0"
USERS = 20
CHUNK = 50_000
TOKEN_COLUMNS = ("digest", "client_pk", "retailer_id", "scopes", "created_at", "expires_at",
                 "account_id", "code_digest", "revoked_at", "consumed_at")
SWEPT = re.compile(r"sweep: removed (\d+) tokens?\b.*\((\d+) rounds?, ([0-9.]+) s")
LIMIT = 600.0  # seconds any one scenario may take


@dataclass(frozen=True)
class Shop:
    retailer_id: int
    client_pk: int
    bearer: str


@dataclass
class Read:
    started: float  # time.monotonic(), the same clock in every process on the machine
    ms: float


@dataclass
class Outcome:
    engine: str
    how: str
    removed: int
    seconds: float  # to remove them
    rounds: int | None
    window: tuple[float, float]
    reads: list[Read] = field(default_factory=list)


# The database ---------------------------------------------------------------------------------
@contextlib.contextmanager
def database(engine: str) -> Iterator[str]:
    if engine == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="connectlink-sweep-"))
        try:
            yield f"sqlite:///{folder / 'bench.db'}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    with postgres_schema() as url:  # bench/run.py's: a schema of its own, dropped after
        yield url


async def _linked_users(store: Store) -> Shop:
    """A retailer, its bearer, and USERS Connect users linked through the store's own verbs."""
    clock = SystemClock()
    now = clock.now()
    shop = await retailers.create(store, clock, "Sweep bench", ["https://bench.example/cb"])
    bearer = security.new_secret()
    await store.save_token(AccessToken(security.digest(bearer), shop.client.pk, shop.retailer.id,
                                       frozenset({FULFILLMENT}), now, now + DAY))
    for n in range(USERS):
        account = await store.create_instacart_account(
            f"sweep{n}@example.com", "+18005550100", "not-a-hash", now + 365 * DAY, now)
        assert account is not None
        await store.upsert_connect_user(shop.retailer.id, UserFields(f"u{n}", "Bench"), now)
        linking = security.new_secret()
        await store.save_token(AccessToken(
            security.digest(linking), shop.client.pk, shop.retailer.id,
            frozenset({ACCOUNT_LINKING}), now, now + DAY, account_id=account.id))
        await store.link(shop.retailer.id, f"u{n}", security.digest(linking), now, None)
    return Shop(shop.retailer.id, shop.client.pk, bearer)


def _expired(shop: Shop, start: int, count: int, now: float) -> list[tuple[object, ...]]:
    return [(os.urandom(32), shop.client_pk, shop.retailer_id, FULFILLMENT, now - 3 * DAY,
             now - 2 * DAY + i * 1e-3, None, None, None, None) for i in range(start, start + count)]


def insert_expired(url: str, shop: Shop, rows: int) -> float:
    """``rows`` tokens that expired two days ago, in bulk; the seconds it took."""
    started, now = time.perf_counter(), time.time()
    if url.startswith("sqlite"):
        import sqlite3

        from connectlink.storage.sqlite import path_from_url

        db = sqlite3.connect(path_from_url(url), isolation_level=None)
        marks = ", ".join("?" for _ in TOKEN_COLUMNS)
        for start in range(0, rows, CHUNK):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(f"INSERT INTO tokens ({', '.join(TOKEN_COLUMNS)}) VALUES ({marks})",
                           _expired(shop, start, min(CHUNK, rows - start), now))
            db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
    else:
        asyncio.run(_copy_expired(url, shop, rows, now))
    return time.perf_counter() - started


async def _copy_expired(url: str, shop: Shop, rows: int, now: float) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        for start in range(0, rows, CHUNK):
            await connection.copy_records_to_table(
                "tokens", records=_expired(shop, start, min(CHUNK, rows - start), now),
                columns=TOKEN_COLUMNS)
        await connection.execute("VACUUM ANALYZE tokens")  # as autovacuum would have by now
    finally:
        await connection.close()


def count_expired(url: str) -> int:
    async def count(store: Store) -> int:
        assert isinstance(store, SQLStore)
        async with store.db.connection() as db:
            row = await db.fetchrow("SELECT count(*) FROM tokens WHERE expires_at < ?",
                                    time.time() - DAY)
        assert row is not None
        return int(row[0])

    return asyncio.run(using_store(url, count))


# The server, its log, and the load --------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pinned(cpu: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if shutil.which("taskset") else command


class Server:
    """``connectlink serve``, its output read line by line and each line's arrival timed."""

    def __init__(self, url: str, interval: float) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.lines: list[tuple[float, str]] = []
        self.process = subprocess.Popen(
            pinned(SERVER_CPU, [sys.executable, "-m", "connectlink", "serve", "--no-demo",
                                "--no-access-log", "--port", str(self.port), "--database",
                                url]),
            env={**os.environ, "CONNECTLINK_SWEEP_INTERVAL": repr(interval)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.started = time.monotonic()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line))

    def sweep(self) -> tuple[float, re.Match[str]] | None:
        """When the first sweep that removed something ended, and its line."""
        for at, line in self.lines:
            found = SWEPT.search(line)
            if found and int(found.group(1)) > 0:
                return at, found
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(2)  # SIGINT, as a terminal would
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.reader.join(5)


async def _reader(base: str, n: int, bearer: str, reads: list[Read],
                  stop: asyncio.Event) -> None:
    """One keep-alive connection, a read at a time. (A client of its own: readers sharing one
    httpx pool see stalls of 0.1-1 s that are the pool's, with or without a sweep.)"""
    headers = {"Authorization": f"Bearer {bearer}"}
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        while not stop.is_set():
            started = time.monotonic()
            response = await http.get(f"/v2/fulfillment/users/u{n % USERS}/link",
                                      headers=headers)
            taken = time.monotonic() - started
            if response.status_code != 200:
                raise RuntimeError(f"GET link answered {response.status_code}: {response.text}")
            reads.append(Read(started, taken * 1000))
            n += 1


async def load(base: str, bearer: str, clients: int, done: threading.Event,
               deadline: float) -> list[Read]:
    """``clients`` readers back to back until ``done`` is set (or the deadline passes)."""
    reads: list[Read] = []
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_reader(base, n, bearer, reads, stop)) for n in range(clients)]
    while not done.is_set() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        for task in tasks:
            if task.done():
                task.result()  # a failed read fails the run
    stop.set()
    await asyncio.gather(*tasks)
    if not done.is_set():
        raise TimeoutError("the scenario did not finish within its deadline")
    return reads


def wait_ready(server: Server, bearer: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError("serve exited:\n" + "".join(line for _, line in server.lines))
        with contextlib.suppress(httpx.TransportError):
            httpx.get(f"{server.base}/v2/fulfillment/users/u0/link",
                      headers={"Authorization": f"Bearer {bearer}"}, timeout=2)
            return
        time.sleep(0.1)
    raise TimeoutError("serve did not start listening")


# The scenarios ---------------------------------------------------------------------------------
def background(url: str, engine: str, shop: Shop, args: argparse.Namespace) -> Outcome:
    """The server's own sweeper, first due ``args.before`` seconds after the server starts."""
    server = Server(url, args.before)
    done = threading.Event()
    try:
        wait_ready(server, shop.bearer)

        def watch() -> None:
            while server.sweep() is None and time.monotonic() < server.started + LIMIT:
                time.sleep(0.05)
            time.sleep(args.after)
            done.set()

        threading.Thread(target=watch, daemon=True).start()
        reads = asyncio.run(load(server.base, shop.bearer, args.clients, done,
                                 server.started + LIMIT))
        swept = server.sweep()
        assert swept is not None
        ended, line = swept
        seconds = float(line.group(3))
        return Outcome(engine, "background sweeper", int(line.group(1)), seconds,
                       int(line.group(2)), (ended - seconds, ended), reads)
    finally:
        server.stop()


def by_hand(url: str, engine: str, shop: Shop, args: argparse.Namespace) -> Outcome:
    """The server's sweeper off; ``connectlink db sweep`` in a process of its own."""
    server = Server(url, 0)
    done = threading.Event()
    result: dict[str, object] = {}
    try:
        wait_ready(server, shop.bearer)

        def sweep() -> None:
            time.sleep(args.before)
            finished = subprocess.run(
                pinned(SERVER_CPU, [sys.executable, "-m", "connectlink", "db", "sweep",
                                    "--database", url, "--json"]),
                capture_output=True, text=True, timeout=LIMIT, check=False)
            result.update(ended=time.monotonic(), code=finished.returncode,
                          out=finished.stdout, err=finished.stderr)
            time.sleep(args.after)
            done.set()

        threading.Thread(target=sweep, daemon=True).start()
        reads = asyncio.run(load(server.base, shop.bearer, args.clients, done,
                                 time.monotonic() + LIMIT))
    finally:
        server.stop()
    if result["code"] != 0:
        raise RuntimeError(f"db sweep failed: {result['err']}")
    printed = json.loads(str(result["out"]))
    ended = result["ended"]
    assert isinstance(ended, float)
    # The sweep's own seconds, not the interpreter's start and finish around it.
    window = (ended - printed["seconds"], ended)
    return Outcome(engine, "`db sweep`, another process", printed["tokens"], printed["seconds"],
                   printed["rounds"], window, reads)


# The report ------------------------------------------------------------------------------------
def percentiles(reads: list[Read]) -> tuple[int, float, float, float]:
    ordered = sorted(read.ms for read in reads)
    if not ordered:
        return 0, float("nan"), float("nan"), float("nan")
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return len(ordered), statistics.median(ordered), p99, ordered[-1]


def rows(outcome: Outcome, warmup: float) -> list[str]:
    begin, end = outcome.window
    first = min(read.started for read in outcome.reads) + warmup
    without = [r for r in outcome.reads if first <= r.started and r.started + r.ms / 1000 < begin]
    during = [r for r in outcome.reads if r.started < end and r.started + r.ms / 1000 > begin]
    lines = []
    for phase, reads, span in (("without a sweep", without, begin - first),
                               ("during the sweep", during, end - begin)):
        count, p50, p99, most = percentiles(reads)
        rate = count / span if span > 0 else float("nan")
        lines.append(
            f"| {outcome.engine} | {outcome.how} | {outcome.removed:,} | {outcome.seconds:.1f} | "
            f"{outcome.rounds} | {phase} | {count:,} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | "
            f"{most:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="expired tokens to sweep")
    parser.add_argument("--clients", type=int, default=4, help="concurrent link readers")
    parser.add_argument("--before", type=float, default=12.0,
                        help="seconds of load before the sweep starts")
    parser.add_argument("--after", type=float, default=1.0,
                        help="seconds of load after it ends")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of load not counted at the start")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--by-hand", action="store_true",
                        help="also sweep with `connectlink db sweep` from another process")
    args = parser.parse_args()
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {int(LOAD_CPU)})
    engines = ["sqlite"] + ([] if args.skip_postgres else ["postgres"])
    scenarios = [background] + ([by_hand] if args.by_hand else [])
    table, notes = [], []
    for engine in engines:
        for scenario in scenarios:
            with database(engine) as url:
                shop = asyncio.run(using_store(url, _linked_users, "upgrade"))
                inserted = insert_expired(url, shop, args.rows)
                notes.append(f"{engine}: {args.rows:,} expired tokens written in "
                             f"{inserted:.1f} s ({args.rows / inserted:,.0f} rows/s)")
                outcome = scenario(url, engine, shop, args)
                left = count_expired(url)
                if left:
                    raise RuntimeError(f"{left} expired tokens left after the sweep")
                table += rows(outcome, args.warmup)
                print(table[-2] + "\n" + table[-1], file=sys.stderr, flush=True)
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, CPython "
          f"{platform.python_version()}; server on CPU {SERVER_CPU}, load on CPU {LOAD_CPU} "
          f"({'taskset' if shutil.which('taskset') else 'not pinned'}); {args.clients} "
          f"concurrent GET link readers (httpx, keep-alive), {args.warmup:g} s warm-up not "
          f"counted.\n")
    print("| engine | sweep | tokens removed | sweep s | rounds | GET link | reads | reads/s "
          "| p50 ms | p99 ms | max ms |")
    print("|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    print("\n".join(table))
    print("\n" + "\n".join(f"- {note}" for note in notes))


if __name__ == "__main__":
    main()
