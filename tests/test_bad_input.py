"""Bad input gets the documented envelope, never a 500, changes nothing; the server serves on."""

from __future__ import annotations

import itertools

import pytest

from support import Emulator, Retailer, engine_of, query_sql

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


CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain"]


def _snapshot(database_url: str) -> dict[str, list[str]]:
    """Every row of every table the database itself lists, sorted, one ``repr`` a row: the
    tables come from the catalogue, so a table added by a later migration is counted too."""
    if engine_of(database_url) == "sqlite":
        listing = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        listing = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    tables = sorted(str(name) for (name,) in query_sql(database_url, listing))
    return {
        table: sorted(repr(row) for row in query_sql(database_url, f'SELECT * FROM "{table}"'))
        for table in tables
    }


def test_rejected_requests_change_nothing(emulator: Emulator, shop: Retailer) -> None:
    """Every garbage body, in every content type, to every endpoint that writes, with a real
    Connect user and a real sandbox account in the path so the requests get past the lookup to
    the body checks: each is a 4xx, and no table gains, loses or changes a row.

    Nothing of the state is excluded: the only table a rejected request may legitimately touch
    is ``login_throttles``, and only the Login pages (not hit here) write it. The emulator's
    request journal is no state of the API: it records each of these requests, and is
    compared apart (docs/emulator.md). The bearer token, the
    user and the account are made before the first snapshot, since making them writes rows.

    ``privacy_request`` has no fields (connect-api.md 7.3), so any JSON body sent for a real
    user (``null``, ``[]``, nothing at all) is a valid deletion request that must write; the
    garbage goes to an unknown user instead (``test_privacy_request_reads_its_body`` covers a
    real one).
    """
    headers = shop.headers()  # mints the bearer token now, before the first snapshot
    assert shop.create_user("u1").status_code == 200
    account = shop.instacart_user("s@example.com")
    writers = [
        "/v2/oauth/token",
        "/v2/oauth/token/revoke",
        "/v2/fulfillment/users",
        "/v2/fulfillment/users/u1/link",
        "/v2/fulfillment/users/nobody/privacy_request",
        "/v2/fulfillment_sandbox/instacart_users",
        f"/v2/fulfillment_sandbox/instacart_users/{account}/authorize",
    ]
    journal = f"/_connectlink/retailers/{shop.credentials['retailer_id']}/journal"
    assert emulator.http.get(journal).status_code == 200  # every answer so far written out
    before = _snapshot(emulator.database_url)
    [(journaled_before,)] = query_sql(emulator.database_url,
                                      "SELECT coalesce(max(id), 0) FROM emulator_journal")
    assert before["tokens"] and before["connect_users"] and before["instacart_accounts"]

    accepted: list[tuple[str, bytes, str, int]] = []
    for path, body, content_type in itertools.product(writers, BODIES, CONTENT_TYPES):
        response = emulator.http.post(path, content=body,
                                      headers={**headers, "Content-Type": content_type})
        if not 400 <= response.status_code < 500:
            accepted.append((path, body[:60], content_type, response.status_code))
    assert accepted == []

    assert emulator.http.get(journal).status_code == 200
    after = _snapshot(emulator.database_url)
    for table in ("emulator_journal", "emulator_barrier", "emulator_workers"):
        after.pop(table), before.pop(table)  # the journal and its writers' bookkeeping
    statuses = {status for (status,) in query_sql(emulator.database_url,
                                                  "SELECT status FROM emulator_journal "
                                                  f"WHERE id > {journaled_before}")}
    assert statuses and all(400 <= status < 500 for status in statuses)
    assert {table: len(rows) for table, rows in after.items()} == {
        table: len(rows) for table, rows in before.items()}
    assert after == before  # not even an update: no code used up, no token revoked


def test_privacy_request_reads_its_body(emulator: Emulator, shop: Retailer) -> None:
    """Not JSON is "Malformed JSON body" on every Connect endpoint, this one too."""
    shop.create_user("u1")
    response = emulator.http.post("/v2/fulfillment/users/u1/privacy_request", content=b"{",
                                  headers={**shop.headers(), "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"error": {"message": "Malformed JSON body", "code": 4001},
                               "meta": {}}
    assert shop.membership("u1").json()["error"]["message"] == "User Not Linked"  # still active
