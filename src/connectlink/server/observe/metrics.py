"""The Prometheus metrics of one server, served at ``GET /metrics``.

Every label is a name from a closed set: operation names from the operation table (``none``
for a request that no operation answered, such as an unknown path), HTTP statuses, Connect
codes or OAuth error slugs, grant types. Never a path or anything else a client chooses, so the
number of series stays bounded whatever is sent.

Two modes, as prometheus_client has them, fixed when it is first imported. In one process the
metrics live in the app's own registry, not prometheus_client's global one: a test process makes
many apps, each counting its own. Under ``serve --workers N`` each worker writes its values to
files of its own in ``PROMETHEUS_MULTIPROC_DIR`` (which ``serve`` makes, or empties, before any
worker starts: ``metrics_dir.py``), and a scrape, whichever worker answers it, adds up every
worker's files (``MultiProcessCollector``).
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from connectlink.errors import ConnectError, ConnectLinkError, RateLimited
from connectlink.server.limits import Limiter
from connectlink.storage import Store

NO_OPERATION = "none"  # the operation label of a request no operation answered (404, 405)
LINK, ISSUE_TOKEN = "link", "issue_token"  # the operations whose successes are counted apart
SAMPLE_EVERY = 0.5  # seconds: how often a worker's requests update its pool gauge at most
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def error_code(error: ConnectLinkError) -> str:
    """A refusal's label: its Connect code (``null`` where its envelope has none, as on the
    wire), else its OAuth error slug (``invalid_token``, ``invalid_client``...)."""
    if isinstance(error, ConnectError):
        return "null" if error.code is None else str(error.code)
    slug = getattr(error, "error", None)
    return slug if isinstance(slug, str) else type(error).__name__


class Metrics:
    """The metrics one app counts; ``count`` is its whole per-request cost."""

    def __init__(self) -> None:
        self.multiprocess: bool = values.ValueClass._multiprocess
        self.registry = on = CollectorRegistry()
        by_outcome = ("operation", "status")
        self.requests = Counter("connectlink_requests", "Requests answered, by operation "
                                "(none: no operation matched) and HTTP status", by_outcome,
                                registry=on)
        self.latency = Histogram("connectlink_request_duration_seconds", "Time from a "
                                 "request's arrival to the end of its response", by_outcome,
                                 buckets=BUCKETS, registry=on)
        self.errors = Counter("connectlink_errors", "Refusals and failures, by Connect code or "
                              "OAuth error", ("code",), registry=on)
        self.links = Counter("connectlink_links", "Instacart accounts linked (successful "
                             "link requests)", registry=on)
        self.tokens = Counter("connectlink_tokens_issued", "Tokens issued, by grant type",
                              ("grant",), registry=on)
        self.rate_limited = Counter("connectlink_rate_limited", "Requests refused by a rate "
                                    "limit, by operation", ("operation",), registry=on)
        self.fail_open = Counter("connectlink_rate_limit_fail_open", "Requests served without "
                                 "a rate limit because Redis did not answer", registry=on)
        self.journal_dropped = Counter(
            "connectlink_journal_entries_dropped", "Emulator journal entries lost because the "
            "database refused what they held (each is logged)", registry=on)
        self.pool: Gauge | None = None  # made at the first sample of a store with a pool
        self._outcomes: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self._fail_open_seen = 0
        self._next_sample = 0.0

    def count(self, operation: str, status: int, seconds: float, error: object,
              grant: object) -> None:
        """One answered request: its operation (or ``NO_OPERATION``), status, duration, the
        error it was refused with (if any) and, for a token issued, its grant type."""
        outcome = self._outcomes.get((operation, status))
        if outcome is None:
            label = (operation, str(status))
            outcome = (self.requests.labels(*label), self.latency.labels(*label))
            self._outcomes[(operation, status)] = outcome
        outcome[0].inc()
        outcome[1].observe(seconds)
        if isinstance(error, ConnectLinkError):
            self.errors.labels(error_code(error)).inc()
            if isinstance(error, RateLimited):
                self.rate_limited.labels(operation).inc()
        elif status == 200:
            if operation == LINK:
                self.links.inc()
            elif operation == ISSUE_TOKEN and isinstance(grant, str):
                self.tokens.labels(grant).inc()

    def follow(self, store: Store | None, limiter: Limiter | None, now: float) -> None:
        """After a request (``now``: ``time.perf_counter()``): what the request counters
        cannot see. The limiter's fail-open count, every time (one comparison); the pool
        gauge, every ``SAMPLE_EVERY`` seconds."""
        if limiter is not None and limiter.fail_open_count != self._fail_open_seen:
            self.fail_open.inc(limiter.fail_open_count - self._fail_open_seen)
            self._fail_open_seen = limiter.fail_open_count
        if now >= self._next_sample:
            self._next_sample = now + SAMPLE_EVERY
            self._sample_pool(store)

    def _sample_pool(self, store: Store | None) -> None:
        in_use = store.connections_in_use() if store is not None else None
        if in_use is None:
            return
        if self.pool is None:
            # Per worker (a pid label in multiprocess mode): CONNECTLINK_POOL_SIZE is per worker.
            self.pool = Gauge("connectlink_db_connections_in_use", "Database connections of "
                              "this process's pool in use", registry=self.registry,
                              multiprocess_mode="liveall")
        self.pool.set(in_use)

    def retire(self) -> None:
        """At the app's shutdown: a worker that is gone takes its gauges with it (what it
        counted stays counted)."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def exposition(self, store: Store | None, limiter: Limiter | None) -> tuple[bytes, str]:
        """The scrape's body and content type: this app's metrics, or every worker's."""
        self._next_sample = 0.0
        self.follow(store, limiter, time.perf_counter())
        if not self.multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        every_worker = CollectorRegistry()
        multiprocess.MultiProcessCollector(every_worker)  # type: ignore[no-untyped-call]
        return generate_latest(every_worker), CONTENT_TYPE_LATEST

