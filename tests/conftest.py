"""Fixtures: every server test runs on both engines, each on a database of its own.

SQLite gets a fresh file per test; PostgreSQL a fresh schema per test on the server named by
``CONNECTLINK_TEST_POSTGRES`` (default: the local one). Without a PostgreSQL server those tests
skip, except under CI (``CI=true``), where a missing database is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from connectlink.clock import ManualClock
from connectlink.settings import Settings
from connectlink.storage import using_store
from connectlink.testing import InProcessEmulator
from support import Emulator, Retailer, ThreadServer, run_sync

START = 1_790_000_000.0  # 2026-09-21, a fixed instant so times in bodies are predictable
POSTGRES = os.environ.get("CONNECTLINK_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
ENGINES = ["sqlite", "postgres"]
IN_PROCESS = "http://connectlink.test"


async def _postgres(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(POSTGRES, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database URL whose tables live in a new schema of their own."""
    schema = f"cl_{uuid.uuid4().hex[:16]}"
    try:
        run_sync(_postgres(f"CREATE SCHEMA {schema}"))
    except OSError as exc:
        message = f"PostgreSQL is not reachable at {POSTGRES}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield f"{POSTGRES}?search_path={schema}"
    finally:
        run_sync(_postgres(f"DROP SCHEMA {schema} CASCADE"))


# SQLite's two ways of writing (``storage/sqlite.py``): group commit, the default, and direct
# writes, which the modules that test the write path's rules (races, crashes) also run against
# by parametrizing ``database_url`` indirectly with WRITE_ENGINES.
SQLITE_DIRECT = "sqlite-direct"
WRITE_ENGINES = [*ENGINES, SQLITE_DIRECT]


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == SQLITE_DIRECT:  # in this process and every server it starts
        monkeypatch.setenv("CONNECTLINK_SQLITE_GROUP_COMMIT", "off")
    if request.param.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'connectlink.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def upgraded(database_url: str) -> str:
    run_sync(using_store(database_url, lambda store: store.count_retailers(), "upgrade"))
    return database_url


SECRET_KEY = "a-test-secret-key-that-is-long-enough-to-use"


def make_emulator(
    database_url: str, in_process: bool = False, **overrides: object
) -> Iterator[Emulator]:
    """A server on a real port (``ThreadServer``), or the same app without a socket."""
    profile = str(overrides.pop("profile", "emulator"))
    if profile == "production":
        overrides.setdefault("secret_key", SECRET_KEY)
    overrides = {"access_log": False, "pool_size": 4, **overrides}
    url = upgraded(database_url)
    server: ThreadServer | InProcessEmulator
    if in_process:
        server = InProcessEmulator(url, clock=ManualClock(START), profile=profile, **overrides)
        client = httpx.Client(transport=server.start().transport(), base_url=IN_PROCESS,
                              timeout=30)
    else:
        server = ThreadServer(Settings.for_profile(profile, database_url=url, **overrides),
                              ManualClock(START))
        server.start()
        client = httpx.Client(base_url=server.url, timeout=30)
    try:
        with client as http:
            yield Emulator(server, http)
    finally:
        server.stop()


@pytest.fixture
def emulator(database_url: str) -> Iterator[Emulator]:
    """A fresh server on a fresh database, with a clock that only moves when told."""
    yield from make_emulator(database_url)


@pytest.fixture
def app_emulator(database_url: str) -> Iterator[Emulator]:
    """The same, in process: no socket, no uvicorn (the contract table's tier)."""
    yield from make_emulator(database_url, in_process=True)


@pytest.fixture
def shop(emulator: Emulator) -> Retailer:
    return emulator.retailer()


@pytest.fixture
def other_shop(emulator: Emulator) -> Retailer:
    return emulator.retailer()


# --- the shared Redis (tests/test_rate_limits.py, tests/test_two_hosts.py) ---------------------
REDIS = os.environ.get("CONNECTLINK_TEST_REDIS", "redis://127.0.0.1:6379/0")


def missing(message: str) -> None:
    """Skip for want of what the machine lacks; under CI, where nothing may lack, fail."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class SharedRedis:
    url: str
    prefix: str  # this test's own: no two tests share a bucket
    client: redis.Redis


@pytest.fixture
def shared() -> Iterator[SharedRedis]:
    """The Redis at ``CONNECTLINK_TEST_REDIS``; missing, the test skips (fails under CI)."""
    client = redis.Redis.from_url(REDIS, socket_timeout=2, socket_connect_timeout=2,
                                  decode_responses=True)
    try:
        client.ping()
    except redis.RedisError as exc:
        missing(f"Redis is not reachable at {REDIS}: {exc}")
    prefix = f"connectlink-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield SharedRedis(REDIS, prefix, client)
    finally:
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()
