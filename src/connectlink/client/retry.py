"""When the SDK tries a call again, and how long it waits first.

Retried for every call, single-use ones too: a connection that failed before the request went
out (refused, DNS, connect or pool timeout: the server never saw it), and 429 (rate limited,
decisions.md "Rate limits": refused before any work).

Retried only for calls that are safe to repeat: a request that went out but whose answer was
lost (read timeout, dropped connection), and 503. A 503 means the database could not be used,
but on PostgreSQL the connection can drop after a commit and before its answer: a link or a
code exchange may have happened, and its single-use token would then answer a second try with
"Linking token is invalid" or ``invalid_grant``. Never retried: any other 4xx, and 500 (the
server did not say a second try would fare better).

The wait is exponential backoff with full jitter (a uniform draw from 0 to
``min(cap, base * 2**attempt)``), so that clients refused together do not come back together;
a ``Retry-After`` header is a floor. A server asking for longer than ``cap`` is not retried: the
error, with its ``retry_after``, goes to the caller, who can schedule the call itself.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

RETRIED_STATUSES = frozenset({429, 503})
# The request never left: nothing reached the server, whatever the call.
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# It may have reached the server, which may have acted: only calls safe to repeat.
MAYBE_SENT = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.ReadError, httpx.WriteError,
              httpx.RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_retries`` attempts after the first (0 disables retrying); waits in seconds."""

    max_retries: int = 3
    base: float = 0.5
    cap: float = 8.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base < 0 or self.cap < 0:
            raise ValueError("max_retries, base and cap must not be negative")

    def backoff(self, attempt: int, draw: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt))."""
        return draw() * min(self.cap, self.base * 2.0 ** min(attempt, 62))

    def wait(
        self, attempt: int, outcome: httpx.Response | httpx.TransportError, replay_safe: bool,
        draw: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None: do not retry."""
        if attempt >= self.max_retries:
            return None
        if isinstance(outcome, httpx.TransportError):
            retried = isinstance(outcome, NEVER_SENT) or (
                replay_safe and isinstance(outcome, MAYBE_SENT))
            return self.backoff(attempt, draw) if retried else None
        if outcome.status_code not in RETRIED_STATUSES or (
                outcome.status_code == 503 and not replay_safe):
            return None
        floor = retry_after(outcome.headers.get("retry-after"))
        if floor is not None and floor > self.cap:
            return None
        return max(floor or 0.0, self.backoff(attempt, draw))


def retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """A ``Retry-After`` value in seconds (RFC 9110 section 10.2.3: delay-seconds or an
    HTTP-date), or None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


DEFAULT_RETRY = RetryPolicy()
