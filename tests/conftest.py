from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from connectlink.clock import ManualClock
from connectlink.settings import Settings
from support import Emulator, Retailer, ThreadServer

START = 1_790_000_000.0  # 2026-09-21, a fixed instant so times in bodies are predictable


def make_emulator(tmp_path: Path, **overrides: object) -> Iterator[Emulator]:
    settings = Settings.for_profile(
        str(overrides.pop("profile", "emulator")),
        database_url=f"sqlite:///{tmp_path / 'connectlink.db'}",
        access_log=False,
        **overrides,
    )
    server = ThreadServer(settings, ManualClock(START))
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            yield Emulator(server, http)
    finally:
        server.stop()


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    """A fresh server on a fresh SQLite file, with a clock that only moves when told."""
    yield from make_emulator(tmp_path)


@pytest.fixture
def shop(emulator: Emulator) -> Retailer:
    return emulator.retailer()


@pytest.fixture
def other_shop(emulator: Emulator) -> Retailer:
    return emulator.retailer()
