"""The emulator's control plane over HTTP (docs/emulator.md), on both engines: virtual clocks,
faults, the journal, token lifecycles, memberships, snapshots, and the admin plane's guard."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import httpx
import pytest

from conftest import START, make_emulator, upgraded
from connectlink.linking.links import iso_utc as iso
from connectlink.settings import Settings
from connectlink.testing import InProcessEmulator
from support import Emulator, Retailer, ServeProcess, run_sync
from test_login_pages import Shopper, returned

LINK = "POST /v2/fulfillment/users/{user_id}/link"
TOKEN = "POST /v2/oauth/token"
DAY = 86_400


def fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def rid(shop: Retailer) -> int:
    return int(shop.credentials["retailer_id"])


class Admin:
    """The admin plane, from the loopback interface."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def clock(self, shop: Retailer, **change: Any) -> httpx.Response:
        path = f"/_connectlink/retailers/{rid(shop)}/clock"
        return self.http.post(path, json=change) if change else self.http.get(path)

    def fault(self, shop: Retailer, endpoint: str, fault: str, **options: Any) -> int:
        answer = self.http.post("/_connectlink/faults", json={
            "retailer_id": rid(shop), "endpoint": endpoint, "fault": fault, **options})
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])

    def journal(self, shop: Retailer, **query: Any) -> list[dict[str, Any]]:
        answer = self.http.get(f"/_connectlink/retailers/{rid(shop)}/journal", params=query)
        assert answer.status_code == 200, answer.text
        entries: list[dict[str, Any]] = answer.json()["entries"]
        return entries

    def lifecycle(self, secret: str) -> httpx.Response:
        return self.http.get(f"/_connectlink/tokens/{fingerprint(secret)}")


@pytest.fixture
def admin(emulator: Emulator) -> Admin:
    return Admin(emulator.http)


def linked_pair(shop: Retailer, user_id: str, email: str) -> str:
    """A Connect user and a fresh linking token for a new Instacart account."""
    assert shop.create_user(user_id).status_code == 200
    return shop.linking_token(shop.instacart_user(email))


# --- the clock ---------------------------------------------------------------------------------


def test_a_clock_reads_advances_freezes_sets_and_resets(admin: Admin, shop: Retailer) -> None:
    assert admin.clock(shop).json() == {"now": iso(START), "offset_seconds": 0.0,
                                        "frozen": False}
    moved = admin.clock(shop, advance_seconds=90_000).json()
    assert moved == {"now": iso(START + 90_000), "offset_seconds": 90_000.0, "frozen": False}
    assert admin.clock(shop, freeze=True).json()["frozen"] is True
    assert admin.clock(shop, advance_seconds=60).json()["now"] == iso(START + 90_060)
    assert admin.clock(shop, set="2030-01-01T00:00:00Z").json()["now"] == "2030-01-01T00:00:00Z"
    assert admin.clock(shop, freeze=False).json()["frozen"] is False
    assert admin.clock(shop, reset=True).json() == {"now": iso(START), "offset_seconds": 0.0,
                                                    "frozen": False}


def test_a_frozen_clock_stands_still_while_the_server_clock_runs(
    emulator: Emulator, admin: Admin, shop: Retailer
) -> None:
    admin.clock(shop, freeze=True)
    emulator.clock.advance(3600)
    assert admin.clock(shop).json()["now"] == iso(START)
    assert admin.clock(shop).json()["offset_seconds"] == -3600.0


@pytest.mark.parametrize("body", [{}, {"advance_seconds": 1, "freeze": True},
                                  {"advance_seconds": "soon"}, {"set": "tomorrow"},
                                  {"rewind": 5}])
def test_a_clock_change_must_be_exactly_one_valid_change(
    admin: Admin, shop: Retailer, body: dict[str, Any]
) -> None:
    answer = admin.clock(shop, **body) if body else admin.http.post(
        f"/_connectlink/retailers/{rid(shop)}/clock", json={})
    assert answer.status_code == 400
    assert answer.json()["error"] == {"message": "is invalid", "code": 1001}
    assert admin.clock(shop).json()["offset_seconds"] == 0.0


def test_an_unknown_retailer_has_no_clock(admin: Admin) -> None:
    for retailer in ("999", "x", "%00"):
        answer = admin.http.get(f"/_connectlink/retailers/{retailer}/clock")
        assert answer.status_code == 404
        assert answer.json() == {"error": {"message": "Retailer Not Found", "code": 1001},
                                 "meta": {"key": "retailer_id"}}


def test_a_linking_token_expires_by_its_retailers_clock_only(
    admin: Admin, shop: Retailer, other_shop: Retailer
) -> None:
    token = linked_pair(shop, "u1", "a@example.com")
    other = linked_pair(other_shop, "u1", "b@example.com")
    admin.clock(shop, advance_seconds=25 * 3600)
    shop.forget_token()  # the bearer expired with it: a new one, by the same clock
    refused = shop.link("u1", token)
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == "Linking token is invalid"
    assert other_shop.link("u1", other).json() == {"success": True}  # its clock never moved


def test_a_bearer_token_expires_by_its_retailers_clock(admin: Admin, shop: Retailer) -> None:
    assert shop.create_user("u1").status_code == 200
    admin.clock(shop, advance_seconds=DAY + 1)
    answer = shop.get("/v2/fulfillment/users/u1")
    assert answer.status_code == 401 and "expired" in answer.headers["www-authenticate"]


def test_memberships_and_privacy_retention_follow_the_retailers_clock(
    admin: Admin, shop: Retailer
) -> None:
    token = linked_pair(shop, "u1", "a@example.com")
    assert shop.link("u1", token).status_code == 200
    assert shop.membership("u1").json()["instacartplus_member"] is True
    admin.clock(shop, advance_seconds=400 * DAY)
    shop.forget_token()
    assert shop.membership("u1").json()["instacartplus_member"] is False  # lapsed by then
    assert shop.post("/v2/fulfillment/users/u1/privacy_request").status_code == 200
    admin.clock(shop, advance_seconds=31 * DAY)
    shop.forget_token()
    assert shop.get("/v2/fulfillment/users/u1").json()["error"]["message"] == "User Not Found"


# --- faults ------------------------------------------------------------------------------------


def test_503_twice_then_the_link_works_and_consumed_nothing_meanwhile(
    admin: Admin, shop: Retailer
) -> None:
    token = linked_pair(shop, "u1", "a@example.com")
    admin.fault(shop, LINK, "503", times=2, retry_after=3)
    for _ in range(2):
        answer = shop.link("u1", token)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "3"
        assert answer.json()["error"]["code"] == 2003
    assert shop.link("u1", token).json() == {"success": True}
    [rule] = admin.http.get("/_connectlink/faults").json()["faults"]
    assert (rule["matched"], rule["fired"], rule["times"]) == (2, 2, 2)  # spent: seen no more


@pytest.mark.parametrize(("fault", "status", "code"), [("429", 429, 2003), ("500", 500, 5000)])
def test_429_and_500_have_their_envelopes(admin: Admin, shop: Retailer, fault: str,
                                          status: int, code: int) -> None:
    assert shop.create_user("u1").status_code == 200
    admin.fault(shop, "GET /v2/fulfillment/users/{user_id}", fault, times=1, retry_after=7)
    answer = shop.get("/v2/fulfillment/users/u1")
    assert answer.status_code == status and answer.json()["error"]["code"] == code
    if fault == "429":
        assert answer.headers["retry-after"] == "7"
    assert shop.get("/v2/fulfillment/users/u1").status_code == 200


def test_latency_delays_and_drop_closes_the_connection(admin: Admin, shop: Retailer) -> None:
    assert shop.create_user("u1").status_code == 200
    admin.fault(shop, "GET /v2/fulfillment/users/{user_id}", "latency", times=1,
                latency_ms=300)
    started = time.monotonic()
    assert shop.get("/v2/fulfillment/users/u1").status_code == 200
    assert time.monotonic() - started >= 0.3
    admin.fault(shop, "GET /v2/fulfillment/users/{user_id}", "drop", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        shop.get("/v2/fulfillment/users/u1")
    assert shop.get("/v2/fulfillment/users/u1").status_code == 200
    assert admin.journal(shop, operation="get_user")[1]["status"] == 0  # no answer, journaled


def test_invalid_grant_leaves_the_code_for_the_next_exchange(admin: Admin,
                                                             shop: Retailer) -> None:
    code = shop.code(shop.instacart_user("a@example.com"))
    admin.fault(shop, TOKEN, "invalid_grant", times=1)
    assert shop.access_token()  # client_credentials is no exchange: untouched
    refused = shop.exchange(code)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert shop.exchange(code).status_code == 200


def test_linking_token_invalid_leaves_the_token_unused(admin: Admin, shop: Retailer) -> None:
    token = linked_pair(shop, "u1", "a@example.com")
    admin.fault(shop, LINK, "linking_token_invalid", times=1)
    assert shop.link("u1", token).json()["error"]["message"] == "Linking token is invalid"
    assert shop.link("u1", token).json() == {"success": True}


def test_expired_token_issues_a_token_that_is_already_expired(admin: Admin,
                                                              shop: Retailer) -> None:
    admin.fault(shop, TOKEN, "expired_token", times=1)
    issued = shop.token_request(grant_type="client_credentials").json()
    assert issued["expires_in"] == 0
    answer = shop.get("/v2/fulfillment/users/u1", token=issued["access_token"])
    assert answer.status_code == 401 and "expired" in answer.headers["www-authenticate"]


def test_deny_answers_the_consent_as_the_shoppers_deny(
    emulator: Emulator, admin: Admin, shop: Retailer
) -> None:
    shop.instacart_user("s@example.com")
    admin.fault(shop, "POST /oauth/authorize", "deny", times=1)
    shopper = Shopper(emulator, shop)
    denied = returned(shopper.consent())
    assert denied["error"] == ["access_denied"] and "code" not in denied
    shopper.open()  # signed in still: the consent page again
    assert "code" in returned(shopper.decide("allow"))  # the fault fired once


def test_a_rule_concerns_its_retailer_or_client_only(
    admin: Admin, shop: Retailer, other_shop: Retailer
) -> None:
    admin.fault(other_shop, TOKEN, "503")
    assert shop.token_request(grant_type="client_credentials").status_code == 200
    assert other_shop.token_request(grant_type="client_credentials").status_code == 503
    admin.http.delete("/_connectlink/faults")
    admin.http.post("/_connectlink/faults", json={
        "client_id": shop.client_id, "endpoint": "POST /v2/fulfillment/users", "fault": "500"})
    assert shop.create_user("u1").status_code == 500  # a bearer's client, found by its token
    assert other_shop.create_user("u1").status_code == 200


def test_every_nth_and_a_seeded_probability_repeat_exactly(admin: Admin,
                                                           shop: Retailer) -> None:
    admin.fault(shop, TOKEN, "503", every=3)
    statuses = [shop.token_request(grant_type="client_credentials").status_code
                for _ in range(6)]
    assert statuses == [200, 200, 503, 200, 200, 503]

    def run() -> list[int]:
        admin.http.delete("/_connectlink/faults")
        admin.fault(shop, TOKEN, "503", probability=0.5, seed=42)
        return [shop.token_request(grant_type="client_credentials").status_code
                for _ in range(12)]

    first = run()
    assert first == run() and 200 in first and 503 in first


def test_faults_are_listed_deleted_and_cleared(admin: Admin, shop: Retailer) -> None:
    one = admin.fault(shop, LINK, "503")
    admin.fault(shop, TOKEN, "latency", latency_ms=5)
    listed = admin.http.get("/_connectlink/faults").json()["faults"]
    assert listed[0]["id"] == one
    assert listed[1] | {"created_at": "-"} == {
        "id": listed[1]["id"], "retailer_id": rid(shop), "endpoint": TOKEN, "fault": "latency",
        "every": 1, "probability": 1.0, "seed": 0, "retry_after": 1, "latency_ms": 5,
        "matched": 0, "fired": 0, "created_at": "-"}
    assert admin.http.delete(f"/_connectlink/faults/{one}").json() == {"success": True}
    assert admin.http.delete(f"/_connectlink/faults/{one}").json() == {
        "error": {"message": "Fault Not Found", "code": 1001}, "meta": {"key": "id"}}
    assert admin.http.delete("/_connectlink/faults").json() == {"success": True, "deleted": 1}
    assert admin.http.get("/_connectlink/faults").json() == {"faults": []}


@pytest.mark.parametrize(("body", "key"), [
    ({"endpoint": "GET /nowhere", "fault": "503"}, "endpoint"),
    ({"endpoint": "GET /v2/fulfillment/users/{user_id}", "fault": "deny"}, "fault"),
    ({"endpoint": TOKEN, "fault": "teapot"}, "fault"),
    ({"endpoint": TOKEN, "fault": "503", "times": 0}, "times"),
    ({"endpoint": TOKEN, "fault": "503", "probability": 2}, "probability"),
    ({"endpoint": TOKEN, "fault": "503", "colour": "red"}, "colour"),
    ({"fault": "503"}, "endpoint"),
])
def test_a_rule_that_cannot_be_is_refused_with_its_key(
    admin: Admin, shop: Retailer, body: dict[str, Any], key: str
) -> None:
    answer = admin.http.post("/_connectlink/faults", json={"retailer_id": rid(shop), **body})
    assert answer.status_code == 400, answer.text
    assert answer.json()["meta"] == {"key": key}
    assert admin.http.get("/_connectlink/faults").json() == {"faults": []}


# --- the journal and token lifecycles ----------------------------------------------------------


def test_the_journal_has_each_request_newest_first_with_secrets_as_fingerprints(
    admin: Admin, shop: Retailer
) -> None:
    token = linked_pair(shop, "u1", "a@example.com")
    assert shop.link("u1", token).status_code == 200
    assert shop.link("u1", token).status_code == 400
    entries = admin.journal(shop)
    replay, link = entries[0], entries[1]
    assert (replay["method"], replay["path"], replay["status"]) == (
        "POST", "/v2/fulfillment/users/u1/link", 400)
    assert (replay["error_code"], replay["error_key"]) == ("1001", "linking_token")
    assert replay["secrets"] == {"linking_token": fingerprint(token)}
    assert replay["credential"] == fingerprint(shop.token)
    assert link["status"] == 200 and "error_code" not in link
    assert entries[0]["id"] > entries[1]["id"]
    exchange = next(e for e in entries if e["secrets"].get("access_token") == fingerprint(token))
    assert exchange["operation"] == "issue_token" and exchange["client_id"] == shop.client_id
    written = " ".join(str(entry) for entry in entries)
    assert token not in written and shop.token not in written and shop.client_secret not in written


def test_the_journal_filters_and_is_bounded(database_url: str) -> None:
    for emulator in make_emulator(database_url, journal_size=5):
        admin, shop = Admin(emulator.http), emulator.retailer()
        for n in range(8):
            shop.get(f"/v2/fulfillment/users/nobody{n}")
        entries = admin.journal(shop)
        assert len(entries) == 5 and entries[0]["path"] == "/v2/fulfillment/users/nobody7"
        assert [e["path"] for e in admin.journal(shop, path="/v2/fulfillment/users/nobody6")] \
            == ["/v2/fulfillment/users/nobody6"]
        assert len(admin.journal(shop, status=400, limit=2)) == 2
        assert admin.journal(shop, status=200) == []
        assert admin.journal(shop, since=iso(START + 1)) == []
        assert len(admin.journal(shop, until=iso(START))) == 5


def test_a_wrong_secret_is_journaled_under_its_client(admin: Admin, shop: Retailer) -> None:
    assert shop.token_request(grant_type="client_credentials",
                              client_secret="wrong").status_code == 401
    [entry] = admin.journal(shop)
    assert entry["error_code"] == "invalid_client" and "wrong" not in str(entry)


def test_a_linking_token_was_used_once_by_the_link_request(
    admin: Admin, shop: Retailer
) -> None:
    token = linked_pair(shop, "u1", "a@example.com")
    link = shop.http.post("/v2/fulfillment/users/u1/link", json={"linking_token": token},
                          headers={**shop.headers(), "X-Request-Id": "the-link"})
    assert link.status_code == 200
    shop.link("u1", token)  # a replay: refused, and no second use
    life = admin.lifecycle(token).json()
    assert life["kind"] == "linking_token" and life["retailer_id"] == rid(shop)
    assert [(e["event"], e.get("request_id")) for e in life["events"]] == [
        ("issued", None), ("used", "the-link")]
    admin.clock(shop, advance_seconds=DAY)
    assert [e["event"] for e in admin.lifecycle(token).json()["events"]] == [
        "issued", "used", "expired"]


def test_an_access_tokens_uses_and_its_revocation(admin: Admin, shop: Retailer) -> None:
    shop.get("/v2/fulfillment/users/u1")
    shop.get("/v2/fulfillment/users/u2")
    revoke = shop.http.post("/v2/oauth/token/revoke", json={
        "client_id": shop.client_id, "client_secret": shop.client_secret, "token": shop.token})
    assert revoke.status_code == 200
    events = [e["event"] for e in admin.lifecycle(shop.token).json()["events"]]
    assert events == ["issued", "used", "used", "revoked"]
    assert admin.lifecycle("no such token").json() == {
        "error": {"message": "Token Not Found", "code": 1001}, "meta": {"key": "fingerprint"}}
    assert admin.http.get("/_connectlink/tokens/xyz").status_code == 404


def test_a_codes_life(admin: Admin, shop: Retailer) -> None:
    code = shop.code(shop.instacart_user("a@example.com"))
    assert [e["event"] for e in admin.lifecycle(code).json()["events"]] == ["issued"]
    assert shop.exchange(code).status_code == 200
    life = admin.lifecycle(code).json()
    assert life["kind"] == "authorization_code"
    assert [e["event"] for e in life["events"]] == ["issued", "used"]


# --- memberships -------------------------------------------------------------------------------


def test_a_membership_starts_extends_and_lapses(admin: Admin, shop: Retailer) -> None:
    account = shop.instacart_user("a@example.com", plus=False)
    assert shop.create_user("u1").status_code == 200
    assert shop.link("u1", shop.linking_token(account)).status_code == 200
    path = f"/_connectlink/instacart_users/{account}/membership"
    assert admin.http.get(path).json() == {"instacart_user_id": account, "member": False}
    started = admin.http.post(path, json={"start_days": 30}).json()
    assert started == {"instacart_user_id": account, "member": True,
                       "expires_at": iso(START + 30 * DAY)}
    assert shop.membership("u1").json()["instacartplus_member"] is True
    extended = admin.http.post(path, json={"extend_days": 10}).json()
    assert extended["expires_at"] == iso(START + 40 * DAY)
    assert admin.http.post(path, json={"lapse": True}).json()["member"] is False
    assert shop.membership("u1").json()["instacartplus_member"] is False
    by_clock = admin.http.post(path, json={"start_days": 1, "retailer_id": rid(shop)})
    assert by_clock.json()["expires_at"] == iso(START + DAY)
    assert admin.http.get("/_connectlink/instacart_users/999999/membership").json() == {
        "error": {"message": "Instacart User Not Found", "code": 1001},
        "meta": {"key": "instacart_user_id"}}


# --- snapshots ---------------------------------------------------------------------------------


def test_a_snapshot_restores_the_state_with_working_credentials(
    admin: Admin, shop: Retailer
) -> None:
    token = linked_pair(shop, "u1", "a@example.com")
    admin.clock(shop, advance_seconds=60)
    snapshot = admin.http.get("/_connectlink/snapshot").json()
    assert snapshot["format"] == "connectlink-snapshot" and snapshot["version"] == 1
    written = str(snapshot)
    assert token not in written and shop.client_secret not in written
    assert shop.link("u1", token).status_code == 200  # after the snapshot
    assert admin.http.post("/_connectlink/reset", json={}).json() == {"success": True}
    assert shop.create_user("u2").status_code == 401  # nothing is left
    assert admin.http.post("/_connectlink/restore", json=snapshot).json() == {"success": True}
    assert shop.link("u1", token).json() == {"success": True}  # unused again, as it was then
    assert admin.clock(shop).json()["offset_seconds"] == 60.0
    assert admin.http.get("/_connectlink/snapshot").json()["tables"] != snapshot["tables"]


def test_a_redirect_uri_the_rules_refuse_is_never_redirected_to(
    admin: Admin, shop: Retailer
) -> None:
    """However it was stored (a snapshot edited by hand, an older version's client), a
    javascript: URI is no redirect target: the Login page shows the error instead."""
    snapshot = admin.http.get("/_connectlink/snapshot").json()
    clients = snapshot["tables"]["oauth_clients"]
    column = clients["columns"].index("redirect_uris")
    for row in clients["rows"]:
        row[column] = json.dumps(["javascript:alert(1)//"])
    assert admin.http.post("/_connectlink/restore", json=snapshot).status_code == 200
    page = admin.http.get("/oauth/authorize", params={
        "client_id": shop.client_id, "redirect_uri": "javascript:alert(1)//",
        "response_type": "bogus", "scope": "account_linking", "state": "s"})
    assert page.status_code == 400 and "location" not in page.headers


def test_a_snapshot_of_another_version_is_refused_with_both_named(admin: Admin,
                                                                  shop: Retailer) -> None:
    snapshot = admin.http.get("/_connectlink/snapshot").json()
    answer = admin.http.post("/_connectlink/restore", json={**snapshot, "version": 99})
    assert answer.status_code == 409 and answer.json()["error"]["code"] == 4001
    message = answer.json()["error"]["message"]
    assert "version 99" in message and "version 1" in message
    assert shop.create_user("u1").status_code == 200  # nothing changed


# --- the guard -----------------------------------------------------------------------------------


def test_a_loopback_caller_naming_a_foreign_host_is_refused(emulator: Emulator) -> None:
    for host in ("evil.example", "127.0.0.1.evil.example", "localhost.evil.example:80"):
        answer = emulator.http.get("/_connectlink/faults", headers={"Host": host})
        assert answer.status_code == 403
        assert answer.json() == {"error": {
            "message": "The admin plane is for the loopback interface or the admin token",
            "code": 4001}, "meta": {}}
        assert "access-control-allow-origin" not in answer.headers
    for host in ("localhost:8080", "127.0.0.1", "[::1]:1"):
        assert emulator.http.get("/_connectlink/faults",
                                 headers={"Host": host}).status_code == 200


def test_a_form_encoded_write_is_refused(admin: Admin, shop: Retailer) -> None:
    answer = admin.http.post("/_connectlink/reset", data={"x": "1"})
    assert answer.status_code == 403
    assert answer.json()["error"]["message"] == "Writes to the admin plane take application/json"
    assert shop.create_user("u1").status_code == 200


ADMIN_TOKEN = "s3cret-admin-token-of-32-characters!"


def test_a_remote_caller_needs_the_admin_token(database_url: str) -> None:
    async def calls() -> list[int]:
        async with InProcessEmulator(upgraded(database_url),
                                     admin_token=ADMIN_TOKEN) as emulator:
            remote = httpx.ASGITransport(emulator.app, client=("203.0.113.9", 40000))
            async with httpx.AsyncClient(transport=remote, base_url="http://localhost") as http:
                return [(await http.get("/_connectlink/faults", headers=headers)).status_code
                        for headers in ({}, {"Authorization": "Bearer wrong"},
                                        {"Authorization": f"Bearer {ADMIN_TOKEN}"})]

    assert run_sync(calls()) == [403, 403, 200]


def test_a_short_admin_token_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="CONNECTLINK_ADMIN_TOKEN must be at least 32"):
        Settings.for_profile("emulator", admin_token="a" * 31)
    assert Settings.for_profile("emulator", admin_token="a" * 32).admin_token == "a" * 32


def test_wrong_admin_tokens_from_one_address_are_throttled(database_url: str) -> None:
    """Ten wrong tokens a minute from an address, then 429 without the token compared (the
    right one included); other addresses, and loopback callers without a token, go on."""
    async def calls() -> tuple[list[int], int, str, int, int]:
        async with InProcessEmulator(upgraded(database_url),
                                     admin_token=ADMIN_TOKEN) as emulator:
            def client(address: str) -> httpx.AsyncClient:
                transport = httpx.ASGITransport(emulator.app, client=(address, 40000))
                return httpx.AsyncClient(transport=transport, base_url="http://localhost")

            async with client("203.0.113.9") as guesser, client("203.0.113.10") as other, \
                    client("127.0.0.1") as local:
                guesses = [(await guesser.get("/_connectlink/faults", headers={
                    "Authorization": f"Bearer guess-{n}"})).status_code for n in range(11)]
                right = await guesser.get("/_connectlink/faults",
                                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                elsewhere = await other.get("/_connectlink/faults", headers={
                    "Authorization": f"Bearer {ADMIN_TOKEN}"})
                loopback = await local.get("/_connectlink/faults")
                return (guesses, right.status_code, right.headers.get("retry-after", ""),
                        elsewhere.status_code, loopback.status_code)

    guesses, right, retry_after, elsewhere, loopback = run_sync(calls())
    assert guesses == [403] * 10 + [429]
    assert right == 429 and 1 <= int(retry_after) <= 60
    assert (elsewhere, loopback) == (200, 200)


def test_the_production_profile_has_no_admin_plane(database_url: str) -> None:
    for production in make_emulator(database_url, profile="production", sandbox=False):
        for path in ("/_connectlink/faults", "/_connectlink/snapshot"):
            assert production.http.get(path).status_code == 404
        assert production.http.post("/_connectlink/reset", json={}).status_code == 404
        assert "/_connectlink/faults" not in production.http.get("/openapi.json").json()["paths"]


# --- several workers ---------------------------------------------------------------------------


def test_two_workers_on_postgresql_share_the_journal_clock_and_lifecycle(
    postgres_url: str,
) -> None:
    from support import new_retailer

    server = ServeProcess(postgres_url, "--no-demo", "--no-access-log", "--workers", "2")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            shop = new_retailer(http, postgres_url)
            admin = Admin(http)
            token = linked_pair(shop, "u1", "a@example.com")
            for n in range(30):
                assert shop.get(f"/v2/fulfillment/users/u1?n={n}").status_code == 200
            assert shop.link("u1", token).status_code == 200
            reads = [e for e in admin.journal(shop) if e["operation"] == "get_user"]
            assert len(reads) == 30
            used = [e for e in admin.lifecycle(token).json()["events"] if e["event"] == "used"]
            assert len(used) == 1
            admin.clock(shop, advance_seconds=DAY + 1)
            for _ in range(10):  # whichever worker answers, the token has expired
                assert shop.get("/v2/fulfillment/users/u1").status_code == 401
    finally:
        server.stop()


def test_a_journal_of_size_0_keeps_nothing_and_lifecycles_still_tell(database_url: str) -> None:
    for emulator in make_emulator(database_url, journal_size=0):
        admin, shop = Admin(emulator.http), emulator.retailer()
        token = linked_pair(shop, "u1", "a@example.com")
        assert shop.link("u1", token).status_code == 200
        assert admin.journal(shop) == []
        assert [e for e in admin.lifecycle(token).json()["events"]] == [
            {"event": "issued", "at": iso(START)}, {"event": "used", "at": iso(START)}]
    with pytest.raises(ValueError, match="CONNECTLINK_JOURNAL_SIZE must be 0"):
        Settings(journal_size=-1)


@pytest.mark.parametrize(("path", "body", "key"), [
    ("clock", {"advance_seconds": 1e20}, "advance_seconds"),
    ("clock", {"advance_seconds": -1e11}, "advance_seconds"),
    ("clock", {"set": "0001-01-01T00:00:00Z"}, "set"),
    ("clock", {"set": "1969-12-31T23:59:59Z"}, "set"),
    ("faults", {"endpoint": TOKEN, "fault": "503", "times": 2**40}, "times"),
    ("faults", {"endpoint": TOKEN, "fault": "503", "seed": 2**64}, "seed"),
    ("faults", {"endpoint": TOKEN, "fault": "503", "retailer_id": 2**63}, "retailer_id"),
    ("faults", {"endpoint": "GET /oauth/assets/{name}", "fault": "503"}, "endpoint"),
    ("faults", {"endpoint": TOKEN, "fault": "503", "client_id": "a\u0000b"}, "client_id"),
])
def test_hostile_admin_bodies_are_refused_before_anything_is_written(
    admin: Admin, shop: Retailer, path: str, body: dict[str, Any], key: str
) -> None:
    target = (f"/_connectlink/retailers/{rid(shop)}/clock" if path == "clock"
              else "/_connectlink/faults")
    if path == "faults":
        body = {"retailer_id": rid(shop), **body}
    answer = admin.http.post(target, json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["meta"] == {"key": key}
    assert admin.clock(shop).json()["now"] == iso(START)
    assert admin.http.get("/_connectlink/faults").json() == {"faults": []}


def test_hostile_membership_changes_and_journal_queries_are_refused(
    admin: Admin, shop: Retailer
) -> None:
    account = shop.instacart_user("a@example.com", plus=False)
    path = f"/_connectlink/instacart_users/{account}/membership"
    for body in ({"start_days": 1e12}, {"extend_days": 0}, {"retailer_id": 2**63, "lapse": True}):
        assert admin.http.post(path, json=body).status_code == 400, body
    assert admin.http.get(path).json() == {"instacart_user_id": account, "member": False}
    journal = f"/_connectlink/retailers/{rid(shop)}/journal"
    for query in ({"operaton": "link"}, {"status": "9999999999"}, {"limit": "0"},
                  {"path": "a\u0000"}, {"since": "yesterday"}):
        answer = admin.http.get(journal, params=query)
        assert answer.status_code == 400, query
        assert answer.json()["error"]["message"] == "is invalid"


def test_a_forwarded_request_needs_the_admin_token_even_from_loopback(
    emulator: Emulator,
) -> None:
    for forwarded in ({"X-Forwarded-For": "127.0.0.1"}, {"Forwarded": "for=127.0.0.1"},
                      {"X-Real-IP": "127.0.0.1"}):
        answer = emulator.http.post("/_connectlink/reset", json={}, headers=forwarded)
        assert answer.status_code == 403, forwarded
    assert emulator.http.get("/_connectlink/faults").status_code == 200  # not forwarded


def test_a_restore_that_breaks_the_schema_is_a_400_and_changes_nothing(
    admin: Admin, shop: Retailer
) -> None:
    assert shop.create_user("u1").status_code == 200
    snapshot = admin.http.get("/_connectlink/snapshot").json()
    links = snapshot["tables"]["connect_users"]
    links["rows"] = [[None] * len(links["columns"])]  # NOT NULL everywhere
    answer = admin.http.post("/_connectlink/restore", json=snapshot)
    assert answer.status_code == 400 and answer.json()["meta"] == {"key": "tables"}
    assert shop.get("/v2/fulfillment/users/u1").status_code == 200


def test_requests_refused_by_a_rate_limit_or_a_fault_are_journaled_whole(
    database_url: str,
) -> None:
    for emulator in make_emulator(database_url, rate_limit_api=1):
        admin, shop = Admin(emulator.http), emulator.retailer()
        statuses = [shop.get("/v2/fulfillment/users/nobody").status_code for _ in range(5)]
        assert 429 in statuses
        journaled = [e["status"] for e in admin.journal(shop, operation="get_user")]
        assert sorted(journaled) == sorted(statuses)
        token = "a-linking-token-that-a-fault-refuses"
        admin.fault(shop, LINK, "503", times=1)
        assert shop.link("u1", token).status_code in {503, 429}
        [faulted] = admin.journal(shop, operation="link")
        assert faulted["secrets"] == {"linking_token": fingerprint(token)}


# --- the journal stores whatever a request carried -----------------------------------------
def test_a_nul_in_a_path_is_journaled_replaced_and_the_journal_goes_on(
    admin: Admin, shop: Retailer
) -> None:
    """PostgreSQL's text cannot hold NUL: the entry says what it had to replace, and the
    entries after it are journaled as usual (issue 19, item 1)."""
    token = shop.access_token()
    assert shop.get("/v2/fulfillment/users/a%00b/link", token=token).status_code == 400
    assert shop.get("/v2/fulfillment/users/after/link", token=token).status_code == 400
    after, bad = admin.journal(shop)[:2]
    assert after["path"] == "/v2/fulfillment/users/after/link" and "replaced" not in after
    assert bad["path"] == "/v2/fulfillment/users/a\ufffdb/link"
    assert bad["replaced"] is True and bad["status"] == 400


def test_a_batch_the_database_refuses_loses_only_the_entry_it_cannot_take(
    database_url: str,
) -> None:
    """An entry no retrying can store (here an id past any integer column) is dropped,
    counted and logged; the entries batched with it, and every later one, are stored."""
    from connectlink.clock import ManualClock
    from connectlink.emulator.records import JournalEntry
    from connectlink.server.app import create_app
    from support import ThreadServer, new_retailer

    settings = Settings.for_profile("emulator", database_url=upgraded(database_url),
                                    access_log=False, metrics=True)
    app = create_app(settings, clock=ManualClock(START))
    server = ThreadServer(settings, ManualClock(START))
    server.start(app)
    try:
        controls = app.state.context.controls
        with httpx.Client(base_url=server.url) as http:
            shop = new_retailer(http, settings.database_url)
            token = shop.access_token()
            unstorable = JournalEntry(retailer_id=2**70, at=0.0, method="GET", path="/x",
                                      operation=None, status=400, latency_ms=0.0,
                                      request_id="unstorable")
            server.call_soon(controls.pending.append, unstorable)  # as a request would
            for n in range(3):
                shop.get(f"/v2/fulfillment/users/u{n}/link", token=token)
            paths = [e["path"] for e in Admin(http).journal(shop)]
            assert paths[:3] == [f"/v2/fulfillment/users/u{n}/link" for n in (2, 1, 0)]
            assert controls.dropped == 1
            scraped = http.get("/metrics").text
            assert "connectlink_journal_entries_dropped_total 1.0" in scraped
    finally:
        server.stop()
