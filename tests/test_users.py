"""Connect users: create or update, read, privacy requests."""

from __future__ import annotations

from support import Emulator, Retailer


def test_create_capitalises_names_and_echoes(shop: Retailer) -> None:
    response = shop.create_user("42", first_name="john", last_name="mcDonald",
                                phone_number="+18005550100", locale="en-US")
    assert response.status_code == 200
    assert response.json() == {"user_id": "42", "first_name": "John", "last_name": "McDonald",
                               "phone_number": "+18005550100", "locale": "en-US"}
    assert list(response.json()) == ["user_id", "first_name", "last_name", "phone_number",
                                     "locale"]


def test_optional_fields_without_value_are_left_out(shop: Retailer) -> None:
    response = shop.create_user("42", last_name=None, phone_number="")
    assert response.json() == {"user_id": "42", "first_name": "John"}


def test_create_again_updates_the_fields_sent(shop: Retailer) -> None:
    shop.create_user("42", first_name="john", last_name="smith", locale="en-US")
    response = shop.create_user("42", first_name="jane", phone_number="+15145550100")
    assert response.json() == {"user_id": "42", "first_name": "Jane", "last_name": "Smith",
                               "phone_number": "+15145550100", "locale": "en-US"}
    assert shop.get("/v2/fulfillment/users/42").json() == response.json()


def test_accept_language_is_the_default_locale(shop: Retailer) -> None:
    headers = {**shop.headers(), "Accept-Language": "fr-CA"}
    from_header = shop.http.post("/v2/fulfillment/users", headers=headers,
                                 json={"user_id": "1", "first_name": "a"})
    assert from_header.json()["locale"] == "fr-CA"
    from_body = shop.http.post("/v2/fulfillment/users", headers=headers,
                               json={"user_id": "2", "first_name": "a", "locale": "en-CA"})
    assert from_body.json()["locale"] == "en-CA"


def test_user_ids_are_per_retailer(shop: Retailer, other_shop: Retailer) -> None:
    shop.create_user("42", first_name="ann")
    other_shop.create_user("42", first_name="bob")
    assert shop.get("/v2/fulfillment/users/42").json()["first_name"] == "Ann"
    assert other_shop.get("/v2/fulfillment/users/42").json()["first_name"] == "Bob"


def test_dot_segment_user_ids_are_invalid(shop: Retailer) -> None:
    """No RFC 3986 client can address ``/users/.`` or ``/users/..``; ids that merely hold dots
    are fine."""
    for user_id in (".", ".."):
        response = shop.create_user(user_id)
        assert response.status_code == 400
        assert response.json()["error"] == {"message": "is invalid", "code": 1001}
        assert response.json()["meta"] == {"key": "user_id"}
    for user_id in ("...", ".a", "a..b"):
        assert shop.create_user(user_id).status_code == 200


def test_a_rejected_create_changes_nothing(shop: Retailer) -> None:
    shop.create_user("42", first_name="ann")
    assert shop.create_user("42", first_name="b:b").status_code == 400
    assert shop.get("/v2/fulfillment/users/42").json()["first_name"] == "Ann"


def test_privacy_request_deactivates_unlinks_and_purges(
    emulator: Emulator, shop: Retailer
) -> None:
    account = shop.instacart_user("s@example.com")
    shop.create_user("42")
    assert shop.link("42", shop.linking_token(account)).status_code == 200
    response = shop.post("/v2/fulfillment/users/42/privacy_request")
    assert (response.status_code, response.json()) == (200, {"success": True})
    assert shop.membership("42").status_code == 403
    # filing it again is harmless
    assert shop.post("/v2/fulfillment/users/42/privacy_request").status_code == 200
    # the link is gone at once: the account is free for another user of this retailer
    shop.create_user("43")
    assert shop.link("43", shop.linking_token(account)).status_code == 200
    # after the retention period the user is purged
    emulator.clock.advance(30 * 86_400)
    shop.forget_token()
    assert shop.get("/v2/fulfillment/users/42").json()["error"]["message"] == "User Not Found"
    # and its id can start afresh
    assert shop.create_user("42", first_name="new").status_code == 200
    assert shop.membership("42").json()["error"]["message"] == "User Not Linked"


def test_create_keeps_a_deactivated_user_inactive(shop: Retailer) -> None:
    shop.create_user("42")
    shop.post("/v2/fulfillment/users/42/privacy_request")
    assert shop.create_user("42", first_name="again").status_code == 200
    assert shop.link("42", "x").status_code == 403
