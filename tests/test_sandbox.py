"""Sandbox endpoints: test Instacart accounts and consent without a browser."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import make_emulator
from support import Emulator, Retailer


def test_create_returns_an_integer_id(shop: Retailer) -> None:
    response = shop.post("/v2/fulfillment_sandbox/instacart_users", {
        "email": "s@example.com", "phone": "+18005550100", "password": "pw",
        "instacartplus_member": True})
    assert response.status_code == 200
    assert list(response.json()) == ["id"]
    assert isinstance(response.json()["id"], int)


def test_sandbox_accepts_a_token_without_scope_restriction(shop: Retailer) -> None:
    # decisions.md: any client-credentials token of the retailer
    response = shop.token_request(grant_type="client_credentials", scope="connect:fulfillment")
    token = response.json()["access_token"]
    created = shop.post("/v2/fulfillment_sandbox/instacart_users",
                        {"email": "s@example.com", "phone": "1", "password": "p"}, token=token)
    assert created.status_code == 200


def test_authorize_ignores_the_tutorials_extra_fields(shop: Retailer) -> None:
    account = shop.instacart_user("s@example.com")
    response = shop.authorize(account, response_type="code", client_id=shop.client_id,
                              state="xyz", hint="whatever", scope="account_linking")
    assert response.status_code == 200
    assert len(response.json()["code"]) == 43


def test_any_retailer_may_be_authorized_by_any_account(
    shop: Retailer, other_shop: Retailer
) -> None:
    account = shop.instacart_user("s@example.com")
    assert other_shop.authorize(account).status_code == 200


def test_authorize_redirect_uri_is_the_callers_own(shop: Retailer, emulator: Emulator) -> None:
    elsewhere = emulator.retailer("https://elsewhere.example/cb")
    account = shop.instacart_user("s@example.com")
    response = elsewhere.authorize(account, redirect_uri=shop.redirect_uri)
    assert response.json()["meta"] == {"key": "redirect_uri"}


@pytest.fixture
def production(database_url: str) -> Iterator[Emulator]:
    yield from make_emulator(database_url, profile="production")


def test_sandbox_does_not_exist_in_production(production: Emulator) -> None:
    shop = production.retailer()
    response = shop.post("/v2/fulfillment_sandbox/instacart_users",
                         {"email": "s@example.com", "phone": "1", "password": "p"})
    assert response.status_code == 404
    assert response.json() == {"error": {"message": "Not Found", "code": 4000}, "meta": {}}
