"""Two ConnectLink hosts over one PostgreSQL database and one Redis, the client spreading its
requests across both, as behind a load balancer (README "Scaling out on PostgreSQL",
docs/emulator.md "All control state lives in the database").

Each host is a real ``connectlink serve`` process on a port of its own. What a deployment of
several hosts relies on, and what a single host's tests cannot show:

- Crash: one host killed with SIGKILL mid-burst of links loses no write it acknowledged and
  leaves nothing half-written; the client's retries on the other host succeed, and the killed
  host, started again where it was, serves at once.
- Rate limits: one limit over both hosts through one Redis, within 10% of its rate.
- Emulator controls: a clock moved, a fault added, a snapshot restored through one host act on
  the other at once; reading the journal through either host settles both hosts' journals.
- Outages: PostgreSQL restarted under load gets the documented 503s, never a 500, and service
  resumes without restarting ConnectLink (and sessions PostgreSQL ends while they sit idle in
  a pool, as a restart, a failover or ``pg_terminate_backend`` does, are a 503 at most); Redis
  restarted under load lets requests through without limits (fail open), never a 500, and the
  limits apply again once it is back.

The restarts use a PostgreSQL cluster and a redis-server of the test's own (never the shared
ones other tests run against in parallel). Answers are placed against when the outage really
began and ended, as this test saw it; counts have tolerances drawn from elapsed time, and no
timing is asserted. Where the machine lacks a tool the test skips, except under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from conftest import SharedRedis, missing, upgraded
from connectlink import security
from support import REDIRECT_URI, Retailer, ServeProcess, new_retailer, query_sql, run_sync
from test_rate_limits import ADMITTED, NOBODY, OwnRedis, paced
from test_resilience import UNAVAILABLE

SANDBOX = "/v2/fulfillment_sandbox/instacart_users"
GET_USER = "GET /v2/fulfillment/users/{user_id}"
DAY = 86_400
# Debian's PostgreSQL binaries, newest version first.
PG_BIN_DIRS = tuple(sorted((str(p) for p in Path("/usr/lib/postgresql").glob("*/bin")),
                           key=lambda d: int(Path(d).parent.name) if Path(d).parent.name.isdigit()
                           else 0, reverse=True))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Host(ServeProcess):
    """``connectlink serve`` as ``ServeProcess`` runs it, on a port the caller may choose: a
    host killed comes back where its load balancer (this test's client) expects it. Started
    without waiting, so that two hosts start side by side (``wait_ready``)."""

    def __init__(self, database_url: str, *extra: str, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url, self.extra, self.env = database_url, extra, env
        self.output = ""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "connectlink", "serve", "--migrate", "--port", str(self.port),
             "--database", database_url, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **(env or {})}, start_new_session=True)

    def again(self) -> Host:
        """The same host started again, on the same port, once it has died."""
        assert self.process.poll() is not None
        host = Host(self.database_url, *self.extra, port=self.port, env=self.env)
        try:
            host.wait_ready()
        except BaseException:
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                host.kill_9()
            raise
        return host

    def stop(self) -> str:
        self.output = super().stop()
        return self.output


@contextlib.contextmanager
def two_hosts(database_url: str, workers: int = 1,
              env: dict[str, str] | None = None) -> Iterator[tuple[Host, Host]]:
    """Two hosts on one (already upgraded) database, both listening; stopped at the end, their
    output kept in ``Host.output``."""
    args = ("--no-demo", "--no-access-log", "--workers", str(workers))
    hosts = [Host(database_url, *args, env=env) for _ in range(2)]
    try:
        for host in hosts:
            host.wait_ready()
        yield hosts[0], hosts[1]
    finally:
        for host in hosts:
            try:
                host.stop()
            except Exception:  # it would not stop: it must not outlive the test
                with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                    host.kill_9()


def on(http: httpx.Client, shop: Retailer) -> Retailer:
    """The same retailer (its credentials, its bearer token) talking to another host."""
    return Retailer(http, shop.credentials, shop.redirect_uris, shop.token)


def retailer_id(shop: Retailer) -> int:
    return int(shop.credentials["retailer_id"])


def unexpected_failures(*hosts: Host) -> str:
    """What the hosts logged from their first ``unexpected failure`` on: a 5000 answer logs
    one, with its traceback (README "What to watch")."""
    return "\n".join(host.output[max(0, host.output.index("unexpected failure") - 60):][:6000]
                     for host in hosts if "unexpected failure" in host.output)


def assert_no_unexpected_failure(*hosts: Host) -> None:
    """No 5000 answer, whether or not a client saw it."""
    assert unexpected_failures(*hosts) == ""


# --- a host killed mid-burst ---------------------------------------------------------------------

CLIENTS, CHAINS = 16, 8  # concurrent clients, and the links each makes
KILL_AFTER = 40  # links acknowledged before one host is killed (of CLIENTS * CHAINS)
ATTEMPTS = 4  # hosts a request is tried on, in turn, before the client gives up


@dataclass
class Burst:
    """What the client sent and what it was told: each request (kind, host, status; None for
    no answer), and every write acknowledged, keyed as the database stores it."""

    sent: list[tuple[str, int, int | None]] = field(default_factory=list)
    acknowledged: dict[str, set[Any]] = field(default_factory=lambda: {
        kind: set() for kind in ("user", "account", "authorize", "exchange", "link")})
    killed_after: int = -1  # len(sent) when the host was killed
    cut: int = 0  # unanswered requests whose connection the kill broke (the others: refused)

    @property
    def links(self) -> int:
        return len(self.acknowledged["link"])


async def _burst(hosts: tuple[Host, Host], shop: Retailer, victim: Host) -> Burst:
    """CLIENTS clients, each making CHAINS links from nothing (a Connect user, a sandbox
    account, its code, the linking token, the link), each step on the next host in turn and,
    when it gets no answer, again on the other; ``victim`` is killed once KILL_AFTER links are
    acknowledged. Every answer must be a 200."""
    burst = Burst()
    bearer = {"Authorization": f"Bearer {shop.token}"}
    turn = itertools.count()
    https = [httpx.AsyncClient(base_url=host.url, timeout=10) for host in hosts]

    async def post(host: int, kind: str, path: str, body: dict[str, Any],
                   headers: dict[str, str] | None = None) -> Any:
        try:
            response = await https[host].post(path, json=body, headers=headers)
        except httpx.TransportError as exc:
            burst.sent.append((kind, host, None))
            burst.cut += not isinstance(exc, httpx.ConnectError)
            raise
        burst.sent.append((kind, host, response.status_code))
        assert response.status_code == 200, (kind, host, response.text)
        return response.json()

    async def spread(step: Callable[[int, int], Awaitable[Any]]) -> Any:
        """``step(host, attempt)`` on the next host; on no answer, on the other one, and so
        on: a step that may have been done already is written to be safe to do again."""
        first = next(turn)
        for attempt in range(ATTEMPTS):
            with contextlib.suppress(httpx.TransportError):
                return await step((first + attempt) % 2, attempt)
        raise AssertionError(f"no host answered in {ATTEMPTS} attempts")

    async def linking_token(host: int, account: int) -> str:
        # a code and its exchange on one host: a code whose exchange got no answer may be spent
        code = (await post(host, "authorize", f"{SANDBOX}/{account}/authorize", {
            "redirect_uri": REDIRECT_URI, "scope": "openid account_linking"}, bearer))["code"]
        burst.acknowledged["authorize"].add(security.digest(code))
        token = (await post(host, "exchange", "/v2/oauth/token", {
            "client_id": shop.client_id, "client_secret": shop.client_secret,
            "grant_type": "authorization_code", "code": code,
            "redirect_uri": REDIRECT_URI}))["access_token"]
        burst.acknowledged["exchange"].add(security.digest(token))
        return str(token)

    async def chain(user_id: str) -> None:
        async def user(host: int, _: int) -> None:  # an upsert: safe to send again
            await post(host, "user", "/v2/fulfillment/users",
                       {"user_id": user_id, "first_name": "Kim"}, bearer)
            burst.acknowledged["user"].add(user_id)

        async def account(host: int, attempt: int) -> int:  # a retry may have been stored:
            made = await post(host, "account", SANDBOX, {  # another email, not a conflict
                "email": f"{user_id}.{attempt}@example.com", "phone": "+18005550100",
                "password": "correct horse battery", "instacartplus_member": True}, bearer)
            burst.acknowledged["account"].add(int(made["id"]))
            return int(made["id"])

        await spread(user)
        account_id: int = await spread(account)
        first_token: str = await spread(lambda host, _: linking_token(host, account_id))

        async def link(host: int, attempt: int) -> None:
            # a link that got no answer may have consumed its token: a fresh one relinks
            token = first_token if attempt == 0 else await linking_token(host, account_id)
            await post(host, "link", f"/v2/fulfillment/users/{user_id}/link",
                       {"linking_token": token}, bearer)
            burst.acknowledged["link"].add((user_id, account_id))

        await spread(link)

    async def client(n: int) -> None:
        for k in range(CHAINS):
            await chain(f"u{n}-{k}")

    try:
        clients = [asyncio.create_task(client(n)) for n in range(CLIENTS)]
        while burst.links < KILL_AFTER and not all(task.done() for task in clients):
            await asyncio.sleep(0.002)
        burst.killed_after = len(burst.sent)
        victim.kill_9()
        await asyncio.gather(*clients)
    finally:
        if victim.process.poll() is None:  # the burst failed before the kill
            victim.kill_9()
        for http in https:
            await http.aclose()
    return burst


def _stored(url: str, retailer: int) -> dict[str, set[Any]]:
    """Every write of the burst's kinds the database holds, keyed as ``Burst.acknowledged``."""
    def rows(statement: str) -> list[tuple[Any, ...]]:
        return query_sql(url, statement)

    return {
        "user": {r[0] for r in rows(
            f"SELECT user_id FROM connect_users WHERE retailer_id = {retailer}")},
        "account": {r[0] for r in rows("SELECT id FROM instacart_accounts")},
        "authorize": {bytes(r[0]) for r in rows(
            f"SELECT digest FROM authorization_codes WHERE retailer_id = {retailer}")},
        "exchange": {bytes(r[0]) for r in rows(
            f"SELECT digest FROM tokens WHERE retailer_id = {retailer} "
            "AND account_id IS NOT NULL")},
        "link": set(rows(
            "SELECT u.user_id, l.account_id FROM links l JOIN connect_users u "
            f"ON u.pk = l.connect_user_pk WHERE l.retailer_id = {retailer}")),
    }


def _assert_nothing_half_written(url: str, retailer: int) -> None:
    """Each multi-row write whole or not at all: a consumed code has issued exactly one linking
    token and an issued one its code consumed; a consumed linking token has made exactly one
    link (and its audit event), and a link consumed a token."""
    codes = {bytes(r[0]) for r in query_sql(url, (
        "SELECT digest FROM authorization_codes WHERE consumed_at IS NOT NULL "
        f"AND retailer_id = {retailer}"))}
    issued = [bytes(r[0]) for r in query_sql(url, (
        "SELECT code_digest FROM tokens WHERE code_digest IS NOT NULL "
        f"AND retailer_id = {retailer}"))]
    assert sorted(issued) == sorted(codes)
    consumed = query_sql(url, (
        "SELECT account_id FROM tokens WHERE account_id IS NOT NULL "
        f"AND consumed_at IS NOT NULL AND retailer_id = {retailer}"))
    audited = query_sql(url, (
        "SELECT account_id FROM audit_events WHERE action IN ('link', 'relink', 'replace') "
        f"AND retailer_id = {retailer}"))
    linked = query_sql(url, f"SELECT account_id FROM links WHERE retailer_id = {retailer}")
    assert sorted(consumed) == sorted(audited)
    assert {r[0] for r in consumed} == {r[0] for r in linked}


def test_a_host_killed_mid_burst_loses_no_acknowledged_link(postgres_url: str) -> None:
    url = upgraded(postgres_url)
    with two_hosts(url) as hosts, httpx.Client(base_url=hosts[0].url, timeout=10) as http:
        shop = new_retailer(http, url)
        shop.access_token()
        burst = run_sync(_burst(hosts, shop, victim=hosts[0]))

        answered = [s for s in burst.sent if s[2] is not None]
        after = burst.sent[burst.killed_after:]
        assert KILL_AFTER <= len(burst.acknowledged["link"]) == CLIENTS * CHAINS
        # killed mid-burst: A answered before the kill and went unanswered after it (whether
        # a request was in flight at the very moment, ``burst.cut``, is up to the scheduler)
        before = burst.sent[:burst.killed_after]
        assert any(host == 0 and status == 200 for _, host, status in before)
        assert any(host == 0 and status is None for _, host, status in after)
        assert any(host == 1 and status == 200 for _, host, status in after)  # ...and B served
        assert [s for s in answered if s[2] != 200] == []

        stored = _stored(url, retailer_id(shop))
        lost = {kind: acked - stored[kind] for kind, acked in burst.acknowledged.items()}
        acknowledged = sum(len(acked) for acked in burst.acknowledged.values())
        links_sent = sum(kind == "link" for kind, _, _ in burst.sent)
        print(f"\nkill -9 of one of two hosts mid-burst: {len(burst.sent)} requests sent "
              f"({len(burst.sent) - burst.killed_after} after the kill), {len(answered)} "
              f"answered 2xx, {len(burst.sent) - len(answered)} unanswered ({burst.cut} cut "
              "by the kill, the others refused) and sent again to the other host; "
              f"{acknowledged} acknowledged writes, "
              f"{acknowledged - sum(map(len, lost.values()))} stored, lost "
              f"{sum(map(len, lost.values()))}; links: {links_sent} sent, {burst.links} "
              f"acknowledged, {len(stored['link'] & burst.acknowledged['link'])} stored, lost "
              f"{len(lost['link'])}")
        assert lost == {kind: set() for kind in lost}
        assert stored["link"] == burst.acknowledged["link"]  # and no link made up
        _assert_nothing_half_written(url, retailer_id(shop))

        # the killed host, started again where it was, serves at once: its first requests
        restarted = hosts[0].again()
        try:
            with httpx.Client(base_url=restarted.url, timeout=10) as again:
                back = on(again, shop)
                user_id, _ = min(burst.acknowledged["link"])
                assert back.membership(user_id).status_code == 200
                assert back.create_user("after-restart").status_code == 200
                token = back.linking_token(back.instacart_user("after-restart@example.com"))
                assert back.link("after-restart", token).json() == {"success": True}
        finally:
            restarted.stop()
        assert_no_unexpected_failure(restarted, hosts[1])


# --- one rate limit over two hosts ---------------------------------------------------------------

def test_a_rate_limit_holds_across_both_hosts(postgres_url: str,
                                              shared: SharedRedis) -> None:
    """Reads alternating between the hosts at three times the rate: what is admitted is the
    burst and the rate over the time they took, within 10%, not twice that (one bucket a
    host)."""
    rate, seconds = 20, 3
    url = upgraded(postgres_url)
    env = {"CONNECTLINK_RATE_LIMIT_API": str(rate), "CONNECTLINK_REDIS_PREFIX": shared.prefix}
    with two_hosts(url, env={**env, "CONNECTLINK_REDIS_URL": shared.url}) as (a, b), \
            httpx.Client(base_url=a.url, timeout=10) as http_a, \
            httpx.Client(base_url=b.url, timeout=10) as http_b:
        for http in (http_a, http_b):  # both up and connected before anything is counted
            assert http.get("/openapi.json").status_code == 200
        shops = [new_retailer(http_a, url)]
        shops.append(on(http_b, shops[0]))
        turn = itertools.count()
        statuses, took = paced(lambda: shops[next(turn) % 2].get(NOBODY).status_code,
                               3 * rate, seconds)
    by_host = [statuses[0::2], statuses[1::2]]
    expected = 2 * rate + rate * took  # the burst, then the rate
    admitted = statuses.count(ADMITTED)
    print(f"\none limit of {rate}/s over two hosts: {admitted} of {len(statuses)} admitted in "
          f"{took:.2f} s, {expected:.1f} expected")
    assert set(statuses) == {ADMITTED, 429}
    assert all({ADMITTED, 429} == set(answers) for answers in by_host)  # each host, both
    assert abs(admitted - expected) <= 0.1 * expected, (statuses, took)
    assert_no_unexpected_failure(a, b)


# --- the emulator's controls, across hosts -------------------------------------------------------

class Admin:
    """The admin plane of one host, from the loopback interface."""

    def __init__(self, http: httpx.Client, shop: Retailer) -> None:
        self.http, self.retailer = http, retailer_id(shop)

    def clock(self, **change: Any) -> dict[str, Any]:
        path = f"/_connectlink/retailers/{self.retailer}/clock"
        answer = self.http.post(path, json=change) if change else self.http.get(path)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def fault(self, **rule: Any) -> int:
        answer = self.http.post("/_connectlink/faults", json={
            "retailer_id": self.retailer, "endpoint": GET_USER, **rule})
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])

    def faults(self) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = self.http.get("/_connectlink/faults").json()["faults"]
        return rules

    def journal_paths(self) -> list[str]:
        answer = self.http.get(f"/_connectlink/retailers/{self.retailer}/journal",
                               params={"operation": "get_user"})
        assert answer.status_code == 200, answer.text
        return [entry["path"] for entry in answer.json()["entries"]]


def test_controls_set_through_one_host_act_on_the_other(postgres_url: str) -> None:
    """Two workers a host: a change answered by one host holds in all four workers at once
    (a new connection a request, so that the kernel hands them to either worker)."""
    url = upgraded(postgres_url)
    fresh = httpx.Limits(max_keepalive_connections=0)
    with two_hosts(url, workers=2) as (a, b), \
            httpx.Client(base_url=a.url, timeout=10, limits=fresh) as http_a, \
            httpx.Client(base_url=b.url, timeout=10, limits=fresh) as http_b:
        shop_a = new_retailer(http_a, url)
        shop_b = on(http_b, shop_a)
        admin_a, admin_b = Admin(http_a, shop_a), Admin(http_b, shop_a)

        # a clock moved through A: the bearer token has expired in every worker of B
        assert admin_a.clock(advance_seconds=DAY + 1)["offset_seconds"] >= DAY
        assert [shop_b.get(NOBODY).status_code for _ in range(6)] == [401] * 6
        assert admin_b.clock()["offset_seconds"] >= DAY
        assert admin_b.clock(reset=True)["offset_seconds"] < 1  # and back, through B
        assert [shop_a.get(NOBODY).status_code for _ in range(6)] == [ADMITTED] * 6

        # a fault added through A fires on B's first request, and three times over both hosts
        rule = admin_a.fault(fault="503", times=3)
        statuses = [(shop_b, shop_a)[n % 2].get(NOBODY).status_code for n in range(8)]
        assert statuses == [503] * 3 + [ADMITTED] * 5
        assert [(r["id"], r["fired"]) for r in admin_b.faults()] == [(rule, 3)]

        # a snapshot taken through A, restored through A after changes made through B: B
        # holds the state, the clock and the rules of the snapshot
        assert shop_a.create_user("before").status_code == 200
        snapshot = http_a.get("/_connectlink/snapshot").json()
        assert shop_b.create_user("after").status_code == 200
        admin_b.fault(fault="503")
        assert shop_a.get("/v2/fulfillment/users/before").status_code == 503
        admin_b.clock(advance_seconds=DAY + 1)
        assert shop_a.get("/v2/fulfillment/users/before").status_code == 401
        assert http_a.post("/_connectlink/restore", json=snapshot).json() == {"success": True}
        for _ in range(4):  # each of B's workers
            assert shop_b.get("/v2/fulfillment/users/before").status_code == 200
            assert shop_b.get("/v2/fulfillment/users/after").json()["error"]["message"] == (
                "User Not Found")
        assert abs(admin_b.clock()["offset_seconds"]) < 1
        assert [r["id"] for r in admin_b.faults()] == [rule]

        # the journal read through either host holds every request either host answered, the
        # last one answered by the other host just before
        for n, (reader, last) in enumerate([(admin_a, shop_b), (admin_b, shop_a)] * 2):
            first = shop_a if last is shop_b else shop_b
            paths = [f"/v2/fulfillment/users/j{n}-{k}" for k in range(12)]
            for k, path in enumerate(paths):
                assert (first, last)[k % 2].get(path).status_code == ADMITTED
            journal = reader.journal_paths()
            assert [p for p in paths if journal.count(p) != 1] == [], n
    assert_no_unexpected_failure(a, b)


# --- outages: PostgreSQL and Redis restarted under load -------------------------------------------

class OwnPostgres:
    """A PostgreSQL cluster of the test's own (initdb into a temporary directory, a free port),
    to stop and start again without touching the shared server other tests use."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        # in /tmp itself: pytest's tmp_path lies under a directory only its owner may enter
        self.base = Path(tempfile.mkdtemp(prefix="connectlink-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/connectlink"
        self.as_owner: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            self.as_owner = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.base, "postgres", "postgres")

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self.as_owner, str(self.bin / tool), *args],
                              capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)}: {done.stdout}{done.stderr}")

    def create(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        self.start()

        async def createdb() -> None:
            connection = await asyncpg.connect(
                f"postgresql://postgres@127.0.0.1:{self.port}/postgres", timeout=10)
            try:
                await connection.execute("CREATE DATABASE connectlink")
            finally:
                await connection.close()

        run_sync(createdb())

    def start(self) -> None:
        # fsync off: nothing here survives a power cut, and a clean stop checkpoints anyway
        options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.base / "log"),
                  "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: every session terminated, queries in flight included."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    for directory in (*PG_BIN_DIRS, *([str(Path(found).parent)] if found else [])):
        if all((Path(directory) / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(directory)
    return None


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    bin_dir = _postgres_bin()
    if bin_dir is None:
        missing("no initdb, pg_ctl and postgres in /usr/lib/postgresql/*/bin or on PATH")
    assert bin_dir is not None
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _has_user("postgres")):
        missing("running as root without runuser or a postgres user to run initdb as")
    cluster = OwnPostgres(bin_dir)
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.destroy()


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def private_redis() -> Iterator[OwnRedis]:
    """A redis-server of the test's own (test_rate_limits' ``OwnRedis``), in a directory that
    is its alone."""
    if shutil.which("redis-server") is None:
        missing("redis-server is not installed")
    directory = Path(tempfile.mkdtemp(prefix="connectlink-redis-"))
    server = OwnRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class Answer:
    client: int
    host: int
    kind: str  # "write" (user c<client>, first name v<version>), "read" or "limited"
    version: int  # the last version this client had sent when the request went out
    sent: float
    answered: float
    status: int  # 0: no answer at all
    body: Any
    retry_after: str | None


class Outage:
    """When the outage really began and ended, on ``time.monotonic()``: ``began``, the earliest
    it could affect a request; ``total``, from when the service was gone; ``lifting``, from
    when it may be back; ``ended``, from when it is."""

    began = total = lifting = ended = math.inf


Request = Callable[[httpx.AsyncClient, int, int], Awaitable[tuple[str, httpx.Response]]]


async def _load(hosts: tuple[Host, Host], request: Request, clients: int,
                conduct: Callable[[list[Answer]], Awaitable[None]]) -> list[Answer]:
    """``clients`` clients sending ``request(http, client, version)`` in turn to each host,
    every 10 ms, until ``conduct(answers)`` returns; an answer a request, none lost."""
    answers: list[Answer] = []
    done = asyncio.Event()

    async def client(n: int, https: list[httpx.AsyncClient]) -> None:
        for version in itertools.count(1):
            if done.is_set():
                return
            host, sent = (n + version) % 2, time.monotonic()
            try:
                kind, response = await request(https[host], n, version)
            except httpx.TransportError:
                answers.append(Answer(n, host, "?", version, sent, time.monotonic(), 0,
                                      None, None))
                continue
            try:
                body: Any = response.json()
            except ValueError:
                body = response.text
            answers.append(Answer(n, host, kind, version, sent, time.monotonic(),
                                  response.status_code, body,
                                  response.headers.get("retry-after")))
            await asyncio.sleep(0.01)

    async def conductor() -> None:
        try:
            await conduct(answers)
        finally:
            done.set()

    async with contextlib.AsyncExitStack() as stack:
        https = [await stack.enter_async_context(httpx.AsyncClient(base_url=h.url, timeout=20))
                 for h in hosts]
        await asyncio.gather(conductor(), *(client(n, https) for n in range(clients)))
    return answers


async def until(condition: Callable[[], bool], give_up_after: float = 15) -> None:
    """Wait for ``condition``; past ``give_up_after`` seconds, go on and let the assertions
    say what did not happen."""
    deadline = time.monotonic() + give_up_after
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


PG_CLIENTS = 6
WARM_UP = 3  # answers each client gets before the outage
OUTAGE_AT_LEAST = 1.5  # seconds the outage is held at least (the stimulus; nothing is timed)
NOTICED = 2  # 503s each client gets before the outage ends
AFTER = 10  # requests each client sends once the outage is over


def test_postgres_restarted_under_load_answers_503_and_resumes(
    own_postgres: OwnPostgres,
) -> None:
    """PostgreSQL stopped (every session terminated, queries in flight included) and started
    again while clients write through one host and read through the other: a 503 with the
    documented envelope only for requests that overlapped the outage, never a 500 nor a
    dropped connection, nothing served while it was down, everything served once it is back,
    by the same ConnectLink processes, and no acknowledged write lost."""
    url = upgraded(own_postgres.url)
    with two_hosts(url) as hosts, httpx.Client(base_url=hosts[0].url, timeout=10) as http:
        pids = [host.process.pid for host in hosts]
        shop = new_retailer(http, url)
        headers = {"Authorization": f"Bearer {shop.token}"}
        for n in range(PG_CLIENTS):  # every client's user exists: a read is never a 400
            assert shop.create_user(f"c{n}", "v0").status_code == 200
        outage = Outage()

        async def request(http: httpx.AsyncClient, n: int, version: int
                          ) -> tuple[str, httpx.Response]:
            if version % 2:
                return "write", await http.post("/v2/fulfillment/users", headers=headers, json={
                    "user_id": f"c{n}", "first_name": f"v{version}"})
            return "read", await http.get(f"/v2/fulfillment/users/c{n}", headers=headers)

        def each(answers: list[Answer], status: int | None, since: float = -math.inf) -> int:
            """The fewest answers of ``status`` (any: None) a client has had since then."""
            return min(sum(a.client == c and status in (None, a.status) and a.sent > since
                           for a in answers) for c in range(PG_CLIENTS))

        async def conduct(answers: list[Answer]) -> None:
            await until(lambda: each(answers, 200) >= WARM_UP)
            outage.began = time.monotonic()
            await asyncio.to_thread(own_postgres.stop)
            outage.total = time.monotonic()
            try:
                await asyncio.sleep(OUTAGE_AT_LEAST)
                await until(lambda: each(answers, 503, outage.began) >= NOTICED)
            finally:
                outage.lifting = time.monotonic()
                await asyncio.to_thread(own_postgres.start)
                outage.ended = time.monotonic()
            await until(lambda: each(answers, None, outage.ended) >= AFTER)

        answers = run_sync(_load(hosts, request, PG_CLIENTS, conduct))
        assert [host.process.poll() for host in hosts] == [None, None]  # never restarted
        assert [host.process.pid for host in hosts] == pids
        stored = dict(query_sql(url, "SELECT user_id, first_name FROM connect_users "
                                     f"WHERE retailer_id = {retailer_id(shop)}"))

    unavailable = [a for a in answers if a.status == 503]
    after = [a for a in answers if a.sent > outage.ended]
    print(f"\nPostgreSQL restarted under two hosts: {len(answers)} answers, "
          f"{len(unavailable)} of them 503, {len(after)} sent after it was back")
    assert outage.began <= outage.total <= outage.lifting <= outage.ended < math.inf
    # Fails now and then (a run in two or three): a session PostgreSQL ended while it sat idle
    # in a host's pool answers the next request with a 500 (asyncpg's InternalClientError
    # "cannot switch to state 12; another operation (2) is in progress"). The test below
    # shows it every time.
    assert [a for a in answers if a.status not in (200, 503)][:3] == [], (  # no 500, no drop
        unexpected_failures(*hosts))
    assert [a for a in unavailable if a.body != UNAVAILABLE or a.retry_after != "1"][:3] == []
    assert [a for a in unavailable if not outage.began < a.answered
            or not a.sent < outage.ended][:3] == []
    assert {a.host for a in unavailable} == {0, 1}  # both hosts saw it, and said so
    assert [a for a in answers if a.status == 200 and outage.total < a.sent
            and a.answered < outage.lifting][:3] == []  # it really was down
    assert [a for a in after if a.status != 200][:3] == []  # and back, by itself
    assert min(sum(a.client == c for a in after) for c in range(PG_CLIENTS)) >= AFTER
    # no acknowledged write lost: a read (on the other host) shows at least the version last
    # acknowledged before it was sent; the database ends with each client's last write
    for read in (a for a in answers if a.kind == "read" and a.status == 200):
        acknowledged = max((a.version for a in answers if a.client == read.client
                            and a.kind == "write" and a.status == 200
                            and a.answered <= read.sent), default=0)
        assert acknowledged <= int(read.body["first_name"][1:]) <= read.version, read
    last = {f"c{c}": max(a.version for a in answers if a.client == c and a.kind == "write")
            for c in range(PG_CLIENTS)}
    assert {user: stored[user] for user in last} == {
        user: f"V{version}" for user, version in last.items()}
    assert_no_unexpected_failure(*hosts)


TERMINATIONS = 12


def test_postgres_ending_idle_sessions_is_a_503_at_most_never_a_500(
    own_postgres: OwnPostgres,
) -> None:
    """What a fast shutdown, a failover or ``pg_terminate_backend`` does to each session idle
    in a host's pool: PostgreSQL ends it (FATAL 57P01, "terminating connection due to
    administrator command") and closes it. The next request on either host is served on a
    fresh connection or answered the documented 503 (README: restart, failover, cut
    connections), never a 500; and once the sessions are left alone, everything is served."""
    url = upgraded(own_postgres.url)
    admin_url = f"postgresql://postgres@127.0.0.1:{own_postgres.port}/postgres"
    with two_hosts(url) as (a, b), httpx.Client(base_url=a.url, timeout=10) as http_a, \
            httpx.Client(base_url=b.url, timeout=10) as http_b:
        shops = [new_retailer(http_a, url)]
        shops.append(on(http_b, shops[0]))

        async def end_the_hosts_sessions() -> int:
            connection = await asyncpg.connect(admin_url, timeout=10)
            try:
                ended: int = await connection.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'connectlink' AND pid <> pg_backend_pid()")
                return ended
            finally:
                await connection.close()

        answers: list[httpx.Response] = []
        for _ in range(TERMINATIONS):
            assert [shop.get(NOBODY).status_code for shop in shops] == [ADMITTED] * 2
            assert run_sync(end_the_hosts_sessions()) >= 2  # at least a session a host
            answers += [shops[n % 2].get(NOBODY) for n in range(4)]  # as they are ending
        settled = [shops[n % 2].get(NOBODY).status_code for n in range(6)]
    statuses = [answer.status_code for answer in answers]
    print(f"\nPostgreSQL ended the hosts' idle sessions {TERMINATIONS} times: next requests "
          f"answered {statuses}")
    assert [s for s in statuses if s not in (ADMITTED, 503)] == [], unexpected_failures(a, b)
    assert [r.json() for r in answers if r.status_code == 503 and (
        r.json() != UNAVAILABLE or r.headers.get("retry-after") != "1")] == []
    assert settled == [ADMITTED] * 6
    assert_no_unexpected_failure(a, b)


REDIS_RATE = 10  # a second, shared by both hosts; the load is some 20 times that
REDIS_CLIENTS = 4
TAIL = 2.0  # seconds of load measured once both hosts refuse again


def test_redis_restarted_under_load_fails_open_and_limits_come_back(
    postgres_url: str, private_redis: OwnRedis,
) -> None:
    """Redis killed and started again (empty, on its port) while clients read through both
    hosts far over the limit: never a 500 nor a dropped connection; while it is down every
    request is served (fail open); once it is back both hosts refuse again, and over the next
    seconds admit the rate, within 10%."""
    url = upgraded(postgres_url)
    env = {"CONNECTLINK_RATE_LIMIT_API": str(REDIS_RATE), "CONNECTLINK_REDIS_URL":
           private_redis.url, "CONNECTLINK_REDIS_PREFIX": "two-hosts:"}
    with two_hosts(url, env=env) as hosts, httpx.Client(base_url=hosts[0].url, timeout=10) as http:
        shop = new_retailer(http, url)
        headers = {"Authorization": f"Bearer {shop.token}"}
        outage, back = Outage(), [math.inf]

        async def request(http: httpx.AsyncClient, n: int, version: int
                          ) -> tuple[str, httpx.Response]:
            return "read", await http.get(NOBODY, headers=headers)

        def refused_by_both(answers: list[Answer], since: float) -> float:
            """When both hosts had answered a 429 to a request sent since then (inf: not)."""
            return max(min((a.answered for a in answers if a.host == host and a.status == 429
                            and a.sent > since), default=math.inf) for host in (0, 1))

        async def conduct(answers: list[Answer]) -> None:
            await until(lambda: refused_by_both(answers, -math.inf) < math.inf)
            outage.began = time.monotonic()
            await asyncio.to_thread(private_redis.stop)
            outage.total = time.monotonic()
            try:
                await asyncio.sleep(OUTAGE_AT_LEAST)
            finally:
                outage.lifting = time.monotonic()
                await asyncio.to_thread(private_redis.start)
                outage.ended = time.monotonic()
            await until(lambda: refused_by_both(answers, outage.ended) < math.inf)
            back[0] = refused_by_both(answers, outage.ended)
            if back[0] < math.inf:
                await asyncio.sleep(TAIL)

        answers = run_sync(_load(hosts, request, REDIS_CLIENTS, conduct))
    during = [a for a in answers if outage.total < a.sent and a.answered < outage.lifting]
    tail = [a for a in answers if a.sent > back[0]]
    took = max((a.answered for a in tail), default=back[0]) - back[0]
    admitted = sum(a.status == ADMITTED for a in tail)
    print(f"\nRedis restarted under two hosts: {len(answers)} answers, {len(during)} while it "
          f"was down; once both hosts refused again, {admitted} of {len(tail)} admitted in "
          f"{took:.2f} s, {REDIS_RATE * took:.1f} expected")
    assert outage.began <= outage.total <= outage.lifting <= outage.ended < math.inf
    assert [a for a in answers if a.status not in (ADMITTED, 429)][:3] == [], (  # no 500
        unexpected_failures(*hosts))
    # down: every request served, by both hosts
    assert len(during) >= 20 and {a.host for a in during} == {0, 1}
    assert [a for a in during if a.status != ADMITTED][:3] == []
    # back: both hosts refuse again, and admit the rate between them (one bucket again)
    assert back[0] < math.inf, "the limits did not come back on both hosts"
    assert {a.host for a in tail if a.status == 429} == {0, 1}
    assert abs(admitted - REDIS_RATE * took) <= 0.1 * REDIS_RATE * took + 1, (admitted, took)
    for host in hosts:  # one warning a host, not one a request; and the all-clear
        assert host.output.count("does not answer") == 1, host.output[-4000:]
        assert "answers again: rate limits apply again" in host.output, host.output[-4000:]
    assert_no_unexpected_failure(*hosts)

