"""Hostile input: every case that once made the server answer 500 (or accept what it should
refuse) gets its documented error, changes nothing, and logs no ERROR, on both engines."""

from __future__ import annotations

import base64
import logging
import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest

from conftest import make_emulator
from support import Emulator, Retailer, query_sql
from test_error_table import INVALID_CLIENT, INVALID_REQUEST, connect, oauth

USER_PATHS = [
    ("GET", "/v2/fulfillment/users/{}"),
    ("POST", "/v2/fulfillment/users/{}/link"),
    ("GET", "/v2/fulfillment/users/{}/link"),
    ("POST", "/v2/fulfillment/users/{}/privacy_request"),
]
CONTROL = ["\x00", "\x01", "\x1f", "\x7f"]


@pytest.fixture(autouse=True)
def no_error_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The servers run in this process: nothing they log may be an ERROR (a traceback)."""
    caplog.set_level(logging.INFO)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def _users(emulator: Emulator) -> int:
    return int(query_sql(emulator.database_url, "SELECT count(*) FROM connect_users")[0][0])


# --- invalid UTF-8 --------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    b'{"client_id":"\xff","client_secret":"x","grant_type":"client_credentials"}',
    b'{"grant_type":"client_credentials","client_id":"a\xc3("}',
    b'{"\xed\xa0\x80":"x"}',
])
def test_invalid_utf8_on_the_token_endpoints(emulator: Emulator, body: bytes) -> None:
    for path in ("/v2/oauth/token", "/v2/oauth/token/revoke"):
        response = emulator.http.post(path, content=body,
                                      headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json() == oauth("invalid_request", INVALID_REQUEST)


@pytest.mark.parametrize("path", [
    "/v2/fulfillment/users", "/v2/fulfillment/users/u1/link",
    "/v2/fulfillment_sandbox/instacart_users",
])
def test_invalid_utf8_in_a_connect_body(emulator: Emulator, shop: Retailer, path: str) -> None:
    shop.create_user("u1")
    response = shop.http.post(path, content=b'{"user_id":"\xff","first_name":"x\xfe"}',
                              headers={**shop.headers(), "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == connect("Malformed JSON body", code=4001)
    assert _users(emulator) == 1


# --- control characters in Connect fields ---------------------------------------------------


@pytest.mark.parametrize("char", CONTROL)
@pytest.mark.parametrize("key", ["user_id", "first_name", "last_name", "phone_number", "locale"])
def test_a_control_character_in_a_user_field_is_invalid(
    emulator: Emulator, shop: Retailer, key: str, char: str
) -> None:
    fields = {"user_id": "u1", "first_name": "John", "last_name": "Doe",
              "phone_number": "+18005550100", "locale": "en-US"}
    fields[key] = fields[key][:1] + char + fields[key][1:]
    response = shop.post("/v2/fulfillment/users", fields)
    assert response.status_code == 400
    assert response.json() == connect("is invalid", key=key)
    assert _users(emulator) == 0


@pytest.mark.parametrize("key", ["email", "phone", "password"])
def test_a_nul_in_a_sandbox_field_is_invalid(emulator: Emulator, shop: Retailer, key: str) -> None:
    fields = {"email": "a@example.com", "phone": "+18005550100", "password": "secret"}
    fields[key] = "\x00" + fields[key]
    response = shop.post("/v2/fulfillment_sandbox/instacart_users", fields)
    assert response.status_code == 400
    assert response.json() == connect("is invalid", key=key)
    count = query_sql(emulator.database_url, "SELECT count(*) FROM instacart_accounts")
    assert count[0][0] == 0


def test_a_nul_in_a_sandbox_authorize_field(emulator: Emulator, shop: Retailer) -> None:
    account = shop.instacart_user("a@example.com")
    response = shop.authorize(account, redirect_uri=shop.redirect_uri + "\x00")
    assert response.json() == connect("is invalid", key="redirect_uri")


# --- client credentials ---------------------------------------------------------------------


@pytest.mark.parametrize("client_id,client_secret", [
    ("\x00", "x"), ("a\x00b", "secret"), ("x" * 5000, "y"), ("ok", "\x00"),
])
def test_unusable_client_credentials_are_invalid_client(
    emulator: Emulator, client_id: str, client_secret: str
) -> None:
    as_json = emulator.http.post("/v2/oauth/token", json={
        "client_id": client_id, "client_secret": client_secret,
        "grant_type": "client_credentials"})
    as_form = emulator.http.post("/v2/oauth/token", data={
        "client_id": client_id, "client_secret": client_secret,
        "grant_type": "client_credentials"})
    for response in (as_json, as_form):
        assert response.status_code == 401, response.text
        assert response.json() == oauth("invalid_client", INVALID_CLIENT)


@pytest.mark.parametrize("header", [
    "Basic " + base64.b64encode(b"\x00:\x00").decode(),
    "Basic " + base64.b64encode(b"a\x00:b").decode(),
    "Basic \xe9\xe9\xe9\xe9",
])
def test_unusable_basic_credentials_are_invalid_client(emulator: Emulator, header: str) -> None:
    response = emulator.http.post(
        "/v2/oauth/token", data={"grant_type": "client_credentials"},
        headers={"Authorization": header.encode("latin-1")})  # type: ignore[dict-item]
    assert response.status_code == 401
    assert response.json() == oauth("invalid_client", INVALID_CLIENT)
    assert response.headers["www-authenticate"] == 'Basic realm="connect"'


def test_one_client_per_request(emulator: Emulator, shop: Retailer, other_shop: Retailer) -> None:
    basic = (shop.client_id, shop.client_secret)
    mismatched = emulator.http.post("/v2/oauth/token", auth=basic, data={
        "grant_type": "client_credentials", "client_id": other_shop.client_id})
    assert mismatched.status_code == 400
    assert mismatched.json() == oauth("invalid_request", INVALID_REQUEST)
    same = emulator.http.post("/v2/oauth/token", auth=basic, data={
        "grant_type": "client_credentials", "client_id": shop.client_id})
    assert same.status_code == 200, same.text


# --- a JSON key twice -----------------------------------------------------------------------


def test_a_json_key_twice_on_the_token_endpoints(
    emulator: Emulator, shop: Retailer, other_shop: Retailer
) -> None:
    twice = (
        f'{{"client_id":"{shop.client_id}","client_id":"{other_shop.client_id}",'
        f'"client_secret":"{other_shop.client_secret}","grant_type":"client_credentials"}}'
    )
    revoke = (f'{{"client_id":"{shop.client_id}","client_secret":"{shop.client_secret}",'
              f'"token":"a","token":"b"}}')
    for path, body in (("/v2/oauth/token", twice), ("/v2/oauth/token/revoke", revoke)):
        response = emulator.http.post(path, content=body,
                                      headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json() == oauth("invalid_request", INVALID_REQUEST)


def test_a_json_key_twice_on_a_connect_body_keeps_the_last(shop: Retailer) -> None:
    response = shop.http.post(
        "/v2/fulfillment/users", content=b'{"user_id":"u1","first_name":"a","first_name":"bob"}',
        headers={**shop.headers(), "Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.json()["first_name"] == "Bob"


# --- path ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("user_id", ["%00", "a%00", "%1F", "%7F", "x" * 256, "x" * 5000])
@pytest.mark.parametrize("method,template", USER_PATHS)
def test_a_path_id_no_user_can_have_is_not_found(
    shop: Retailer, method: str, template: str, user_id: str
) -> None:
    response = shop.http.request(method, template.format(user_id), headers=shop.headers(),
                                 json={"linking_token": "x"} if method == "POST" else None)
    assert response.status_code == 400, response.text
    assert response.json() == connect("User Not Found", key="user_id")


@pytest.mark.parametrize("account_id", [
    "9" * 4301, "1" * 20, str(2**63), "-1", "%00", "1%00", "0x10", "%EF%BC%91",  # fullwidth 1
])
def test_a_sandbox_id_that_is_no_64_bit_integer(shop: Retailer, account_id: str) -> None:
    response = shop.authorize(account_id)
    assert response.status_code == 400
    assert response.json() == connect("Invalid user_id", key="user_id")


# --- the Login pages ------------------------------------------------------------------------


@pytest.mark.parametrize("client_id", ["%00", "a%00b", "x" * 300])
def test_login_page_with_an_unusable_client_id(emulator: Emulator, client_id: str) -> None:
    response = emulator.http.get(
        f"/oauth/authorize?response_type=code&client_id={client_id}"
        f"&redirect_uri={quote('https://shop.example/cb')}")
    assert response.status_code == 400
    assert "not registered with Instacart" in response.text


# --- transport ------------------------------------------------------------------------------


def _raw(emulator: Emulator, request: bytes, close: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", emulator.server.port), timeout=10) as sock:
        sock.sendall(request)
        if close:
            return b""
        return sock.recv(65536)


def _logged(
    caplog: pytest.LogCaptureFixture, wanted: Callable[[logging.LogRecord], bool]
) -> list[logging.LogRecord]:
    """The records ``wanted`` picks, once there are any: the server logs after it answers."""
    deadline = time.monotonic() + 10
    while not (found := [r for r in caplog.records if wanted(r)]):
        assert time.monotonic() < deadline, "never logged"
        time.sleep(0.02)
    return found


def test_a_content_length_of_thousands_of_digits_is_too_large(shop: Retailer,
                                                              emulator: Emulator) -> None:
    token = shop.token
    answer = _raw(emulator, (
        f"POST /v2/fulfillment/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Length: {'9' * 5000}\r\n\r\n").encode(), close=False)
    assert answer.split(b"\r\n", 1)[0] in {b"HTTP/1.1 413 Request Entity Too Large",
                                           b"HTTP/1.1 400 Bad Request"}


def test_a_client_leaving_mid_body_is_an_info_line(
    emulator: Emulator, shop: Retailer, caplog: pytest.LogCaptureFixture
) -> None:
    token = shop.token
    _raw(emulator, (
        f"POST /v2/fulfillment/users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user_id\":").encode())
    left = _logged(caplog, lambda r: "client left" in r.getMessage())
    assert left[0].levelno == logging.INFO and left[0].exc_info is None
    assert _users(emulator) == 0
    assert shop.create_user("u1").status_code == 200  # and it serves on


@pytest.fixture
def logged_emulator(database_url: str) -> Iterator[Emulator]:
    yield from make_emulator(database_url, access_log=True)


def test_log_lines_cap_what_they_copy(
    logged_emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    # (8 KiB is a request line's cap: a longer one is 431, tests/test_http_framing.py)
    path = "/v2/fulfillment/users/" + "x" * 8_000 + "%0Aforged"
    answer = _raw(logged_emulator, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                  close=False)
    assert answer.startswith(b"HTTP/1.1 401 ")
    access = [r.getMessage() for r in _logged(caplog, lambda r: r.name == "connectlink.access")]
    assert len(access) == 1
    assert len(access[0]) < 400 and "more]" in access[0] and "\n" not in access[0]
