"""Linking and membership: the reference page, re-link and replace, tenancy, the audit trail."""

from __future__ import annotations

from support import Emulator, Retailer

YEAR = 365 * 86_400


def test_link_then_membership(emulator: Emulator, shop: Retailer) -> None:
    account = shop.instacart_user("member@example.com", plus=True)
    shop.create_user("42")
    response = shop.link("42", shop.linking_token(account))
    assert (response.status_code, response.json()) == (200, {"success": True})
    membership = shop.membership("42")
    assert membership.status_code == 200
    ends = emulator.clock.now() + YEAR
    import time

    assert membership.json() == {
        "express_member": True, "instacartplus_member": True,
        "expired_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ends)),
    }
    assert list(membership.json()) == ["express_member", "instacartplus_member", "expired_at"]


def test_non_member_has_no_expiry(shop: Retailer) -> None:
    account = shop.instacart_user("plain@example.com", plus=False)
    shop.create_user("42")
    shop.link("42", shop.linking_token(account))
    assert shop.membership("42").json() == {"express_member": False,
                                            "instacartplus_member": False}


def test_membership_lapses_by_the_clock(emulator: Emulator, shop: Retailer) -> None:
    account = shop.instacart_user("member@example.com", plus=True)
    shop.create_user("42")
    shop.link("42", shop.linking_token(account))
    emulator.clock.advance(YEAR)
    shop.forget_token()
    body = shop.membership("42").json()
    assert body["instacartplus_member"] is False
    assert body["express_member"] is False
    assert "expired_at" in body


def test_express_member_flag_also_gives_membership(shop: Retailer) -> None:
    response = shop.post("/v2/fulfillment_sandbox/instacart_users", {
        "email": "old@example.com", "phone": "1", "password": "p", "express_member": True})
    shop.create_user("42")
    shop.link("42", shop.linking_token(response.json()["id"]))
    assert shop.membership("42").json()["instacartplus_member"] is True


def test_linking_token_is_single_use(shop: Retailer) -> None:
    account = shop.instacart_user("s@example.com")
    token = shop.linking_token(account)
    shop.create_user("42")
    assert shop.link("42", token).status_code == 200
    assert shop.link("42", token).json()["error"]["message"] == "Linking token is invalid"


def test_relink_to_the_same_account_succeeds_and_consumes(shop: Retailer) -> None:
    account = shop.instacart_user("s@example.com")
    shop.create_user("42")
    assert shop.link("42", shop.linking_token(account)).status_code == 200
    token = shop.linking_token(account)
    assert shop.link("42", token).status_code == 200
    assert shop.link("42", token).status_code == 400


def test_linking_another_account_replaces_and_frees_the_first(shop: Retailer) -> None:
    first = shop.instacart_user("a@example.com", plus=False)
    second = shop.instacart_user("b@example.com", plus=True)
    shop.create_user("42")
    shop.create_user("43")
    assert shop.link("42", shop.linking_token(first)).status_code == 200
    assert shop.link("42", shop.linking_token(second)).status_code == 200
    assert shop.membership("42").json()["instacartplus_member"] is True
    # account A is free at this retailer again
    assert shop.link("43", shop.linking_token(first)).status_code == 200


def test_isolation_failure_leaves_the_token_unused(shop: Retailer) -> None:
    account = shop.instacart_user("s@example.com")
    shop.create_user("42")
    shop.create_user("43")
    shop.link("42", shop.linking_token(account))
    token = shop.linking_token(account)
    assert shop.link("43", token).status_code == 400
    assert shop.link("42", token).status_code == 200  # the failed attempt changed nothing


def test_one_account_linked_at_two_retailers(shop: Retailer, other_shop: Retailer) -> None:
    account = shop.instacart_user("s@example.com")
    shop.create_user("42")
    other_shop.create_user("42")
    assert shop.link("42", shop.linking_token(account)).status_code == 200
    assert other_shop.link("42", other_shop.linking_token(account)).status_code == 200
    assert shop.membership("42").status_code == other_shop.membership("42").status_code == 200


def test_retailer_cannot_link_or_read_another_retailers_user(
    shop: Retailer, other_shop: Retailer
) -> None:
    account = shop.instacart_user("s@example.com")
    other_shop.create_user("theirs")
    other_shop.link("theirs", other_shop.linking_token(account))
    assert shop.membership("theirs").json()["error"]["message"] == "User Not Found"
    assert shop.link("theirs", shop.linking_token(account)).status_code == 400
    assert shop.get("/v2/fulfillment/users/theirs").status_code == 400


def test_link_accepts_the_docs_headers(shop: Retailer) -> None:
    account = shop.instacart_user("s@example.com")
    shop.create_user("42")
    response = shop.http.post(
        "/v2/fulfillment/users/42/link",
        headers={**shop.headers(), "Accept": "application/json", "X-Retailer-Id": "the-garden"},
        content=f'{{\n "linking_token": "{shop.linking_token(account)}"\n}}',
    )
    assert response.status_code == 200


def test_audit_trail_records_link_replace_and_privacy(
    emulator: Emulator, shop: Retailer
) -> None:
    a, b = shop.instacart_user("a@example.com"), shop.instacart_user("b@example.com")
    shop.create_user("42")
    shop.link("42", shop.linking_token(a))
    shop.link("42", shop.linking_token(a))
    shop.link("42", shop.linking_token(b))
    shop.post("/v2/fulfillment/users/42/privacy_request")
    retailer_id = int(shop.credentials["retailer_id"])
    trail = emulator.run(lambda store: store.audit_trail(retailer_id))
    assert [(action, user, account) for _, action, user, account in trail] == [
        ("link", "42", a), ("relink", "42", a), ("replace", "42", b),
        ("privacy_request", "42", b),
    ]
