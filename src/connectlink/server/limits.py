"""Rate limits (decisions.md "Rate limits"): a token bucket per OAuth client and bucket,
refilled continuously at the configured rate, holding twice the rate (at least one request).

The operation table names each operation's bucket (``Operation.bucket``: ``token`` for the
token endpoints, ``api`` for the rest of the API) and asks ``Limiter.gate`` for its gate once,
when the routes are built: an operation whose limit is off gets no gate and pays nothing per
request. Keys say what was proven: ``client:<pk>`` (a client that authenticated, by its
bearer token or its secret) or ``address:<ip>`` (nothing, or nothing valid, was presented: a
``client_id`` nobody proved names no bucket).

The buckets live in the worker (``LocalBuckets``), or in Redis (``RedisBuckets``) so that one
limit holds across every worker and host that names the same Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from connectlink.errors import RateLimited
from connectlink.settings import Settings
from connectlink.storage import masked_url

TOKEN = "token"  # POST /v2/oauth/token and /v2/oauth/token/revoke
API = "api"  # every other API operation: the Connect and sandbox families
MAX_KEYS = 100_000  # buckets one worker keeps; the least recently used goes first
REDIS_TIMEOUT = 0.05  # seconds: the most a request waits on Redis, connecting included
RECONNECT_EVERY = 0.5  # seconds between tries of a Redis that did not answer
WARN_EVERY = 60.0  # seconds: at most one warning this often while Redis does not answer
log = logging.getLogger("connectlink.limits")

Gate = Callable[[str], Awaitable[None]]  # admits a request of this key, or raises RateLimited


@dataclass(frozen=True, slots=True)
class Rate:
    """Requests a second, and the burst: twice that, and at least one request."""

    per_second: float

    @property
    def burst(self) -> float:
        return max(1.0, 2 * self.per_second)


def client_key(client_pk: int) -> str:
    return f"client:{client_pk}"


def address_key(address: str | None) -> str:
    return f"address:{address or '-'}"


class LocalBuckets:
    """One worker's buckets: (bucket, key) -> (tokens, when), on the monotonic clock. Each
    use moves a key to the end of the dict, so the first key is the least recently used, and
    the one dropped past ``max_keys`` (a bucket idle long enough is full again anyway)."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self.state: dict[tuple[str, str], tuple[float, float]] = {}

    def take(self, bucket: str, key: str, rate: Rate) -> float:
        """Take a token: 0 when there was one, else the seconds until there is."""
        now = time.monotonic()
        tokens, then = self.state.pop((bucket, key), (rate.burst, now))
        tokens = min(rate.burst, tokens + (now - then) * rate.per_second)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / rate.per_second
        self.state[(bucket, key)] = (tokens, now)
        if len(self.state) > self.max_keys:
            del self.state[next(iter(self.state))]
        return wait


# One atomic step on a bucket, in Redis's own time (TIME), so hosts whose clocks disagree
# still agree on the bucket. Numbers are stored as text with string.format: Lua's tostring
# keeps 14 digits, too few for a timestamp in microseconds. Returns 0 when a token was taken,
# else the milliseconds until one will be there. A bucket idle until it is full again expires.
SCRIPT = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(held[1]), tonumber(held[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) / rate * 1000) end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
           'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return wait
"""
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


class RedisBuckets:
    """Buckets shared through Redis: one EVALSHA a request (EVAL once after a Redis restart
    emptied its script cache). A Redis that does not answer within ``REDIS_TIMEOUT`` fails
    open: the request is served and counted, a warning is logged once a minute at most, and
    Redis is tried again every ``RECONNECT_EVERY`` seconds, by one request at a time."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.redis: Redis | None = None
        self.fail_open_count = 0
        self.down_until = 0.0  # while down: when the next request may try Redis again
        self.warned_at = -math.inf

    async def start(self) -> None:
        # No retries of its own and short timeouts: a request never waits on a dead Redis.
        self.redis = Redis.from_url(self.url, socket_timeout=REDIS_TIMEOUT,
                                    socket_connect_timeout=REDIS_TIMEOUT,
                                    retry=Retry(NoBackoff(), 0))

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    async def take(self, bucket: str, key: str, rate: Rate) -> float:
        """As ``LocalBuckets.take``; 0 (served) while Redis does not answer."""
        now = time.monotonic()
        if now < self.down_until:
            return self._fail_open(now, None)
        if self.down_until:
            self.down_until = now + RECONNECT_EVERY  # this request tries; the others do not
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                wait_ms = await self._run(f"{self.prefix}{bucket}:{key}", rate)
        except (RedisError, OSError, TimeoutError) as exc:
            self.down_until = now + RECONNECT_EVERY
            return self._fail_open(now, exc)
        if self.down_until:
            self.down_until = 0.0
            log.info("Redis at %s answers again: rate limits apply again", masked_url(self.url))
        return wait_ms / 1000

    async def _run(self, name: str, rate: Rate) -> int:
        assert self.redis is not None, "the limiter starts in the app's lifespan"
        ttl_ms = math.ceil(rate.burst / rate.per_second * 1000) + 1000
        args = (name, rate.per_second, rate.burst, ttl_ms)
        try:
            return int(await self.redis.evalsha(SCRIPT_SHA, 1, *args))
        except NoScriptError:
            return int(await self.redis.eval(SCRIPT, 1, *args))

    def _fail_open(self, now: float, exc: BaseException | None) -> float:
        self.fail_open_count += 1
        if now - self.warned_at >= WARN_EVERY:
            self.warned_at = now
            log.warning("Redis at %s does not answer (%s): requests are served without rate "
                        "limits until it does (%d so far)", masked_url(self.url),
                        _reason(exc), self.fail_open_count)
        return 0.0


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return f"tried again every {RECONNECT_EVERY} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else f"no answer in {REDIS_TIMEOUT} s"


class Limiter:
    """The rate limits of one worker: a rate per bucket that is on, and where the buckets are."""

    def __init__(self, rates: dict[str, float], redis_url: str | None = None,
                 prefix: str = "connectlink:") -> None:
        self.rates = {bucket: Rate(float(r)) for bucket, r in rates.items() if r > 0}
        self.local = LocalBuckets()
        self.shared = RedisBuckets(redis_url, prefix) if redis_url is not None else None

    @classmethod
    def for_settings(cls, settings: Settings) -> Limiter | None:
        """The limiter these settings ask for; None when every limit is off."""
        rates = {TOKEN: settings.rate_limit_token, API: settings.rate_limit_api}
        if not any(rate > 0 for rate in rates.values()):
            return None
        return cls(rates, settings.redis_url, settings.redis_prefix)

    @property
    def fail_open_count(self) -> int:
        """Requests served unlimited because Redis did not answer."""
        return self.shared.fail_open_count if self.shared is not None else 0

    def gate(self, bucket: str | None) -> Gate | None:
        """What admits a request to ``bucket``; None when it has no limit."""
        if bucket is None or bucket not in self.rates:
            return None
        rate = self.rates[bucket]

        async def admit(key: str) -> None:
            if self.shared is not None:
                wait = await self.shared.take(bucket, key, rate)
            else:
                wait = self.local.take(bucket, key, rate)
            if wait > 0:
                raise RateLimited(max(1, math.ceil(wait)))  # whole seconds, at least 1

        return admit

    async def start(self) -> None:
        if self.shared is not None:
            await self.shared.start()

    async def close(self) -> None:
        if self.shared is not None:
            await self.shared.close()


class FailureWindow:
    """Failures per key within a sliding window, in this worker: ``limit`` of them lock the
    key until the oldest leaves the window. For guesses at a secret that no bucket protects
    (the admin token, decisions.md "The admin plane"); on the monotonic clock, at most
    ``max_keys`` keys (the least recently failed go first)."""

    def __init__(self, limit: int, window: float, max_keys: int = MAX_KEYS) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self.failures: dict[str, list[float]] = {}

    def locked_for(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        recent = self._recent(key, time.monotonic())
        return recent[0] + self.window - time.monotonic() if len(recent) >= self.limit else 0.0

    def failed(self, key: str) -> None:
        now = time.monotonic()
        recent = self._recent(key, now)
        recent.append(now)
        self.failures.pop(key, None)
        self.failures[key] = recent[-self.limit:]
        if len(self.failures) > self.max_keys:
            del self.failures[next(iter(self.failures))]

    def _recent(self, key: str, now: float) -> list[float]:
        return [t for t in self.failures.get(key, ()) if t > now - self.window]
