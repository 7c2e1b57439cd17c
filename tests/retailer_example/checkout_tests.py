"""A retailer's own checkout tests, written the way a retailer writes them: against ConnectLink's
``connectlink_emulator`` fixture, with no server to start and no ConnectLink internals.

tests/test_pytest_plugin.py copies this file into an empty directory as ``test_checkout.py`` and
runs pytest there, as the retailer's CI would. Stored under this name, our own suite does not
collect it (pytest collects ``test_*.py`` and ``*_test.py``).
"""

from __future__ import annotations

import pytest

from connectlink.client import (
    ConnectClient,
    ConnectionFailed,
    LinkingTokenInvalid,
    ServiceUnavailable,
    UserNotActive,
    UserNotLinked,
)
from connectlink.testing import EmulatedRetailer as Emulator

DELIVERY_FEE = 5.99
MEMBERSHIP = "GET /v2/fulfillment/users/{user_id}/link"  # as the API docs name the endpoint


def delivery_fee(connect: ConnectClient, customer_id: str) -> float:
    """The retailer's checkout rule: Instacart+ members linked to their account pay nothing;
    when Instacart cannot say (down, after the SDK's retries), checkout charges the fee."""
    try:
        member = connect.users.get_link(customer_id).instacartplus_member
    except (UserNotLinked, UserNotActive, ServiceUnavailable, ConnectionFailed):
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


def test_checkout_rides_out_a_brief_instacart_outage(connectlink_emulator: Emulator) -> None:
    connect = connectlink_emulator.client
    connect.users.create("customer-6", "ana")
    connect.users.link("customer-6", connectlink_emulator.linking_token())
    connectlink_emulator.faults.add(MEMBERSHIP, 503, times=1, retry_after=0)
    assert delivery_fee(connect, "customer-6") == 0.0  # the SDK tried again
    assert [e.status for e in connectlink_emulator.journal(operation="get_link")] == [200, 503]


def test_checkout_charges_the_fee_while_instacart_is_down(connectlink_emulator: Emulator) -> None:
    connect = connectlink_emulator.client
    connect.users.create("customer-7", "max")
    connect.users.link("customer-7", connectlink_emulator.linking_token())
    connectlink_emulator.faults.add(MEMBERSHIP, 503, retry_after=0)
    assert delivery_fee(connect, "customer-7") == DELIVERY_FEE
    assert connectlink_emulator.faults.clear() == 1
    assert delivery_fee(connect, "customer-7") == 0.0
