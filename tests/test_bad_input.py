"""Bad input gets the documented envelope, never a 500, changes nothing; the server serves on."""

from __future__ import annotations

import itertools

import pytest

from support import Emulator, Retailer

ENDPOINTS = [
    ("POST", "/v2/oauth/token"),
    ("POST", "/v2/oauth/token/revoke"),
    ("POST", "/v2/fulfillment/users"),
    ("GET", "/v2/fulfillment/users/u1"),
    ("POST", "/v2/fulfillment/users/u1/link"),
    ("GET", "/v2/fulfillment/users/u1/link"),
    ("POST", "/v2/fulfillment/users/u1/privacy_request"),
    ("POST", "/v2/fulfillment_sandbox/instacart_users"),
    ("POST", "/v2/fulfillment_sandbox/instacart_users/1/authorize"),
    ("POST", "/v2/fulfillment_sandbox/instacart_users/x%00y/authorize"),
]

BODIES = [
    b"", b"null", b"[]", b'"x"', b"0", b"{", b"\xff\xfe\x00", b"[" * 5000 + b"]" * 5000,
    b'{"user_id": {"a": 1}, "first_name": ["x"], "linking_token": {"t": 1}}',
    b'{"email": 1e999999, "phone": true, "password": null}',
    b'{"redirect_uri": 7, "scope": ["account_linking"], "code_challenge": 1}',
    b"grant_type=client_credentials&client_id=%ZZ",
    b'{"user_id": "a/b", "first_name": "\\ud800"}',
]


@pytest.mark.parametrize("method,path", ENDPOINTS)
def test_garbage_never_breaks_the_server(
    emulator: Emulator, shop: Retailer, method: str, path: str
) -> None:
    for body, content_type in itertools.product(
        BODIES, ["application/json", "application/x-www-form-urlencoded", "text/plain"]
    ):
        response = emulator.http.request(
            method, path, content=body,
            headers={**shop.headers(), "Content-Type": content_type},
        )
        assert 400 <= response.status_code < 500, (body, content_type, response.text)
        assert "error" in response.json()
    assert shop.access_token()


@pytest.mark.parametrize("authorization", [
    "Bearer", "bearer  x y", "Basic !!!", "Token abc", "Digest",
])
def test_odd_authorization_headers_are_401(emulator: Emulator, authorization: str) -> None:
    response = emulator.http.get("/v2/fulfillment/users/u1",
                                 headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


@pytest.mark.parametrize("authorization", ["Basic !!!", "Basic Zm9v", "Basic OnNlY3JldA=="])
def test_malformed_basic_credentials_are_invalid_client(
    emulator: Emulator, authorization: str
) -> None:
    response = emulator.http.post("/v2/oauth/token", data={"grant_type": "client_credentials"},
                                  headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"] == 'Basic realm="connect"'


def test_rejected_requests_change_nothing(emulator: Emulator, shop: Retailer) -> None:
    before = emulator.run(lambda store: store.count_retailers())
    for body in BODIES:
        emulator.http.post("/v2/fulfillment/users", content=body, headers=shop.headers())
        emulator.http.post("/v2/fulfillment_sandbox/instacart_users", content=body,
                           headers=shop.headers())
    assert shop.get("/v2/fulfillment/users/a/b").status_code == 404
    assert emulator.run(lambda store: store.count_retailers()) == before
    # no user and no Instacart account was written by any of it
    assert shop.get("/v2/fulfillment/users/1").json()["error"]["message"] == "User Not Found"
    assert emulator.run(lambda store: store.get_instacart_account(1)) is None
