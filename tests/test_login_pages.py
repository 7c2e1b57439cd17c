"""The "Login with Instacart" pages over HTTP, on both engines: every rule of decisions.md
"Login with Instacart" (the browser flow itself is in test_login_browser.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from conftest import make_emulator
from support import REDIRECT_URI, Emulator, Retailer, query_sql

PASSWORD = "correct horse battery"  # support.Retailer.instacart_user's
# RFC 7636 Appendix B.
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


class Shopper:
    """A browser without JavaScript: follows the pages' forms with httpx, keeping cookies."""

    def __init__(self, emulator: Emulator, shop: Retailer, address: str = "127.0.0.1",
                 **params: str) -> None:
        # Every 127.0.0.0/8 address is loopback on Linux: one shopper per client address.
        self.http = httpx.Client(base_url=emulator.server.url,
                                 transport=httpx.HTTPTransport(local_address=address))
        self.shop = shop
        self.params = {"response_type": "code", "client_id": shop.client_id,
                       "redirect_uri": REDIRECT_URI, "state": "st-8 &?=é", **params}
        self.page: httpx.Response | None = None

    def open(self, **params: str) -> httpx.Response:
        self.page = self.http.get("/oauth/authorize", params={**self.params, **params})
        return self.page

    def form(self, action: str) -> dict[str, str]:
        """The hidden fields of the form posting to ``action`` on the current page."""
        assert self.page is not None
        found = re.search(rf'<form method="post" action="{action}".*?</form>', self.page.text,
                          re.S)
        assert found, f"no form posting to {action}"
        return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
                               found.group(0).replace("&amp;", "&").replace("&#34;", '"')))

    def sign_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        fields = {**self.form("/oauth/sign_in"), "email": email, "password": password}
        response = self.http.post("/oauth/sign_in", data=fields)
        if response.status_code == 303:
            self.page = self.http.get(response.headers["location"])
        else:
            self.page = response
        return response

    def decide(self, decision: str) -> httpx.Response:
        return self.http.post("/oauth/authorize",
                              data={**self.form("/oauth/authorize"), "decision": decision})

    def consent(self, email: str = "s@example.com") -> httpx.Response:
        self.open()
        self.sign_in(email)
        return self.decide("allow")


def returned(response: httpx.Response) -> dict[str, list[str]]:
    """The query a redirect to the registered URI carries; it must go exactly there."""
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    base, _, query = location.partition("?")
    assert base == REDIRECT_URI
    return parse_qs(query, keep_blank_values=True)


def title(response: httpx.Response) -> str:
    found = re.search(r"<h1>(.*?)</h1>", response.text, re.S)
    assert found, response.text
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


@pytest.fixture
def account(shop: Retailer) -> int:
    return shop.instacart_user("s@example.com")


@pytest.fixture
def shopper(emulator: Emulator, shop: Retailer, account: int) -> Shopper:
    return Shopper(emulator, shop)


# --- the flow ----------------------------------------------------------------------------------


def test_login_then_consent_then_a_code_that_links(shopper: Shopper, shop: Retailer) -> None:
    login = shopper.open()
    assert login.status_code == 200
    assert title(login) == "Log in to Instacart"
    assert "Retailer 1" in login.text
    assert shopper.sign_in("S@Example.com ").status_code == 303  # emails as stored
    assert title(shopper.page) == "Allow Retailer 1 to access your Instacart account?"  # type: ignore[arg-type]
    assert "s@example.com" in shopper.page.text  # type: ignore[union-attr]
    back = returned(shopper.decide("allow"))
    assert back["state"] == ["st-8 &?=é"]  # byte for byte
    token = shop.exchange(back["code"][0])
    assert token.status_code == 200
    assert token.json()["scope"] == "account_linking"
    shop.create_user("u1")
    assert shop.link("u1", token.json()["access_token"]).json() == {"success": True}
    assert shop.membership("u1").json()["instacartplus_member"] is True


def test_consent_is_asked_every_time(shopper: Shopper) -> None:
    shopper.consent()
    assert title(shopper.open()).startswith("Allow ")


def test_a_code_from_the_pages_obeys_every_rule_of_a_sandbox_code(
    shopper: Shopper, shop: Retailer, emulator: Emulator
) -> None:
    code = returned(shopper.consent())["code"][0]
    assert len(code) == 43
    assert shop.exchange(code, redirect_uri=shop.redirect_uris[1]).json()["error"] == \
        "invalid_grant"  # bound to the redirect URI, and consumed by the failed try
    assert shop.exchange(code).json()["error"] == "invalid_grant"  # single use
    late = returned(shopper.decide("allow"))["code"][0]
    emulator.clock.advance(601)  # 10 minutes
    assert shop.exchange(late).json()["error"] == "invalid_grant"


def test_pkce_with_the_rfc_7636_vector(emulator: Emulator, shop: Retailer, account: int) -> None:
    shopper = Shopper(emulator, shop, code_challenge=RFC_CHALLENGE, code_challenge_method="S256")
    code = returned(shopper.consent())["code"][0]
    assert shop.exchange(code, code_verifier=RFC_VERIFIER).status_code == 200
    wrong = returned(shopper.decide("allow"))["code"][0]
    assert shop.exchange(wrong, code_verifier=RFC_VERIFIER[:-1] + "R").json()["error"] == \
        "invalid_grant"


def test_a_client_that_requires_pkce_gets_invalid_request_without_it(
    emulator: Emulator, account: int
) -> None:
    strict = emulator.retailer(require_pkce=True)
    back = returned(Shopper(emulator, strict).open())
    assert back["error"] == ["invalid_request"]


def test_deny_goes_back_with_access_denied_and_no_code(shopper: Shopper) -> None:
    shopper.open()
    shopper.sign_in("s@example.com")
    back = returned(shopper.decide("deny"))
    assert back == {
        "error": ["access_denied"],
        "error_description": ["The resource owner or authorization server denied the request."],
        "state": ["st-8 &?=é"],
    }


def test_not_you_signs_out(shopper: Shopper) -> None:
    shopper.open()
    shopper.sign_in("s@example.com")
    out = shopper.http.post("/oauth/sign_out", data=shopper.form("/oauth/sign_out"))
    assert out.status_code == 303
    assert title(shopper.http.get(out.headers["location"])) == "Log in to Instacart"


def _copy_of_the_cookie(shopper: Shopper, emulator: Emulator) -> Shopper:
    thief = Shopper(emulator, shopper.shop)
    thief.http.cookies.update(shopper.http.cookies)
    return thief


def test_a_copy_of_the_cookie_taken_before_sign_out_is_signed_out_too(
    shopper: Shopper, emulator: Emulator
) -> None:
    """OWASP ASVS V3.3.1: sign-out ends the session on the server, not only in one browser."""
    shopper.open()
    shopper.sign_in("s@example.com")
    thief = _copy_of_the_cookie(shopper, emulator)
    assert title(thief.open()).startswith("Allow ")
    consent_form = thief.form("/oauth/authorize")
    shopper.http.post("/oauth/sign_out", data=shopper.form("/oauth/sign_out"))
    assert title(thief.open()) == "Log in to Instacart"
    thief.open()
    # the consent form it had open mints no code: the session is gone
    decided = thief.http.post("/oauth/authorize", data={**consent_form, "decision": "allow"})
    assert "code=" not in decided.headers.get("location", "")
    assert _codes(emulator) == 0


def test_a_lock_of_the_account_everywhere_ends_its_sessions(
    shopper: Shopper, emulator: Emulator
) -> None:
    shopper.open()
    shopper.sign_in("s@example.com")
    assert title(shopper.open()).startswith("Allow ")
    for n in range(25):  # 100 failures from 25 addresses lock the account everywhere
        _fail(Shopper(emulator, shopper.shop, address=f"127.0.2.{n + 1}"), "s@example.com", 4)
    assert title(shopper.open()) == "Log in to Instacart"


def test_a_session_lasts_twelve_hours(shopper: Shopper, emulator: Emulator) -> None:
    shopper.open()
    shopper.sign_in("s@example.com")
    emulator.clock.advance(12 * 3600 - 1)
    assert title(shopper.open()).startswith("Allow ")
    emulator.clock.advance(1)
    assert title(shopper.open()) == "Log in to Instacart"


def test_the_session_cookie_is_signed_http_only_and_lax(shopper: Shopper) -> None:
    cookie = shopper.open().headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Path=/oauth" in cookie
    assert "Max-Age=43200" in cookie
    value = shopper.http.cookies["connectlink_session"]
    shopper.http.cookies.set("connectlink_session", value[:-2] + "AA", path="/oauth")
    fields = {**shopper.form("/oauth/sign_in"), "email": "s@example.com", "password": PASSWORD}
    assert shopper.http.post("/oauth/sign_in", data=fields).status_code == 403  # forged


def test_every_page_carries_the_security_headers(shopper: Shopper) -> None:
    pages = [shopper.open(), shopper.http.get("/oauth/authorize")]  # a page and an error page
    shopper.sign_in("s@example.com")
    pages.append(shopper.page)  # type: ignore[arg-type]
    for response in pages:
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
    # The consent's form-action lets the browser follow Allow's redirect to the store.
    assert "form-action 'self' https://shop.example" in pages[-1].headers[
        "content-security-policy"]


def test_the_stylesheet_is_served_by_connectlink(emulator: Emulator) -> None:
    css = emulator.http.get("/oauth/assets/connectlink.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert ":focus-visible" in css.text
    assert emulator.http.get("/oauth/assets/../app.py").status_code == 404


# --- errors that never redirect ----------------------------------------------------------------


@pytest.mark.parametrize(("change", "slug"), [
    ({"client_id": "nobody"}, "invalid_client"),
    ({"client_id": ""}, "invalid_client"),
    ({"client_id": "a\x00b"}, "invalid_client"),
    ({"redirect_uri": ""}, "invalid_redirect_uri"),
    ({"redirect_uri": "https://evil.example/cb"}, "invalid_redirect_uri"),
    ({"redirect_uri": REDIRECT_URI + "/"}, "invalid_redirect_uri"),  # exact match only
    ({"redirect_uri": REDIRECT_URI.upper()}, "invalid_redirect_uri"),
])
def test_errors_that_are_shown_and_never_redirected(
    shopper: Shopper, change: dict[str, str], slug: str
) -> None:
    response = shopper.open(**change)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert title(response) == "This link is not valid"
    assert f"<code>{slug}</code>" in response.text
    assert "evil.example" not in response.text


def test_a_repeated_redirect_uri_is_never_followed(shopper: Shopper) -> None:
    response = shopper.http.get(
        f"/oauth/authorize?client_id={shopper.shop.client_id}&redirect_uri={REDIRECT_URI}"
        "&redirect_uri=https://evil.example/cb&response_type=code")
    assert response.status_code == 400
    assert "location" not in response.headers


# --- errors that go back to the redirect URI ---------------------------------------------------


@pytest.mark.parametrize(("change", "error"), [
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": ""}, "unsupported_response_type"),
    ({"scope": "connect:fulfillment"}, "invalid_scope"),
    ({"scope": "openid"}, "invalid_scope"),
    ({"code_challenge": "c" * 43, "code_challenge_method": "MD5"}, "invalid_request"),
    ({"code_challenge": "short"}, "invalid_request"),
    ({"code_challenge_method": "S256"}, "invalid_request"),
])
def test_redirectable_errors_arrive_with_state(
    shopper: Shopper, change: dict[str, str], error: str
) -> None:
    back = returned(shopper.open(**change))
    assert back["error"] == [error]
    assert back["state"] == ["st-8 &?=é"]
    assert back["error_description"][0]


def test_the_redirect_uris_own_query_is_kept(emulator: Emulator, account: int) -> None:
    with_query = "https://shop.example/cb?from=profile"
    shop = emulator.retailer(with_query)
    response = Shopper(emulator, shop, redirect_uri=with_query).open(response_type="token")
    assert response.headers["location"].startswith(with_query + "&error=unsupported_response_type")


def test_without_state_none_is_sent_back(emulator: Emulator, shop: Retailer) -> None:
    response = emulator.http.get("/oauth/authorize", params={
        "client_id": shop.client_id, "redirect_uri": REDIRECT_URI, "response_type": "token"})
    assert "state" not in returned(response)


def test_scope_defaults_to_account_linking_and_openid_is_ignored(
    emulator: Emulator, shop: Retailer, account: int
) -> None:
    for scope in ({}, {"scope": "openid account_linking"}, {"scope": "openid,account_linking"}):
        shopper = Shopper(emulator, shop, **scope)
        code = returned(shopper.consent())["code"][0]
        assert shop.exchange(code).json()["scope"] == "account_linking"


# --- sign-in ------------------------------------------------------------------------------------


@pytest.mark.parametrize("email", ["s@example.com", "nobody@example.com", "", "a\x00b"])
def test_a_failed_sign_in_says_the_same_whichever_was_wrong(shopper: Shopper, email: str) -> None:
    shopper.open()
    response = shopper.sign_in(email, "wrong password")
    assert response.status_code == 422
    assert "Incorrect email or password." in response.text
    assert 'aria-invalid="true"' in response.text
    assert title(response) == "Log in to Instacart"


def _fail(shopper: Shopper, email: str, times: int) -> httpx.Response:
    response = None
    for _ in range(times):
        shopper.open()
        response = shopper.sign_in(email, "wrong password")
    assert response is not None
    return response


def _lock(shopper: Shopper, email: str) -> None:
    """Five failures, each answered as one; then the right password is refused unchecked."""
    assert _fail(shopper, email, 5).status_code == 422
    shopper.open()
    assert shopper.sign_in(email).status_code == 429


def test_five_failures_lock_the_account_for_fifteen_minutes(
    shopper: Shopper, emulator: Emulator
) -> None:
    assert _fail(shopper, "s@example.com", 4).status_code == 422
    fifth = _fail(shopper, "s@example.com", 1)  # the failure that locks is still a failure
    assert fifth.status_code == 422
    assert "Incorrect email or password." in fifth.text
    shopper.open()
    locked = shopper.sign_in("s@example.com")  # the right password, not checked
    assert locked.status_code == 429
    assert locked.headers["retry-after"] == "900"
    assert title(locked) == "Too many sign-in attempts"
    assert "You can try again at" in locked.text
    emulator.clock.advance(899)
    assert Shopper(emulator, shopper.shop).open().status_code == 200
    shopper.open()
    assert shopper.sign_in("s@example.com").headers["retry-after"] == "1"
    emulator.clock.advance(1)
    shopper.open()
    assert shopper.sign_in("s@example.com").status_code == 303


def test_failures_older_than_fifteen_minutes_do_not_count(
    shopper: Shopper, emulator: Emulator
) -> None:
    _fail(shopper, "s@example.com", 4)
    emulator.clock.advance(15 * 60)
    _lock(shopper, "s@example.com")  # five more, not one


def test_a_successful_sign_in_clears_the_accounts_count(
    shopper: Shopper, emulator: Emulator
) -> None:
    _fail(shopper, "s@example.com", 4)
    shopper.open()
    assert shopper.sign_in("s@example.com").status_code == 303
    _lock(Shopper(emulator, shopper.shop), "s@example.com")  # five more, not one


def test_an_account_locked_from_one_address_opens_from_another(
    shopper: Shopper, emulator: Emulator
) -> None:
    """Knowing a shopper's email is not enough to lock them out (decisions.md)."""
    _lock(Shopper(emulator, shopper.shop, address="127.0.0.66"), "s@example.com")
    shopper.open()
    assert shopper.sign_in("s@example.com").status_code == 303


def test_a_hundred_failures_from_everywhere_lock_the_account_everywhere(
    shopper: Shopper, emulator: Emulator
) -> None:
    for n in range(25):  # four failures from each of 25 addresses: no address reaches a limit
        guesser = Shopper(emulator, shopper.shop, address=f"127.0.1.{n + 1}")
        assert _fail(guesser, "s@example.com", 4).status_code == 422
    shopper.open()
    assert shopper.sign_in("s@example.com").status_code == 429
    emulator.clock.advance(15 * 60)
    shopper.open()
    assert shopper.sign_in("s@example.com").status_code == 303


def test_thirty_failures_lock_the_client_address(shopper: Shopper, emulator: Emulator) -> None:
    for n in range(10):  # three failures each: no account reaches its own limit
        assert _fail(shopper, f"guess{n}@example.com", 3).status_code == 422  # the 30th too
    shopper.open()
    assert shopper.sign_in("s@example.com").status_code == 429  # every account, from here
    assert Shopper(emulator, shopper.shop, address="127.0.0.67").consent().status_code == 302
    emulator.clock.advance(15 * 60)
    shopper.open()
    assert shopper.sign_in("s@example.com").status_code == 303


# --- CSRF ---------------------------------------------------------------------------------------


def _codes(emulator: Emulator) -> int:
    return int(query_sql(emulator.database_url, "SELECT count(*) FROM authorization_codes")[0][0])


@pytest.mark.parametrize("tamper", ["missing", "wrong", "no session"])
def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    shopper: Shopper, emulator: Emulator, tamper: str
) -> None:
    shopper.open()
    shopper.sign_in("s@example.com")
    fields: dict[str, Any] = {**shopper.form("/oauth/authorize"), "decision": "allow"}
    if tamper == "missing":
        del fields["csrf_token"]
    elif tamper == "wrong":
        fields["csrf_token"] = "x" * 43
    else:
        shopper.http.cookies.clear()
    for action in ("/oauth/authorize", "/oauth/sign_in", "/oauth/sign_out"):
        refused = shopper.http.post(action, data={**fields, "email": "s@example.com",
                                                  "password": PASSWORD})
        assert refused.status_code == 403
        assert title(refused) == "This form has expired"
        assert "location" not in refused.headers
    assert _codes(emulator) == 0


def test_an_unreadable_form_is_a_400_page(shopper: Shopper) -> None:
    shopper.open()
    response = shopper.http.post("/oauth/sign_in", content=b"email=\xff\xfe",
                                 headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")


def test_a_wrong_method_on_a_page_is_a_page(emulator: Emulator) -> None:
    response = emulator.http.delete("/oauth/authorize")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert response.headers["content-type"].startswith("text/html")


# --- the secret key -----------------------------------------------------------------------------


def test_the_emulator_keeps_its_secret_key_across_restarts(database_url: str) -> None:
    """A shopper signed in before a restart is still signed in after it."""
    first = make_emulator(database_url)
    emulator = next(first)
    shop = emulator.retailer()
    shop.instacart_user("s@example.com")
    shopper = Shopper(emulator, shop)
    shopper.open()
    shopper.sign_in("s@example.com")
    first.close()
    again = make_emulator(database_url)
    restarted = next(again)
    try:
        shopper.http.base_url = httpx.URL(restarted.server.url)
        assert title(shopper.open()).startswith("Allow ")
        stored = query_sql(database_url, "SELECT count(*) FROM server_secrets")
        assert stored[0][0] == 1
    finally:
        again.close()


@pytest.fixture
def production(database_url: str) -> Iterator[Emulator]:
    yield from make_emulator(database_url, profile="production")


def test_the_pages_exist_in_production_with_the_configured_key(production: Emulator) -> None:
    shop = production.retailer()
    response = production.http.get("/oauth/authorize", params={
        "response_type": "code", "client_id": shop.client_id, "redirect_uri": REDIRECT_URI})
    assert response.status_code == 200
    assert "(sandbox)" not in response.text
    assert "fulfillment_sandbox" not in response.text
    assert query_sql(production.database_url, "SELECT count(*) FROM server_secrets")[0][0] == 0
