"""POST /v2/oauth/token and /v2/oauth/token/revoke: what succeeds and what it changes."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from conftest import SECRET_KEY, START, upgraded
from connectlink.clock import ManualClock
from connectlink.oauth import pkce
from connectlink.server.app import create_app
from connectlink.settings import Settings
from support import Emulator, Retailer, ThreadServer, new_retailer

TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
# RFC 7636 Appendix B, copied from the RFC: expectations never come from the code under test.
RFC_VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
RFC_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_client_credentials_issues_a_day_long_bearer(emulator: Emulator, shop: Retailer) -> None:
    response = shop.token_request(grant_type="client_credentials")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["access_token", "token_type", "expires_in", "scope", "created_at"]
    assert TOKEN_SHAPE.fullmatch(body["access_token"])
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 86400
    assert body["scope"] == "connect:fulfillment"
    assert body["created_at"] == int(emulator.clock.now())
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


def test_form_body_and_http_basic_are_accepted(emulator: Emulator, shop: Retailer) -> None:
    form = emulator.http.post("/v2/oauth/token", data={
        "grant_type": "client_credentials", "client_id": shop.client_id,
        "client_secret": shop.client_secret})
    basic = emulator.http.post("/v2/oauth/token", data={"grant_type": "client_credentials"},
                               auth=(shop.client_id, shop.client_secret))
    for response in (form, basic):
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        assert shop.get("/v2/fulfillment/users/x", token=token).status_code == 400  # not 401


def test_json_body_without_content_type_is_read(emulator: Emulator, shop: Retailer) -> None:
    response = emulator.http.post(
        "/v2/oauth/token",
        content=f'{{"grant_type":"client_credentials","client_id":"{shop.client_id}",'
                f'"client_secret":"{shop.client_secret}"}}',
    )
    assert response.status_code == 200, response.text


def test_scope_may_be_comma_or_space_separated(shop: Retailer) -> None:
    for scope in ("connect:fulfillment", "connect:fulfillment,", " connect:fulfillment "):
        response = shop.token_request(grant_type="client_credentials", scope=scope)
        assert response.status_code == 200, scope
        assert response.json()["scope"] == "connect:fulfillment"


def test_each_token_is_new(shop: Retailer) -> None:
    assert shop.access_token() != shop.access_token()


def test_access_token_expires_after_a_day(emulator: Emulator, shop: Retailer) -> None:
    token = shop.access_token()
    emulator.clock.advance(86_399)
    assert shop.get("/v2/fulfillment/users/x", token=token).status_code == 400
    emulator.clock.advance(1)
    assert shop.get("/v2/fulfillment/users/x", token=token).status_code == 401


def test_exchange_gives_a_linking_token_scoped_account_linking(
    emulator: Emulator, shop: Retailer
) -> None:
    code = shop.code(shop.instacart_user("s@example.com"))
    # The docs' example sends scope; a scope on the exchange is ignored (RFC 6749 4.1.3).
    response = shop.exchange(code, scope="connect:fulfillment")
    assert response.status_code == 200, response.text
    body = response.json()
    assert TOKEN_SHAPE.fullmatch(body["access_token"])
    assert body == {"access_token": body["access_token"], "token_type": "Bearer",
                    "expires_in": 86400, "scope": "account_linking",
                    "created_at": int(emulator.clock.now())}


def test_code_is_single_use_and_replay_revokes_the_unused_token(shop: Retailer) -> None:
    account = shop.instacart_user("s@example.com")
    code = shop.code(account)
    first = shop.exchange(code)
    assert first.status_code == 200
    assert shop.exchange(code).json()["error"] == "invalid_grant"
    shop.create_user("u1")
    # RFC 6749 4.1.2: the token the first use produced is revoked by the replay.
    assert shop.link("u1", first.json()["access_token"]).json()["error"]["message"] == (
        "Linking token is invalid")


def test_replay_after_linking_leaves_the_link(shop: Retailer) -> None:
    account = shop.instacart_user("s@example.com")
    code = shop.code(account)
    token = shop.exchange(code).json()["access_token"]
    shop.create_user("u1")
    assert shop.link("u1", token).status_code == 200
    assert shop.exchange(code).status_code == 400
    assert shop.membership("u1").status_code == 200


def test_a_failed_exchange_uses_the_code_up(shop: Retailer) -> None:
    code = shop.code(shop.instacart_user("s@example.com"))
    assert shop.exchange(code, redirect_uri=shop.redirect_uris[1]).status_code == 400
    assert shop.exchange(code).json()["error"] == "invalid_grant"


def test_another_clients_attempt_does_not_use_the_code_up(
    shop: Retailer, other_shop: Retailer
) -> None:
    code = shop.code(shop.instacart_user("s@example.com"))
    assert other_shop.exchange(code, redirect_uri=shop.redirect_uri).status_code == 400
    assert shop.exchange(code).status_code == 200


def test_code_lives_ten_minutes(emulator: Emulator, shop: Retailer) -> None:
    account = shop.instacart_user("s@example.com")
    fresh, stale = shop.code(account), shop.code(account)
    emulator.clock.advance(599)
    assert shop.exchange(fresh).status_code == 200
    emulator.clock.advance(1)
    assert shop.exchange(stale).json()["error"] == "invalid_grant"


def test_pkce_module_matches_the_rfc_7636_vector() -> None:
    """The S256 transform and the check, against the RFC's own example rather than a second
    run of the same code."""
    assert pkce.s256(RFC_VERIFIER) == RFC_CHALLENGE
    assert pkce.verify(RFC_VERIFIER, RFC_CHALLENGE, "S256")
    assert not pkce.verify(RFC_VERIFIER[:-1] + "R", RFC_CHALLENGE, "S256")
    assert not pkce.verify(RFC_CHALLENGE, RFC_CHALLENGE, "S256")  # the challenge is no verifier
    assert pkce.verify(RFC_VERIFIER, RFC_VERIFIER, "plain")
    assert not pkce.verify(RFC_VERIFIER, RFC_CHALLENGE, "plain")


def test_pkce_s256_and_plain(shop: Retailer) -> None:
    """Over HTTP, with the RFC 7636 vector: the server hashes an S256 verifier, compares a plain
    one as is, and never takes one method's challenge for the other's."""
    account = shop.instacart_user("s@example.com")
    s256 = shop.code(account, code_challenge=RFC_CHALLENGE, code_challenge_method="S256")
    assert shop.exchange(s256, code_verifier=RFC_VERIFIER).status_code == 200
    wrong = shop.code(account, code_challenge=RFC_CHALLENGE, code_challenge_method="S256")
    assert shop.exchange(wrong, code_verifier=RFC_VERIFIER[:-1] + "R").json()["error"] == (
        "invalid_grant")
    # sending the challenge back as the verifier does not pass an S256 check
    echoed = shop.code(account, code_challenge=RFC_CHALLENGE, code_challenge_method="S256")
    assert shop.exchange(echoed, code_verifier=RFC_CHALLENGE).json()["error"] == "invalid_grant"
    plain = shop.code(account, code_challenge=RFC_VERIFIER)  # the method defaults to plain
    assert shop.exchange(plain, code_verifier=RFC_VERIFIER).status_code == 200
    # a plain challenge is not accepted as if it were the S256 one
    swapped = shop.code(account, code_challenge=RFC_CHALLENGE, code_challenge_method="plain")
    assert shop.exchange(swapped, code_verifier=RFC_VERIFIER).json()["error"] == "invalid_grant"


def test_a_verifier_for_a_code_without_a_challenge_is_refused(shop: Retailer) -> None:
    """RFC 9700 section 4.8.2: a code issued without a challenge, exchanged with a verifier, is
    a stripped challenge (a PKCE downgrade). Like any failed exchange it spends the code."""
    account = shop.instacart_user("s@example.com")
    code = shop.code(account)
    response = shop.exchange(code, code_verifier=RFC_VERIFIER)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert shop.exchange(code).json()["error"] == "invalid_grant"
    assert shop.exchange(shop.code(account)).status_code == 200  # no verifier: as before


def test_client_requiring_pkce_needs_a_challenge(emulator: Emulator) -> None:
    strict = emulator.retailer(require_pkce=True)
    account = strict.instacart_user("s@example.com")
    response = strict.authorize(account)
    assert response.status_code == 400
    assert response.json()["meta"] == {"key": "code_challenge"}
    assert strict.linking_token(account, verifier=RFC_VERIFIER)


def test_linking_token_lives_a_day(emulator: Emulator, shop: Retailer) -> None:
    account = shop.instacart_user("s@example.com")
    shop.create_user("u1")
    shop.create_user("u2")
    token_a, token_b = shop.linking_token(account), shop.linking_token(account)
    emulator.clock.advance(86_399)
    shop.forget_token()
    assert shop.link("u1", token_a).status_code == 200
    emulator.clock.advance(1)
    assert shop.link("u1", token_b).json()["error"]["message"] == "Linking token is invalid"


def test_revoke_own_token(emulator: Emulator, shop: Retailer) -> None:
    token = shop.access_token()
    response = emulator.http.post("/v2/oauth/token/revoke", json={
        "client_id": shop.client_id, "client_secret": shop.client_secret, "token": token})
    assert response.status_code == 200
    assert response.json() == {}
    assert shop.get("/v2/fulfillment/users/x", token=token).json()["error_description"] == (
        "The access token was revoked")
    assert shop.get("/v2/fulfillment/users/x").status_code == 400  # other tokens still work


def test_revoke_unknown_token_answers_empty(emulator: Emulator, shop: Retailer) -> None:
    response = emulator.http.post("/v2/oauth/token/revoke", json={
        "client_id": shop.client_id, "client_secret": shop.client_secret, "token": "nothing"})
    assert (response.status_code, response.json()) == (200, {})


def test_foreign_revoke_leaves_the_token_working(
    emulator: Emulator, shop: Retailer, other_shop: Retailer
) -> None:
    token = shop.access_token()
    response = emulator.http.post("/v2/oauth/token/revoke", json={
        "client_id": other_shop.client_id, "client_secret": other_shop.client_secret,
        "token": token})
    assert response.status_code == 403
    assert shop.get("/v2/fulfillment/users/x", token=token).status_code == 400


def test_query_params_refusal_issues_nothing(emulator: Emulator, shop: Retailer) -> None:
    response = emulator.http.post(
        "/v2/oauth/token", params={"client_id": shop.client_id},
        json={"grant_type": "client_credentials", "client_id": shop.client_id,
              "client_secret": shop.client_secret})
    assert response.status_code == 403
    assert "access_token" not in response.json()



@pytest.mark.parametrize("profile", ["emulator", "production"])
def test_a_token_request_reads_its_client_once(database_url: str, profile: str) -> None:
    """Authentication, the emulator's journal and faults, the rate limit and the grant all use
    the one read of the client (the real store, its calls counted)."""
    overrides = {"secret_key": SECRET_KEY} if profile == "production" else {}
    settings = Settings.for_profile(profile, database_url=upgraded(database_url),
                                    access_log=False, **overrides)
    app = create_app(settings, clock=ManualClock(START))
    server = ThreadServer(settings, ManualClock(START))
    server.start(app)
    try:
        store = app.state.context.store
        reads: list[str] = []
        real = store.get_client

        async def counted(client_id: str) -> Any:
            reads.append(client_id)
            return await real(client_id)

        store.get_client = counted
        with httpx.Client(base_url=server.url) as http:
            shop = new_retailer(http, database_url=settings.database_url)
            for grant in ("client_credentials", "authorization_code", "password"):
                reads.clear()
                shop.token_request(grant_type=grant, code="c", redirect_uri=shop.redirect_uri)
                assert reads == [shop.client_id], grant
    finally:
        server.stop()
