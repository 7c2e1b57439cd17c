"""Per-retailer virtual clocks (docs/emulator.md "Virtual clock"): kept in the store, so that
every worker reads the same time for a retailer, and moved by the admin plane."""

from __future__ import annotations

from collections.abc import Callable

from connectlink.clock import Clock, OffsetClock
from connectlink.emulator.records import ClockSetting
from connectlink.storage.base import Store


class StoredClocks:
    """The emulator's ``Clocks``: each retailer's setting, read from the store at each request
    that needs it (one indexed read; a cache would let another worker's change go unseen)."""

    def __init__(self, base: Clock, store: Callable[[], Store]) -> None:
        self.base = base
        self.store = store

    async def of(self, retailer_id: int) -> Clock:
        setting = await self.store().get_clock(retailer_id)
        return self.base if setting.is_wall else OffsetClock(self.base, setting)


def advanced(setting: ClockSetting, wall: float, seconds: float) -> ClockSetting:
    """``seconds`` later (or earlier); a frozen clock stays frozen."""
    if setting.frozen_at is not None:
        return ClockSetting(frozen_at=setting.frozen_at + seconds)
    return ClockSetting(offset=setting.offset + seconds)


def set_to(setting: ClockSetting, wall: float, instant: float) -> ClockSetting:
    """Reading ``instant`` now; a frozen clock stays frozen there."""
    if setting.frozen_at is not None:
        return ClockSetting(frozen_at=instant)
    return ClockSetting(offset=instant - wall)


def frozen(setting: ClockSetting, wall: float, freeze: bool) -> ClockSetting:
    """Stopped at the time it reads now, or running on from the time it was stopped at."""
    now = setting.now(wall)
    return ClockSetting(frozen_at=now) if freeze else ClockSetting(offset=now - wall)
