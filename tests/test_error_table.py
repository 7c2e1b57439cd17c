"""Every error row of connect-api.md and decisions.md, triggered over HTTP and checked exactly:
status, body, and the headers that matter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

import contract
from connectlink import errors
from connectlink.linking import retailers
from connectlink.models import CLIENT_CREDENTIALS, FULFILLMENT
from support import Emulator, Retailer, execute_sql

INVALID_CLIENT = (
    "Client authentication failed due to unknown client, no client authentication included, "
    "or unsupported authentication method."
)
INVALID_GRANT = "Assertion is not provided or invalid assertion provided for the grant_type."
INVALID_REQUEST = (
    "The request is missing a required parameter, includes an unsupported parameter value, or "
    "is otherwise malformed."
)
QUERY_FORBIDDEN = (
    "Providing OAuth credentials as query parameters may cause them to be compromised. Please "
    "reach out to Instacart's security team and have the credentials rotated."
)
INSUFFICIENT = "The request requires higher privileges than provided by the access token."


def connect(message: str, code: int | None = 1001, key: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "code": code}, "meta": {"key": key} if key else {}}


def oauth(error: str, description: str) -> dict[str, Any]:
    return {"error": error, "error_description": description}


def challenge(description: str, error: str = "invalid_token") -> str:
    return f'Bearer realm="connect", error="{error}", error_description="{description}"'


def multiple(*errors: dict[str, Any]) -> dict[str, Any]:
    return {
        "error": {"message": "There were issues with your request", "code": 9999,
                  "errors": list(errors)},
        "meta": {},
    }


@dataclass
class World:
    emulator: Emulator
    shop: Retailer
    other: Retailer

    @property
    def http(self) -> httpx.Client:
        return self.emulator.http

    def linked_pair(self) -> tuple[int, str]:
        """An Instacart account linked to the shop's user "owner"; returns (account, a fresh
        linking token for the same account)."""
        account = self.shop.instacart_user("owner@example.com")
        self.shop.create_user("owner")
        assert self.shop.link("owner", self.shop.linking_token(account)).status_code == 200
        return account, self.shop.linking_token(account)

    def inactive_user(self, user_id: str = "gone") -> str:
        self.shop.create_user(user_id)
        response = self.shop.post(f"/v2/fulfillment/users/{user_id}/privacy_request")
        assert response.status_code == 200
        return user_id


@dataclass
class Case:
    id: str
    request: Callable[[World], httpx.Response]
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _token_with_code(w: World, **params: Any) -> httpx.Response:
    account = w.shop.instacart_user("shopper@example.com")
    return w.shop.exchange(w.shop.code(account), **params)


def _reused_code(w: World) -> httpx.Response:
    account = w.shop.instacart_user("shopper@example.com")
    code = w.shop.code(account)
    assert w.shop.exchange(code).status_code == 200
    return w.shop.exchange(code)


def _expired_code(w: World) -> httpx.Response:
    account = w.shop.instacart_user("shopper@example.com")
    code = w.shop.code(account)
    w.emulator.clock.advance(601)
    return w.shop.exchange(code)


def _pkce_code(w: World, verifier: str | None) -> httpx.Response:
    account = w.shop.instacart_user("shopper@example.com")
    code = w.shop.code(account, code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                       code_challenge_method="S256")  # RFC 7636 Appendix B
    return w.shop.exchange(code, **({"code_verifier": verifier} if verifier else {}))


def _expired_bearer(w: World) -> httpx.Response:
    token = w.shop.access_token()
    w.emulator.clock.advance(86_400)
    return w.shop.get("/v2/fulfillment/users/u1", token=token)


def _revoked_bearer(w: World) -> httpx.Response:
    token = w.shop.access_token()
    revoked = w.http.post("/v2/oauth/token/revoke", json={
        "client_id": w.shop.client_id, "client_secret": w.shop.client_secret, "token": token})
    assert revoked.status_code == 200
    return w.shop.get("/v2/fulfillment/users/u1", token=token)


def _linking_token_as_bearer(w: World) -> httpx.Response:
    account = w.shop.instacart_user("shopper@example.com")
    return w.shop.get("/v2/fulfillment/users/u1", token=w.shop.linking_token(account))


def _link_token(w: World, token_of: Callable[[World], Any]) -> httpx.Response:
    w.shop.create_user("u1")
    return w.shop.link("u1", token_of(w))


def _used_linking_token(w: World) -> str:
    account = w.shop.instacart_user("shopper@example.com")
    token = w.shop.linking_token(account)
    w.shop.create_user("first")
    assert w.shop.link("first", token).status_code == 200
    return token


def _expired_linking_token(w: World) -> str:
    token = w.shop.linking_token(w.shop.instacart_user("shopper@example.com"))
    w.emulator.clock.advance(86_400)
    w.shop.forget_token()
    return token


def _revoked_linking_token(w: World) -> str:
    token = w.shop.linking_token(w.shop.instacart_user("shopper@example.com"))
    w.http.post("/v2/oauth/token/revoke", data={
        "client_id": w.shop.client_id, "client_secret": w.shop.client_secret, "token": token})
    return token


def _grant_the_client_lacks(w: World) -> httpx.Response:
    created = w.emulator.run(lambda store: retailers.create(
        store, w.emulator.clock, "backend only", ["https://a.example/cb"],
        grants={CLIENT_CREDENTIALS: frozenset({FULFILLMENT})}))
    return w.http.post("/v2/oauth/token", json={
        "client_id": created.client.client_id, "client_secret": created.client_secret,
        "grant_type": "authorization_code", "code": "x", "redirect_uri": "https://a.example/cb"})


def _database_broken_midway(w: World) -> httpx.Response:
    """A failure nobody planned for: the audit table vanishes behind the server's back."""
    account = w.shop.instacart_user("s@example.com")
    w.shop.create_user("u1")
    token = w.shop.linking_token(account)
    execute_sql(w.emulator.database_url, "DROP TABLE audit_events")
    response = w.shop.link("u1", token)
    # nothing half-written: the token was not consumed and no link exists
    assert w.shop.membership("u1").json()["error"]["message"] == "User Not Linked"
    return response


def _already_linked(w: World) -> httpx.Response:
    _, token = w.linked_pair()
    w.shop.create_user("second")
    return w.shop.link("second", token)


def _raw(method: str, path: str, content: bytes, auth: bool = True) -> Callable[[World], Any]:
    def send(w: World) -> httpx.Response:
        headers = {"Content-Type": "application/json", **(w.shop.headers() if auth else {})}
        return w.http.request(method, path, content=content, headers=headers)

    return send


LINK = "/v2/fulfillment/users/u1/link"
SANDBOX = "/v2/fulfillment_sandbox/instacart_users"

CASES = [
    # --- POST /v2/fulfillment/users/{user_id}/link (the reference page) ---------------------
    Case("link: user not found", lambda w: w.shop.link("nobody", "x"), 400,
         connect("User Not Found", key="user_id")),
    Case("link: another retailer's user is not found",
         lambda w: (w.other.create_user("u1"), w.shop.link("u1", "x"))[1], 400,
         connect("User Not Found", key="user_id")),
    Case("link: unknown linking token", lambda w: _link_token(w, lambda _: "nope"), 400,
         connect("Linking token is invalid", key="linking_token")),
    Case("link: used linking token", lambda w: _link_token(w, _used_linking_token), 400,
         connect("Linking token is invalid", key="linking_token")),
    Case("link: expired linking token", lambda w: _link_token(w, _expired_linking_token), 400,
         connect("Linking token is invalid", key="linking_token")),
    Case("link: revoked linking token", lambda w: _link_token(w, _revoked_linking_token), 400,
         connect("Linking token is invalid", key="linking_token")),
    Case("link: another retailer's linking token",
         lambda w: _link_token(w, lambda w: w.other.linking_token(
             w.other.instacart_user("shopper@example.com"))), 400,
         connect("Linking token is invalid", key="linking_token")),
    Case("link: an access token as linking token",
         lambda w: _link_token(w, lambda w: w.shop.token), 400,
         connect("Linking token is invalid", key="linking_token")),
    Case("link: linking token of another type", lambda w: _link_token(w, lambda _: 12345), 400,
         connect("Linking token is invalid", key="linking_token")),
    Case("link: linking token missing",
         lambda w: (w.shop.create_user("u1"), w.shop.post(LINK, {}))[1], 400,
         connect("can't be blank", key="linking_token")),
    Case("link: linking token blank", lambda w: _link_token(w, lambda _: "  "), 400,
         connect("can't be blank", key="linking_token")),
    Case("link: linking token null", lambda w: _link_token(w, lambda _: None), 400,
         connect("can't be blank", key="linking_token")),
    Case("link: body is a JSON array",
         lambda w: (w.shop.create_user("u1"), w.shop.post(LINK, []))[1], 400,
         connect("can't be blank", key="linking_token")),
    Case("link: Instacart user already linked at this retailer", _already_linked, 400,
         connect("Validation failed: Common identities can only have one user per isolation "
                 "context", key="linking_token")),
    Case("link: user not active", lambda w: w.shop.link(w.inactive_user(), "x"), 403,
         connect("User Not Active", code=None)),
    Case("link: not-active comes before a blank token",
         lambda w: w.shop.post(f"/v2/fulfillment/users/{w.inactive_user()}/link", {}), 403,
         connect("User Not Active", code=None)),
    Case("link: not-found comes before a blank token",
         lambda w: w.shop.post("/v2/fulfillment/users/nobody/link", {}), 400,
         connect("User Not Found", key="user_id")),
    Case("link: malformed JSON",
         _raw("POST", LINK, b'{"linking_token": '), 400,
         connect("Malformed JSON body", code=4001)),
    # --- GET /v2/fulfillment/users/{user_id}/link ------------------------------------------
    Case("get link: user not found", lambda w: w.shop.membership("nobody"), 400,
         connect("User Not Found", key="user_id")),
    Case("get link: user not linked",
         lambda w: (w.shop.create_user("u1"), w.shop.membership("u1"))[1], 400,
         connect("User Not Linked", key="user_id")),
    Case("get link: user not active", lambda w: w.shop.membership(w.inactive_user()), 403,
         connect("User Not Active", code=None)),
    # --- Connect users ------------------------------------------------------------------------
    Case("get user: not found", lambda w: w.shop.get("/v2/fulfillment/users/nobody"), 400,
         connect("User Not Found", key="user_id")),
    Case("privacy request: user not found",
         lambda w: w.shop.post("/v2/fulfillment/users/nobody/privacy_request"), 400,
         connect("User Not Found", key="user_id")),
    Case("create user: first_name missing",
         lambda w: w.shop.post("/v2/fulfillment/users", {"user_id": "u1"}), 400,
         connect("can't be blank", key="first_name")),
    Case("create user: forbidden character in a name",
         lambda w: w.shop.create_user("u1", first_name="Jo<hn>"), 400,
         connect("is invalid", key="first_name")),
    Case("create user: phone not E.164",
         lambda w: w.shop.create_user("u1", phone_number="800-555-0100"), 400,
         connect("is invalid", key="phone_number")),
    Case("create user: locale not a language tag",
         lambda w: w.shop.create_user("u1", locale="english please"), 400,
         connect("is invalid", key="locale")),
    Case("create user: wrong type",
         lambda w: w.shop.create_user("u1", first_name=42), 400,
         connect("is invalid", key="first_name")),
    Case("create user: several errors, in field order",
         lambda w: w.shop.post("/v2/fulfillment/users",
                               {"last_name": "a:b", "locale": "??", "phone_number": "12"}),
         400, multiple(
             connect("can't be blank", key="user_id"),
             connect("can't be blank", key="first_name"),
             connect("is invalid", key="last_name"),
             connect("is invalid", key="phone_number"),
             connect("is invalid", key="locale"))),
    Case("create user: malformed JSON", _raw("POST", "/v2/fulfillment/users", b"{'a': 1}"), 400,
         connect("Malformed JSON body", code=4001)),
    # --- sandbox --------------------------------------------------------------------------------
    Case("sandbox: email taken",
         lambda w: (w.shop.instacart_user("a@example.com"),
                    w.shop.post(SANDBOX, {"email": "A@example.com", "phone": "1",
                                          "password": "p"}))[1],
         400, connect("An account already exists with this email", key="email")),
    Case("sandbox: email taken through another retailer",
         lambda w: (w.other.instacart_user("a@example.com"),
                    w.shop.post(SANDBOX, {"email": "a@example.com", "phone": "1",
                                          "password": "p"}))[1],
         400, connect("An account already exists with this email", key="email")),
    Case("sandbox: create with nothing", lambda w: w.shop.post(SANDBOX, {}), 400, multiple(
        connect("can't be blank", key="email"), connect("can't be blank", key="phone"),
        connect("can't be blank", key="password"))),
    Case("sandbox: authorize a non-numeric id", lambda w: w.shop.authorize("abc"), 400,
         connect("Invalid user_id", key="user_id")),
    Case("sandbox: authorize a negative id", lambda w: w.shop.authorize("-1"), 400,
         connect("Invalid user_id", key="user_id")),
    Case("sandbox: authorize an id past 64 bits", lambda w: w.shop.authorize("9" * 30), 400,
         connect("Invalid user_id", key="user_id")),
    Case("sandbox: authorize an unknown id", lambda w: w.shop.authorize(424242), 400,
         connect("Invalid user_id", key="user_id")),
    Case("sandbox: authorize to an unregistered redirect URI",
         lambda w: w.shop.authorize(w.shop.instacart_user("s@example.com"),
                                    redirect_uri="https://evil.example/cb"),
         400, connect("is invalid", key="redirect_uri")),
    Case("sandbox: authorize without a scope",
         lambda w: w.shop.authorize(w.shop.instacart_user("s@example.com"), scope=""),
         400, connect("can't be blank", key="scope")),
    Case("sandbox: authorize a scope the client lacks",
         lambda w: w.shop.authorize(w.shop.instacart_user("s@example.com"),
                                    scope="connect:fulfillment"),
         400, connect("is invalid", key="scope")),
    Case("sandbox: authorize with an unknown PKCE method",
         lambda w: w.shop.authorize(w.shop.instacart_user("s@example.com"),
                                    code_challenge="c" * 43, code_challenge_method="MD5"),
         400, connect("is invalid", key="code_challenge_method")),
    Case("sandbox: authorize with a malformed PKCE challenge",
         lambda w: w.shop.authorize(w.shop.instacart_user("s@example.com"),
                                    code_challenge="short"),
         400, connect("is invalid", key="code_challenge")),
    # --- bearer tokens on resource endpoints -----------------------------------------------------
    Case("bearer: none sent", lambda w: w.http.get("/v2/fulfillment/users/u1"), 401,
         oauth("invalid_token", "The access token is invalid"),
         {"www-authenticate": 'Bearer realm="connect"'}),
    Case("bearer: unknown token", lambda w: w.shop.get("/v2/fulfillment/users/u1", token="zz"),
         401, oauth("invalid_token", "The access token is invalid"),
         {"www-authenticate": challenge("The access token is invalid")}),
    Case("bearer: expired", _expired_bearer, 401,
         oauth("invalid_token", "The access token expired"),
         {"www-authenticate": challenge("The access token expired")}),
    Case("bearer: revoked", _revoked_bearer, 401,
         oauth("invalid_token", "The access token was revoked"),
         {"www-authenticate": challenge("The access token was revoked")}),
    Case("bearer: a linking token", _linking_token_as_bearer, 403,
         oauth("insufficient_scope", INSUFFICIENT),
         {"www-authenticate": challenge(INSUFFICIENT, "insufficient_scope")}),
    Case("bearer: a linking token on the sandbox",
         lambda w: w.shop.post(SANDBOX, {}, token=w.shop.linking_token(
             w.shop.instacart_user("s@example.com"))), 403,
         oauth("insufficient_scope", INSUFFICIENT),
         {"www-authenticate": challenge(INSUFFICIENT, "insufficient_scope")}),
    Case("bearer: checked before the user", lambda w: w.http.post("/v2/fulfillment/users/x/link"),
         401, oauth("invalid_token", "The access token is invalid"),
         {"www-authenticate": 'Bearer realm="connect"'}),
    # --- POST /v2/oauth/token -------------------------------------------------------------------
    Case("token: credentials in the query",
         lambda w: w.http.post("/v2/oauth/token", params={"client_id": w.shop.client_id},
                               json={"client_id": w.shop.client_id,
                                     "client_secret": w.shop.client_secret,
                                     "grant_type": "client_credentials"}),
         403, oauth("query_params_forbidden", QUERY_FORBIDDEN), {"cache-control": "no-store"}),
    Case("token: secret alone in the query",
         lambda w: w.http.post("/v2/oauth/token?client_secret=x&grant_type=client_credentials"),
         403, oauth("query_params_forbidden", QUERY_FORBIDDEN)),
    Case("token: no grant_type",
         lambda w: w.shop.token_request(), 400, oauth("invalid_request", INVALID_REQUEST)),
    Case("token: unsupported grant_type",
         lambda w: w.shop.token_request(grant_type="password"), 400,
         oauth("unsupported_grant_type",
               "The authorization grant type is not supported by the authorization server.")),
    Case("token: unknown client",
         lambda w: w.http.post("/v2/oauth/token", json={
             "client_id": "nope", "client_secret": "x", "grant_type": "client_credentials"}),
         401, oauth("invalid_client", INVALID_CLIENT)),
    Case("token: wrong secret",
         lambda w: w.http.post("/v2/oauth/token", json={
             "client_id": w.shop.client_id, "client_secret": w.other.client_secret,
             "grant_type": "client_credentials"}),
         401, oauth("invalid_client", INVALID_CLIENT)),
    Case("token: no client authentication",
         lambda w: w.http.post("/v2/oauth/token", json={"grant_type": "client_credentials"}),
         401, oauth("invalid_client", INVALID_CLIENT)),
    Case("token: wrong secret over HTTP Basic",
         lambda w: w.http.post("/v2/oauth/token", data={"grant_type": "client_credentials"},
                               auth=(w.shop.client_id, "wrong")),
         401, oauth("invalid_client", INVALID_CLIENT),
         {"www-authenticate": 'Basic realm="connect"'}),
    Case("token: HTTP Basic and a secret in the body",
         lambda w: w.http.post("/v2/oauth/token", data={
             "grant_type": "client_credentials", "client_secret": w.shop.client_secret},
             auth=(w.shop.client_id, w.shop.client_secret)),
         400, oauth("invalid_request", INVALID_REQUEST)),
    Case("token: a parameter twice",
         lambda w: w.http.post(
             "/v2/oauth/token",
             content=f"grant_type=client_credentials&grant_type=client_credentials&client_id="
                     f"{w.shop.client_id}&client_secret={w.shop.client_secret}",
             headers={"Content-Type": "application/x-www-form-urlencoded"}),
         400, oauth("invalid_request", INVALID_REQUEST)),
    Case("token: unreadable JSON",
         lambda w: w.http.post("/v2/oauth/token", content=b'{"grant_type":',
                               headers={"Content-Type": "application/json"}),
         400, oauth("invalid_request", INVALID_REQUEST)),
    Case("token: a JSON number for a parameter",
         lambda w: w.shop.token_request(grant_type="client_credentials", scope=5), 400,
         oauth("invalid_request", INVALID_REQUEST)),
    Case("token: a grant the client may not use", _grant_the_client_lacks, 400,
         oauth("unauthorized_client",
               "The client is not authorized to perform this request using this method.")),
    Case("token: a scope the client lacks",
         lambda w: w.shop.token_request(grant_type="client_credentials",
                                        scope="connect:fulfillment,connect:recommendations"),
         400, oauth("invalid_scope", "The requested scope is invalid, unknown, or malformed.")),
    Case("exchange: no code", lambda w: w.shop.token_request(
        grant_type="authorization_code", redirect_uri=w.shop.redirect_uri), 400,
         oauth("invalid_request", INVALID_REQUEST)),
    Case("exchange: no redirect_uri",
         lambda w: w.shop.token_request(grant_type="authorization_code", code="abc"), 400,
         oauth("invalid_request", INVALID_REQUEST)),
    Case("exchange: unknown code", lambda w: w.shop.exchange("not-a-code"), 400,
         oauth("invalid_grant", INVALID_GRANT)),
    Case("exchange: code used twice", _reused_code, 400, oauth("invalid_grant", INVALID_GRANT)),
    Case("exchange: expired code", _expired_code, 400, oauth("invalid_grant", INVALID_GRANT)),
    Case("exchange: another registered redirect URI",
         lambda w: _token_with_code(w, redirect_uri=w.shop.redirect_uris[1]), 400,
         oauth("invalid_grant", INVALID_GRANT)),
    Case("exchange: redirect URI differs by a slash",
         lambda w: _token_with_code(w, redirect_uri=w.shop.redirect_uri + "/"), 400,
         oauth("invalid_grant", INVALID_GRANT)),
    Case("exchange: another client's code",
         lambda w: w.other.exchange(w.shop.code(w.shop.instacart_user("s@example.com")),
                                    redirect_uri=w.shop.redirect_uri), 400,
         oauth("invalid_grant", INVALID_GRANT)),
    Case("exchange: PKCE verifier missing", lambda w: _pkce_code(w, None), 400,
         oauth("invalid_grant", INVALID_GRANT)),
    Case("exchange: PKCE verifier wrong", lambda w: _pkce_code(w, "w" * 43), 400,
         oauth("invalid_grant", INVALID_GRANT)),
    # --- POST /v2/oauth/token/revoke ------------------------------------------------------------
    Case("revoke: another client's token",
         lambda w: w.http.post("/v2/oauth/token/revoke", json={
             "client_id": w.other.client_id, "client_secret": w.other.client_secret,
             "token": w.shop.token}),
         403, oauth("unauthorized_client", "You are not authorized to revoke this token")),
    Case("revoke: credentials in the query",
         lambda w: w.http.post("/v2/oauth/token/revoke",
                               params={"client_secret": w.shop.client_secret},
                               json={"client_id": w.shop.client_id,
                                     "client_secret": w.shop.client_secret, "token": "x"}),
         403, oauth("query_params_forbidden", QUERY_FORBIDDEN)),
    Case("revoke: wrong secret",
         lambda w: w.http.post("/v2/oauth/token/revoke", json={
             "client_id": w.shop.client_id, "client_secret": "wrong", "token": "x"}),
         401, oauth("invalid_client", INVALID_CLIENT)),
    Case("revoke: no token",
         lambda w: w.http.post("/v2/oauth/token/revoke", json={
             "client_id": w.shop.client_id, "client_secret": w.shop.client_secret}),
         400, oauth("invalid_request", INVALID_REQUEST)),
    # --- general HTTP ---------------------------------------------------------------------------
    Case("unknown route", lambda w: w.http.get("/v2/fulfillment/stores"), 404,
         connect("Not Found", code=4000)),
    Case("unknown route under a user", lambda w: w.shop.get("/v2/fulfillment/users/u1/orders"),
         404, connect("Not Found", code=4000)),
    Case("wrong method", lambda w: w.http.delete(LINK), 405,
         connect("Method Not Allowed", code=4001), {"allow": "GET, HEAD, POST"}),
    Case("wrong method on the token endpoint", lambda w: w.http.get("/v2/oauth/token"), 405,
         connect("Method Not Allowed", code=4001), {"allow": "POST"}),
    Case("any unexpected failure", _database_broken_midway, 500, connect(
        "Sorry, an unexpected error occurred. Our team has been notified. Please try again "
        "later.", code=5000)),
    Case("body over 1 MiB",
         _raw("POST", "/v2/fulfillment/users", b'{"user_id": "' + b"x" * (1 << 20) + b'"}'),
         413, connect("Request Entity Too Large", code=4001)),
    Case("body over 1 MiB, streamed without a length",
         lambda w: w.http.post("/v2/fulfillment/users", headers=w.shop.headers(),
                               content=iter([b"[" + b"1," * 400_000] * 2)),
         413, connect("Request Entity Too Large", code=4001)),
    Case("token body over 1 MiB",
         lambda w: w.http.post("/v2/oauth/token", content=b"a" * (1 << 20 + 1)),
         413, connect("Request Entity Too Large", code=4001)),
]


@pytest.fixture
def emulator(app_emulator: Emulator) -> Emulator:
    """The contract table runs in process: the same app and database, no socket."""
    return app_emulator


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_error_row(case: Case, emulator: Emulator, shop: Retailer, other_shop: Retailer) -> None:
    response = case.request(World(emulator, shop, other_shop))
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == case.body
    for name, value in case.headers.items():
        assert response.headers.get(name) == value
    contract.check(response)  # a status its operation documents, a body its schema allows
    # The vocabulary round-trips: the response rebuilds the error, whole wire form included.
    rebuilt = errors.from_response(response.status_code, response.json(), response.headers)
    assert rebuilt is not None and rebuilt.status == response.status_code
    assert not type(rebuilt).__name__.startswith("Unknown"), rebuilt
    assert rebuilt.body() == case.body
    for name, value in rebuilt.headers().items():
        assert response.headers.get(name) == value, name


def test_every_wire_error_class_has_a_row() -> None:
    """The table covers the vocabulary: each message and OAuth slug appears in some row."""
    rows = str([case.body for case in CASES])
    # The table runs with limits off (test_rate_limits has the 429); 503 needs an outage
    # (test_resilience); 408 a slow client (test_timeouts); 431 and the Host 400 are the HTTP
    # protocol's, on raw sockets (test_http_framing).
    # The admin plane's refusals are test_emulator_controls's (the emulator's, not the API's).
    untriggerable = {errors.RateLimited, errors.ServiceUnavailable, errors.RequestTimeout,
                     errors.HeaderFieldsTooLarge, errors.BadRequest, *errors.ADMIN_ERRORS}
    for cls in errors.CONNECT_ERRORS.values():
        if cls not in untriggerable:
            assert repr(cls.message) in rows, cls
    for cls in errors.OAUTH_ERRORS.values():
        if cls not in untriggerable:
            assert repr(cls.description) in rows, cls


@pytest.mark.parametrize("raised", [
    errors.ExpiredToken(), errors.RevokedToken(), errors.InvalidToken(token_sent=False),
    errors.InvalidClient(basic_challenge=True), errors.RateLimited(7),
    errors.ServiceUnavailable(3), errors.MethodNotAllowed("GET, HEAD"), errors.Blank("email"),
    errors.MultipleErrors([errors.Blank("user_id"), errors.Invalid("locale")]),
])
def test_a_response_rebuilds_the_class_that_was_raised(raised: errors.ConnectLinkError) -> None:
    rebuilt = errors.from_response(raised.status, raised.body(), raised.headers())
    assert type(rebuilt) is type(raised)
    assert rebuilt is not None and rebuilt.body() == raised.body()
    assert rebuilt.headers() == raised.headers()


def test_an_unknown_envelope_is_kept_whole() -> None:
    body = {"error": {"message": "Something new", "code": 1234}, "meta": {"key": "x"}}
    rebuilt = errors.from_response(422, body, {})
    assert isinstance(rebuilt, errors.ConnectError) and rebuilt.status == 422
    assert rebuilt.body() == body
    assert errors.from_response(200, {"success": True}) is None
