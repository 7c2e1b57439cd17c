"""The client-credentials token a client keeps: fetched on first use, reused until shortly
before it expires (connect-api.md section 1: "keep using one token until it expires rather than
minting a new one per call"), replaced once when the server refuses it.

No locking and no clock reading here: the sync client guards this with a ``threading.Lock``, the
async one with an ``asyncio.Lock``, and both pass the time in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from connectlink import wire

REFRESH_EARLY = 60.0  # seconds before expiry to take a new one; a tenth of a short lifetime
# ``created_at`` is the server's clock. Within this of ours it tells a token's age; beyond it
# (a server whose clock is its own, like the emulator's manual one) ``expires_in`` counts
# from when we asked, which is never later than when it was issued.
MAX_CLOCK_SKEW = 300.0


@dataclass(frozen=True, slots=True)
class Instant:
    """One moment on both clocks: the wall (to compare with ``created_at``) and monotonic
    (to measure lifetimes by, immune to the wall clock being set)."""

    wall: float
    monotonic: float

    @classmethod
    def now(cls) -> Instant:
        return cls(time.time(), time.monotonic())


def good_for(token: wire.Token, asked: Instant) -> float:
    """Seconds after ``asked`` during which ``token`` is used: its lifetime less its age when
    it arrived, less a safety margin."""
    age = asked.wall - token.created_at
    counted_age = age if 0.0 < age <= MAX_CLOCK_SKEW else 0.0
    margin = min(REFRESH_EARLY, token.expires_in / 10)
    return token.expires_in - counted_age - margin


@dataclass(slots=True)
class TokenCache:
    """The current access token and the monotonic time until which it is used."""

    token: str | None = None
    good_until: float = 0.0

    def current(self, now: float, refused: str | None = None) -> str | None:
        """The token to send, or None if a new one is needed: there is none yet, it is about
        to expire, or it is the one the server just refused (``refused``). When another
        caller has replaced the refused token already, its replacement is current."""
        if self.token is None or now >= self.good_until:
            return None
        if refused is not None and self.token == refused:
            return None
        return self.token

    def keep(self, token: wire.Token, asked: Instant) -> str:
        self.token = token.access_token
        self.good_until = asked.monotonic + good_for(token, asked)
        return self.token
