"""ConnectLink's pytest plugin (entry point ``pytest11``): fixtures for a retailer's own tests.

``connectlink_emulator`` is a fresh in-process emulator (``connectlink.testing``) with a
retailer registered on it, as the retailer's tests see it::

    def test_plus_members_get_free_delivery(connectlink_emulator):
        connect = connectlink_emulator.client                 # a ConnectClient, no socket
        connect.users.create("customer-1", "jane")
        connect.users.link("customer-1", connectlink_emulator.linking_token())
        assert connect.users.get_link("customer-1").instacartplus_member

It has ``client``, ``retailer_id``, ``client_id``, ``client_secret``, ``redirect_uri``,
``async_client()``, ``sandbox_shopper(plus=True)`` (a new Instacart account's id),
``linking_token(instacart_user_id=None)`` (sandbox consent and code exchange in one call), and
the emulator's controls (docs/emulator.md) for this retailer alone, through its admin plane:

- ``clock``: the retailer's virtual clock, what its tokens, codes and Instacart+ memberships
  expire by: ``clock.advance(seconds)`` moves it (and answers the new time), ``clock.now()``
  reads it (seconds since the epoch, as before), and ``set(when)``, ``freeze()``,
  ``unfreeze()``, ``reset()``;
- ``faults``: ``faults.add("GET /v2/fulfillment/users/{user_id}/link", 503, times=1)`` makes
  that request fail as Instacart can (``429``, ``500``, ``latency``, ``drop``,
  ``linking_token_invalid``...; the options of ``client.emulator.faults.add``); ``list()``
  and ``clear()`` see this retailer's rules only;
- ``journal(**filters)``: the retailer's requests, newest first, to check what was sent.

``client.emulator`` is the whole admin plane (every retailer's clocks, faults, snapshots...).

Each test gets a new SQLite file in a temporary directory, or a new retailer on the database
given with ``--connectlink-database URL`` (PostgreSQL or SQLite). Every pytest run that has
ConnectLink installed loads this module, so it imports nothing of ConnectLink until a test asks
for the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from connectlink.testing import EmulatedRetailer


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("connectlink").addoption(
        "--connectlink-database", metavar="URL", default=None,
        help="database for the connectlink_emulator fixture (default: a fresh SQLite file "
             "per test)")


@pytest.fixture
def connectlink_emulator(request: pytest.FixtureRequest) -> Iterator[EmulatedRetailer]:
    """A fresh in-process ConnectLink emulator with a retailer ready on it."""
    from connectlink.testing import InProcessEmulator  # the server, only when asked for

    database_url: str | None = request.config.getoption("connectlink_database")
    with InProcessEmulator(database_url) as emulator:
        retailer = emulator.retailer()
        try:
            yield retailer
        finally:
            retailer.client.close()
