"""Per-retailer virtual clocks (docs/emulator.md "Virtual clock"): kept in the store, so that
every worker reads the same time for a retailer, and moved by the admin plane."""

from __future__ import annotations

from connectlink.clock import Clock, OffsetClock
from connectlink.emulator.records import ClockSetting


class KnownClocks:
    """The emulator's ``Clocks``: each retailer's setting as this worker last read them all
    from the store (``server/controls.py`` reads them again whenever the journal's barrier
    moves, and every change of a clock waits for every worker to have done so: so no request
    answered after a change reads the clock from before it, whichever worker answers)."""

    def __init__(self, base: Clock) -> None:
        self.base = base
        self.settings: dict[int, ClockSetting] = {}

    async def of(self, retailer_id: int) -> Clock:
        setting = self.settings.get(retailer_id)
        return self.base if setting is None else OffsetClock(self.base, setting)


def advanced(setting: ClockSetting, seconds: float) -> ClockSetting:
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


class EarliestClock:
    """The time by which retention sweeps (``linking/retention.py``) in the emulator: the
    earliest of the server's and every retailer's, so that nothing is swept that some
    retailer's clock still holds to be alive."""

    def __init__(self, clocks: KnownClocks) -> None:
        self.clocks = clocks

    def now(self) -> float:
        wall = self.clocks.base.now()
        return min([wall, *(setting.now(wall) for setting in self.clocks.settings.values())])
