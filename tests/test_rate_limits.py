"""Rate limits (decisions.md "Rate limits" and "Profiles"), against real servers on each engine.

A token bucket per OAuth client and bucket (the token endpoints', the API's), twice the rate at
once, then the rate; over it a 429 envelope with ``Retry-After``; requests without a valid
client limited by address. Off in the emulator unless set, on in production. Shared through
Redis by every worker: two workers hold one limit, and a Redis that goes away lets requests
through until it is back. Counts are asserted with a tolerance drawn from the time the requests
took, never timings themselves; every load is a few seconds on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from conftest import REDIS, SECRET_KEY, START, SharedRedis, make_emulator, missing, upgraded
from connectlink import errors
from connectlink.clock import ManualClock
from connectlink.server import limits
from connectlink.server.app import create_app
from connectlink.server.operations import OPERATIONS, Family
from connectlink.settings import Settings
from support import Retailer, ServeProcess, ThreadServer, new_retailer

ENVELOPE = (b'{"error":{"message":"Too many requests. Please retry later.","code":2003},'
            b'"meta":{}}')
NOBODY = "/v2/fulfillment/users/nobody"  # a Connect read: 400 User Not Found when admitted
ADMITTED = 400
served = contextlib.contextmanager(make_emulator)


class OwnRedis:
    """A redis-server of the test's own on a free port, to stop and start again (empty)."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        missing("redis-server is not installed")
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def paced(send: Callable[[], int], per_second: float, seconds: float) -> tuple[list[int], float]:
    """``send`` at ``per_second`` for ``seconds``: the statuses, and the time they took."""
    statuses: list[int] = []
    started = time.monotonic()
    for i in range(int(per_second * seconds)):
        delay = started + i / per_second - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        statuses.append(send())
    return statuses, time.monotonic() - started


def until_refused(send: Callable[[], int], seconds: float = 10) -> list[int]:
    """``send`` every 20 ms until a 429, for ``seconds`` at most."""
    statuses: list[int] = []
    deadline = time.monotonic() + seconds
    while 429 not in statuses and time.monotonic() < deadline:
        statuses.append(send())
        time.sleep(0.02)
    return statuses


def reads(shop: Retailer, n: int) -> list[int]:
    return [shop.get(NOBODY).status_code for _ in range(n)]


# the wire, the buckets and the keys ----------------------------------------------------------
@pytest.mark.parametrize("buckets", ["worker", "redis"])
def test_over_the_limit_is_a_429_envelope_with_retry_after(
    database_url: str, buckets: str, request: pytest.FixtureRequest
) -> None:
    where = {}
    if buckets == "redis":
        redis_of_the_test: SharedRedis = request.getfixturevalue("shared")
        where = {"redis_url": redis_of_the_test.url, "redis_prefix": redis_of_the_test.prefix}
    # 0.2 a second: a burst of one, and five seconds to the next token
    with served(database_url, rate_limit_api=0.2, rate_limit_token=0.2, **where) as emulator:
        shop = emulator.retailer()
        token = shop.access_token()
        refused_token = shop.token_request(grant_type="client_credentials")
        assert shop.get(NOBODY, token=token).status_code == ADMITTED
        for refused in (refused_token, shop.get(NOBODY, token=token)):
            assert refused.status_code == 429
            assert refused.content == ENVELOPE
            assert refused.headers["retry-after"] == "5"
            assert refused.headers["content-type"] == "application/json"
            rebuilt = errors.from_response(429, refused.json(), refused.headers)
            assert isinstance(rebuilt, errors.RateLimited) and rebuilt.retry_after == 5


def test_a_client_gets_twice_the_rate_at_once_then_the_rate(database_url: str) -> None:
    rate = 5
    with served(database_url, rate_limit_api=rate) as emulator:
        shop = emulator.retailer()
        shop.access_token()
        started = time.monotonic()
        first = reads(shop, 6 * rate)
        emptied = time.monotonic()
        assert first[:2 * rate] == [ADMITTED] * 2 * rate  # the burst
        assert set(first[2 * rate:]) <= {ADMITTED, 429} and 429 in first
        assert first.count(ADMITTED) <= 2 * rate + rate * (emptied - started) + 1
        time.sleep(1.0)  # refills about `rate` tokens
        again = reads(shop, 4 * rate)
        refilled = time.monotonic() - emptied
        assert rate - 1 <= again.count(ADMITTED) <= rate * refilled + 2
        assert again[-1] == 429


def test_one_client_over_its_limit_leaves_the_others_alone(database_url: str) -> None:
    with served(database_url, rate_limit_api=2, rate_limit_token=2) as emulator:
        throttled, other = emulator.retailer(), emulator.retailer()
        throttled.access_token()
        other.access_token()
        assert 429 in reads(throttled, 10)
        assert reads(other, 4) == [ADMITTED] * 4  # its whole burst
        issued = [throttled.token_request(grant_type="client_credentials").status_code
                  for _ in range(8)]
        assert 429 in issued
        assert other.token_request(grant_type="client_credentials").status_code == 200


def test_requests_without_a_valid_client_are_limited_by_address(database_url: str) -> None:
    with served(database_url, rate_limit_api=2, rate_limit_token=2) as emulator:
        shop, http = emulator.retailer(), emulator.http
        shop.access_token()
        bad = [http.get(NOBODY, headers={"Authorization": "Bearer not-a-token"} if i % 2 else {})
               for i in range(10)]
        assert [r.status_code for r in bad[:4]] == [401] * 4  # the address's burst
        assert {r.status_code for r in bad[4:]} <= {401, 429} and bad[-1].status_code == 429
        assert bad[-1].content == ENVELOPE
        assert shop.get(NOBODY).status_code == ADMITTED  # a client from there: its own bucket
        garbage = [http.post("/v2/oauth/token", content=b"{not json",
                             headers={"Content-Type": "application/json"}).status_code
                   for _ in range(8)]
        assert garbage[:4] == [400] * 4 and garbage[-1] == 429
        assert shop.token_request(grant_type="client_credentials").status_code == 200
        transport = httpx.HTTPTransport(local_address="127.0.0.2")  # another address
        with httpx.Client(base_url=http.base_url, transport=transport) as elsewhere:
            assert elsewhere.get(NOBODY).status_code == 401
            assert elsewhere.post("/v2/oauth/token", content=b"{not json",
                                  headers={"Content-Type": "application/json"}).status_code == 400


def test_wrong_secrets_naming_a_client_spend_their_address_not_the_client(
    database_url: str
) -> None:
    """A client_id travels in every authorization URL: naming it without its secret must not
    spend its bucket (decisions.md "Rate limits")."""
    with served(database_url, rate_limit_token=1) as emulator:
        shop = emulator.retailer()
        transport = httpx.HTTPTransport(local_address="127.0.0.3")
        with httpx.Client(base_url=emulator.http.base_url, transport=transport) as attacker:
            guesses = [attacker.post("/v2/oauth/token", json={
                "grant_type": "client_credentials", "client_id": shop.client_id,
                "client_secret": f"guess-{n}"}).status_code for n in range(6)]
            assert guesses[:2] == [401, 401] and guesses[-1] == 429  # the address's burst
        assert [shop.token_request(grant_type="client_credentials").status_code
                for _ in range(2)] == [200, 200]  # the client's own burst, whole
        assert shop.token_request(grant_type="client_credentials").status_code == 429


def test_the_token_endpoints_have_a_bucket_of_their_own(database_url: str) -> None:
    with served(database_url, rate_limit_api=1, rate_limit_token=1) as emulator:
        shop = emulator.retailer()
        token = shop.access_token()  # the token endpoints' bucket: one of two
        assert [shop.get(NOBODY, token=token).status_code for _ in range(3)] == [
            ADMITTED, ADMITTED, 429]
        revoked = shop.http.post("/v2/oauth/token/revoke", json={
            "client_id": shop.client_id, "client_secret": shop.client_secret, "token": token})
        assert revoked.status_code == 200  # the API's bucket is empty, not this one
        assert shop.token_request(grant_type="client_credentials").status_code == 429
        assert emulator.http.get("/openapi.json").status_code == 200  # no bucket at all
        assert emulator.http.get("/docs").status_code == 200


def test_the_operation_table_decides_the_bucket() -> None:
    buckets = {op.name: op.bucket for op in OPERATIONS}
    assert buckets.pop("issue_token") == buckets.pop("revoke_token") == limits.TOKEN
    for op in OPERATIONS:
        if op.family in {Family.CONNECT, Family.SANDBOX}:
            assert buckets[op.name] == limits.API, op.name
        elif op.family in {Family.PAGES, Family.DOCS}:
            assert buckets[op.name] is None, op.name
            assert errors.RateLimited not in {type(e) for e in op.refusals()}
    # a limit that is off gates nothing: the operation runs as if there were no limiter
    assert limits.Limiter({limits.TOKEN: 1.0}).gate(limits.API) is None
    assert limits.Limiter.for_settings(Settings()) is None


def test_a_worker_keeps_a_bounded_number_of_buckets() -> None:
    local, rate = limits.LocalBuckets(max_keys=3), limits.Rate(1.0)
    for key in "abc":
        assert local.take(limits.API, key, rate) == 0
    local.take(limits.API, "a", rate)  # used again: now the most recent
    local.take(limits.API, "d", rate)
    assert list(local.state) == [(limits.API, k) for k in "cad"]  # "b", the oldest, went
    assert local.take(limits.API, "a", rate) > 0  # its bucket was kept, and is empty now


# defaults and settings ------------------------------------------------------------------------
def test_limits_are_off_in_the_emulator_and_on_in_production(database_url: str) -> None:
    emulator_rates = Settings.for_profile("emulator")
    production = Settings.for_profile("production", secret_key=SECRET_KEY)
    assert (emulator_rates.rate_limit_token, emulator_rates.rate_limit_api) == (0, 0)
    assert (production.rate_limit_token, production.rate_limit_api) == (20, 100)
    wrong = {"client_id": "nobody", "client_secret": "wrong", "grant_type": "client_credentials"}
    for profile, limited in (("emulator", False), ("production", True)):
        with served(database_url, profile=profile) as emulator:
            started = time.monotonic()
            statuses = [emulator.http.post("/v2/oauth/token", json=wrong).status_code
                        for _ in range(100)]
            took = time.monotonic() - started
        assert statuses[:40] == [401] * 40, profile  # production's burst: 40
        assert (429 in statuses) is limited, profile
        if limited:
            assert statuses.count(401) <= 40 + 20 * took + 1


def test_the_rates_and_redis_come_from_the_environment() -> None:
    settings = Settings.from_env({
        "CONNECTLINK_PROFILE": "production", "CONNECTLINK_SECRET_KEY": SECRET_KEY,
        "CONNECTLINK_RATE_LIMIT_API": "0", "CONNECTLINK_RATE_LIMIT_TOKEN": "2.5",
        "CONNECTLINK_REDIS_URL": REDIS, "CONNECTLINK_REDIS_PREFIX": "shop:"})
    assert (settings.rate_limit_token, settings.rate_limit_api) == (2.5, 0.0)
    assert (settings.redis_url, settings.redis_prefix) == (REDIS, "shop:")
    assert Settings.from_env(settings.to_env()) == settings  # what a worker rebuilds
    for bad in ("fast", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match="CONNECTLINK_RATE_LIMIT_API"):
            Settings.from_env({"CONNECTLINK_RATE_LIMIT_API": bad})
    with pytest.raises(ValueError, match="CONNECTLINK_REDIS_URL"):
        Settings.from_env({"CONNECTLINK_REDIS_URL": "http://127.0.0.1:6379"})


# shared through Redis -------------------------------------------------------------------------
def test_buckets_in_redis_vanish_once_full_again(database_url: str, shared: SharedRedis) -> None:
    with served(database_url, rate_limit_api=2, redis_url=shared.url,
                redis_prefix=shared.prefix) as emulator:
        shop = emulator.retailer()
        shop.access_token()
        statuses = reads(shop, 6)
        assert statuses[:4] == [ADMITTED] * 4 and statuses[-1] == 429
        keys = list(shared.client.scan_iter(f"{shared.prefix}*"))
        assert len(keys) == 1 and re.fullmatch(rf"{shared.prefix}api:client:\d+", keys[0])
        # full again after burst / rate = 2 s; the key lives a second more
        assert 0 < shared.client.pttl(keys[0]) <= 3000


def _two_workers(database_url: str, redis_url: str, prefix: str, rate: float
                 ) -> tuple[ServeProcess, httpx.Client, Retailer]:
    server = ServeProcess(database_url, "--no-demo", "--no-access-log", "--workers", "2",
                          "--redis", redis_url,
                          env={"CONNECTLINK_RATE_LIMIT_API": str(rate),
                               "CONNECTLINK_REDIS_PREFIX": prefix})
    # a new connection a request, so that the kernel hands requests to either worker
    http = httpx.Client(base_url=server.url, timeout=10,
                        limits=httpx.Limits(max_keepalive_connections=0))
    for _ in range(10):  # both workers up, before anything is counted (no bucket here)
        assert http.get("/openapi.json").status_code == 200
    shop = new_retailer(http, database_url)
    shop.access_token()
    return server, http, shop


def test_two_workers_on_redis_hold_one_limit(database_url: str, shared: SharedRedis) -> None:
    rate, seconds = 10, 3
    server, http, shop = _two_workers(database_url, shared.url, shared.prefix, rate)
    try:
        statuses, took = paced(lambda: shop.get(NOBODY).status_code, 3 * rate, seconds)
    finally:
        http.close()
        server.stop()
    expected = 2 * rate + rate * took  # the burst, then the rate
    assert set(statuses) == {ADMITTED, 429}
    assert abs(statuses.count(ADMITTED) - expected) <= 0.1 * expected, (statuses, took)


def test_without_redis_requests_are_served_and_limits_come_back(
    database_url: str, own_redis: OwnRedis
) -> None:
    rate = 5
    server, http, shop = _two_workers(database_url, own_redis.url, "outage:", rate)
    try:
        assert 429 in reads(shop, 4 * rate)
        own_redis.stop()
        assert reads(shop, 30) == [ADMITTED] * 30  # fail open: every one served
        own_redis.start()  # empty: every bucket full again
        started = time.monotonic()
        after = until_refused(lambda: shop.get(NOBODY).status_code)
        took = time.monotonic() - started
    finally:
        http.close()
        output = server.stop()
    assert after[-1] == 429, after
    # the burst and the rate, and what each worker let through before it tried Redis again
    assert after.count(ADMITTED) <= 2 * rate + rate * took + limits.RECONNECT_EVERY / 0.02 + 1
    assert 1 <= output.count("does not answer") <= 2, output  # one a worker, not one a request
    assert "answers again: rate limits apply again" in output, output


def test_a_worker_counts_what_it_served_without_redis(
    database_url: str, own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.for_profile("emulator", database_url=upgraded(database_url),
                                    access_log=False, pool_size=4, rate_limit_api=5,
                                    redis_url=own_redis.url)
    server = ThreadServer(settings, ManualClock(START))
    app = create_app(settings, clock=server.clock)
    server.start(app)
    limiter = app.state.context.limiter
    try:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            shop = new_retailer(http, settings.database_url)
            shop.access_token()
            with caplog.at_level(logging.WARNING, logger="connectlink.limits"):
                own_redis.stop()
                assert reads(shop, 12) == [ADMITTED] * 12
            assert limiter.fail_open_count == 12
            warnings = [r for r in caplog.records if r.name == "connectlink.limits"
                        and r.levelno == logging.WARNING]
            assert len(warnings) == 1, warnings  # one line, not one a request
            own_redis.start()
            assert until_refused(lambda: shop.get(NOBODY).status_code)[-1] == 429
            counted = limiter.fail_open_count
            reads(shop, 3)
            assert limiter.fail_open_count == counted  # limited again, nothing more let through
    finally:
        server.stop()
