"""The one source of time. Everything that expires asks a ``Clock``, so tests move time instead
of sleeping; and each retailer has one (``Clocks``): the emulator's virtual clocks
(docs/emulator.md) move one retailer's time without touching another's."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that stands still until told to move (tests and the emulator's test controls)."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now


@dataclass(frozen=True, slots=True)
class ClockSetting:
    """A retailer's virtual clock: the wall clock plus ``offset`` seconds, or stopped at
    ``frozen_at``. The default is the wall clock itself."""

    offset: float = 0.0
    frozen_at: float | None = None

    def now(self, wall: float) -> float:
        return self.frozen_at if self.frozen_at is not None else wall + self.offset

    @property
    def is_wall(self) -> bool:
        return self.frozen_at is None and self.offset == 0.0


class OffsetClock:
    """A retailer's virtual clock: ``setting`` applied to ``base``."""

    def __init__(self, base: Clock, setting: ClockSetting) -> None:
        self.base = base
        self.setting = setting

    def now(self) -> float:
        return self.setting.now(self.base.now())


class Clocks(Protocol):
    """Each retailer's clock, and the server's own (``base``: sessions, sign-in throttles,
    retention, what no retailer owns)."""

    base: Clock

    async def of(self, retailer_id: int) -> Clock: ...


class WallClocks:
    """Every retailer on the server's clock (the production profile: no virtual clocks, and
    not a query more)."""

    def __init__(self, base: Clock) -> None:
        self.base = base

    async def of(self, retailer_id: int) -> Clock:
        return self.base
