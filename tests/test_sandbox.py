"""Sandbox endpoints: test Instacart accounts and consent without a browser."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from conftest import make_emulator
from support import Emulator, Retailer, engine_of, execute_sql, query_sql


def test_create_returns_an_integer_id(shop: Retailer) -> None:
    response = shop.post("/v2/fulfillment_sandbox/instacart_users", {
        "email": "s@example.com", "phone": "+18005550100", "password": "pw",
        "instacartplus_member": True})
    assert response.status_code == 200
    assert list(response.json()) == ["id"]
    assert isinstance(response.json()["id"], int)


def _strip_scopes(database_url: str, token: str) -> None:
    """Leave ``token`` with no scope at all: both schemas keep a token's scopes as one
    space-separated TEXT column, found by the SHA-256 digest of the token."""
    digest = hashlib.sha256(token.encode("ascii")).hexdigest()
    literal = f"X'{digest}'" if engine_of(database_url) == "sqlite" else f"'\\x{digest}'::bytea"
    where = f"WHERE digest = {literal}"
    execute_sql(database_url, f"UPDATE tokens SET scopes = '' {where}")
    assert query_sql(database_url, f"SELECT scopes FROM tokens {where}") == [("",)]


def test_sandbox_accepts_a_token_without_scope_restriction(
    emulator: Emulator, shop: Retailer
) -> None:
    """decisions.md: the sandbox takes any client-credentials token of the retailer, whatever
    its scopes. A token asked for normally carries connect:fulfillment, which would pass a scope
    check too; so this one has its scopes emptied in the database, and the Connect endpoints'
    refusal of it shows that the scope check really sees no scope."""
    token = shop.access_token()
    _strip_scopes(emulator.database_url, token)
    created = shop.post("/v2/fulfillment_sandbox/instacart_users",
                        {"email": "s@example.com", "phone": "1", "password": "p"}, token=token)
    assert created.status_code == 200, created.text
    authorized = shop.post(
        f"/v2/fulfillment_sandbox/instacart_users/{created.json()['id']}/authorize",
        {"redirect_uri": shop.redirect_uri, "scope": "account_linking"}, token=token)
    assert authorized.status_code == 200, authorized.text
    assert shop.exchange(authorized.json()["code"]).status_code == 200  # a real code
    for refused in (shop.get("/v2/fulfillment/users/u1", token=token),
                    shop.post("/v2/fulfillment/users", {"user_id": "u1", "first_name": "A"},
                              token=token)):
        assert refused.status_code == 403
        assert refused.json()["error"] == "insufficient_scope"


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


def test_the_emulators_sandbox_accounts_get_argons_least_cost(
    emulator: Emulator, shop: Retailer
) -> None:
    """Test fixtures, made by the hundred: argon2id at its least cost (security.py), still
    checked as a password is (the Login pages sign in with it). An account an operator makes
    with the CLI keeps OWASP's cost."""
    from connectlink import security

    shop.instacart_user("cheap@example.com")
    (stored,), = query_sql(emulator.database_url,
                           "SELECT password_hash FROM instacart_accounts")
    assert str(stored).startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert security.verify_password(str(stored), "correct horse battery")
    assert not security.verify_password(str(stored), "correct horse battery!")
    assert security.hash_password("x").startswith("$argon2id$v=19$m=19456,t=2,p=1$")
