"""A retailer's own checkout tests, written the way a retailer writes them: against ConnectLink's
``connectlink_emulator`` fixture, with no server to start and no ConnectLink internals.

tests/test_pytest_plugin.py copies this file into an empty directory as ``test_checkout.py`` and
runs pytest there, as the retailer's CI would. Stored under this name, our own suite does not
collect it (pytest collects ``test_*.py`` and ``*_test.py``).
"""

from __future__ import annotations

import pytest

from connectlink.client import ConnectClient, LinkingTokenInvalid, UserNotActive, UserNotLinked
from connectlink.testing import EmulatedRetailer as Emulator

DELIVERY_FEE = 5.99


def delivery_fee(connect: ConnectClient, customer_id: str) -> float:
    """The retailer's checkout rule: Instacart+ members linked to their account pay nothing."""
    try:
        member = connect.users.get_link(customer_id).instacartplus_member
    except (UserNotLinked, UserNotActive):
        member = False
    return 0.0 if member else DELIVERY_FEE


def test_a_linked_instacart_plus_member_gets_free_delivery(connectlink_emulator: Emulator) -> None:
    connect = connectlink_emulator.client
    connect.users.create("customer-1", "jane", "doe")
    connect.users.link("customer-1", connectlink_emulator.linking_token())
    assert connect.users.get_link("customer-1").instacartplus_member
    assert delivery_fee(connect, "customer-1") == 0.0


def test_a_linked_shopper_without_instacart_plus_pays(connectlink_emulator: Emulator) -> None:
    connect = connectlink_emulator.client
    shopper = connectlink_emulator.sandbox_shopper(plus=False)
    connect.users.create("customer-2", "sam")
    connect.users.link("customer-2", connectlink_emulator.linking_token(shopper))
    assert not connect.users.get_link("customer-2").instacartplus_member
    assert delivery_fee(connect, "customer-2") == DELIVERY_FEE


def test_an_unlinked_customer_pays(connectlink_emulator: Emulator) -> None:
    connectlink_emulator.client.users.create("customer-3", "alex")
    assert delivery_fee(connectlink_emulator.client, "customer-3") == DELIVERY_FEE


def test_membership_lapses_when_the_year_is_over(connectlink_emulator: Emulator) -> None:
    connect = connectlink_emulator.client
    connect.users.create("customer-4", "kim")
    connect.users.link("customer-4", connectlink_emulator.linking_token())
    connectlink_emulator.clock.advance(366 * 86_400)
    assert delivery_fee(connect, "customer-4") == DELIVERY_FEE


def test_a_linking_token_links_once(connectlink_emulator: Emulator) -> None:
    connect = connectlink_emulator.client
    token = connectlink_emulator.linking_token()
    connect.users.create("customer-5", "lee")
    connect.users.link("customer-5", token)
    with pytest.raises(LinkingTokenInvalid):
        connect.users.link("customer-5", token)
