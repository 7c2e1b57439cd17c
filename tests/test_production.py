"""Running it for real: the production profile's settings, the security headers on every
response, whose X-Forwarded-For and X-Forwarded-Proto are believed, and a graceful shutdown of
a real ``connectlink serve`` on SIGTERM."""

from __future__ import annotations

import html
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import SECRET_KEY, make_emulator
from connectlink.server.operations import Family, for_settings
from connectlink.server.protocol import timeout_response
from connectlink.settings import LOOPBACK, Settings
from support import REDIRECT_URI, Emulator, Retailer, ServeProcess, new_retailer

PRODUCTION = ("--profile", "production")
PRODUCTION_ENV = {"CONNECTLINK_SECRET_KEY": SECRET_KEY}
HSTS = "max-age=31536000; includeSubDomains"
SECURITY = {"x-content-type-options": "nosniff", "cache-control": "no-store",
            "referrer-policy": "no-referrer"}


# --- the profile's settings -------------------------------------------------------------------


def test_production_needs_a_secret_key_and_has_no_sandbox() -> None:
    with pytest.raises(ValueError, match="the production profile needs CONNECTLINK_SECRET_KEY"):
        Settings.from_env({"CONNECTLINK_PROFILE": "production"})
    production = Settings.from_env({"CONNECTLINK_PROFILE": "production",
                                    "CONNECTLINK_SECRET_KEY": SECRET_KEY})
    assert production.sandbox is False
    assert not [op for op in for_settings(production) if op.family is Family.SANDBOX]
    assert [op for op in for_settings(Settings()) if op.family is Family.SANDBOX]
    # decisions.md "Profiles": absent in production, whatever the environment says
    with pytest.raises(ValueError, match="the production profile has no sandbox endpoints"):
        Settings.from_env({"CONNECTLINK_PROFILE": "production",
                           "CONNECTLINK_SECRET_KEY": SECRET_KEY, "CONNECTLINK_SANDBOX": "1"})


def test_proxy_headers_are_believed_from_loopback_in_the_emulator_and_from_nobody_in_production(
) -> None:
    assert Settings.for_profile("emulator").forwarded_allow_ips == LOOPBACK == "127.0.0.1,::1"
    assert Settings.for_profile("production", secret_key=SECRET_KEY).forwarded_allow_ips == ""
    told = Settings.from_env({"CONNECTLINK_PROFILE": "production",
                              "CONNECTLINK_SECRET_KEY": SECRET_KEY,
                              "CONNECTLINK_FORWARDED_ALLOW_IPS": "10.0.0.0/8, fd00::1"})
    assert told.forwarded_allow_ips == "10.0.0.0/8, fd00::1"
    # set and empty: nobody, in the emulator too
    assert Settings.from_env({"CONNECTLINK_FORWARDED_ALLOW_IPS": ""}).forwarded_allow_ips == ""
    # the flag wins over the variable; workers get what the flag said
    flagged = Settings.from_env({"CONNECTLINK_FORWARDED_ALLOW_IPS": "10.0.0.1"},
                                forwarded_allow_ips="*")
    assert flagged.forwarded_allow_ips == "*"
    assert Settings.from_env(flagged.to_env()) == flagged


@pytest.mark.parametrize("value", ["proxy.internal", "10.0.0.1/8", "10.0.0.300", "*,10.0.0.1"])
def test_proxy_addresses_uvicorn_would_silently_never_match_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="CONNECTLINK_FORWARDED_ALLOW_IPS must be"):
        Settings(forwarded_allow_ips=value)


def test_the_shutdown_timeout_is_whole_seconds_more_than_0() -> None:
    assert Settings().shutdown_timeout == 10
    assert Settings.from_env({"CONNECTLINK_SHUTDOWN_TIMEOUT": "30"}).shutdown_timeout == 30
    assert Settings.from_env({"CONNECTLINK_SHUTDOWN_TIMEOUT": "30"},
                             shutdown_timeout=5).shutdown_timeout == 5
    with pytest.raises(ValueError, match="CONNECTLINK_SHUTDOWN_TIMEOUT must be a whole number"):
        Settings.from_env({"CONNECTLINK_SHUTDOWN_TIMEOUT": "1.5"})
    with pytest.raises(ValueError, match="CONNECTLINK_SHUTDOWN_TIMEOUT must be more than 0"):
        Settings.from_env({"CONNECTLINK_SHUTDOWN_TIMEOUT": "0"})


def test_serve_refuses_a_bad_proxy_list_before_doing_anything(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "connectlink", "serve", "--database",
         f"sqlite:///{tmp_path / 'never.db'}", "--forwarded-allow-ips", "proxy.internal"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "CONNECTLINK_FORWARDED_ALLOW_IPS must be * or IP addresses" in done.stderr
    assert not (tmp_path / "never.db").exists()


# --- the security headers, in process -----------------------------------------------------------


@pytest.fixture(params=["emulator", "production"])
def any_profile(request: pytest.FixtureRequest, database_url: str) -> Iterator[Emulator]:
    yield from make_emulator(database_url, in_process=True, profile=request.param)


def _over(emulator: Emulator, scheme: str) -> httpx.Client:
    """A client of the in-process app whose requests arrive over ``scheme``."""
    return httpx.Client(transport=emulator.server.transport(),  # type: ignore[union-attr]
                        base_url=f"{scheme}://connectlink.test")


def _security_headers(response: httpx.Response) -> dict[str, list[str]]:
    names = [*SECURITY, "strict-transport-security"]
    return {name: response.headers.get_list(name) for name in names
            if name in response.headers}


def test_every_api_response_carries_the_security_headers(any_profile: Emulator) -> None:
    shop = any_profile.retailer()
    http = any_profile.http
    responses = {
        "token": shop.token_request(grant_type="client_credentials"),
        "a user": shop.create_user("u1"),
        "no bearer": http.get("/v2/fulfillment/users/u1"),
        "not found": http.get("/v2/nowhere"),
        "wrong method": http.delete("/v2/oauth/token"),
    }
    assert [r.status_code for r in responses.values()] == [200, 200, 401, 404, 405]
    for name, response in responses.items():
        assert _security_headers(response) == {k: [v] for k, v in SECURITY.items()}, name
    # an OAuth error keeps its own no-store (RFC 6749 section 5.1), with Pragma, once
    refused = shop.token_request(grant_type="password")
    assert refused.headers.get_list("cache-control") == ["no-store"]
    assert refused.headers["pragma"] == "no-cache"


def test_pages_and_documents_keep_their_own_headers_and_gain_the_rest(
    any_profile: Emulator,
) -> None:
    shop = any_profile.retailer()
    http = any_profile.http
    login = http.get("/oauth/authorize", params={
        "response_type": "code", "client_id": shop.client_id, "redirect_uri": REDIRECT_URI,
        "state": "s"})
    assert login.status_code == 200
    assert _security_headers(login) == {k: [v] for k, v in SECURITY.items()}
    assert login.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in login.headers["content-security-policy"]
    stylesheet = http.get("/oauth/assets/connectlink.css")
    assert stylesheet.headers.get_list("cache-control") == ["public, max-age=3600"]
    assert stylesheet.headers.get_list("x-content-type-options") == ["nosniff"]
    document = http.get("/openapi.json")
    assert document.headers.get_list("cache-control") == ["no-cache"]
    assert document.headers["referrer-policy"] == "no-referrer"


def test_hsts_only_in_production_and_only_over_https(any_profile: Emulator) -> None:
    production = any_profile.server.settings.profile == "production"
    with _over(any_profile, "https") as https, _over(any_profile, "http") as http:
        for path in ("/v2/fulfillment/users/u1", "/openapi.json", "/docs"):
            secure = https.get(path)
            assert secure.headers.get_list("strict-transport-security") == \
                ([HSTS] if production else []), path
            assert "strict-transport-security" not in http.get(path).headers


def test_the_408_written_before_any_app_runs_carries_them_too() -> None:
    head = timeout_response([]).split(b"\r\n\r\n", 1)[0].decode().lower()
    for name, value in SECURITY.items():
        assert f"\r\n{name}: {value}" in head
    assert "strict-transport-security" not in head


# --- forwarded headers, through a real `connectlink serve` --------------------------------------


def _serve(tmp_path: Path, *flags: str, env: dict[str, str] | None = None) -> ServeProcess:
    url = f"sqlite:///{tmp_path / 'connectlink.db'}"
    return ServeProcess(url, "--no-demo", *PRODUCTION, *flags,
                        env={**PRODUCTION_ENV, **(env or {})})


def _sign_in(server: ServeProcess, shop: Retailer, email: str, forwarded_for: str | None,
             password: str = "wrong password") -> httpx.Response:
    """One sign-in on the Login pages, from the client address ``forwarded_for`` claims."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    with httpx.Client(base_url=server.url, headers=headers) as browser:
        page = browser.get("/oauth/authorize", params={
            "response_type": "code", "client_id": shop.client_id,
            "redirect_uri": REDIRECT_URI, "state": "s"})
        form = re.search(r'<form method="post" action="/oauth/sign_in".*?</form>', page.text,
                         re.S)
        assert form, page.text
        fields = {name: html.unescape(value) for name, value in re.findall(
            r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(0))}
        return browser.post("/oauth/sign_in",
                            data={**fields, "email": email, "password": password})


def _thirty_failures(server: ServeProcess, shop: Retailer, forwarded_for: str) -> None:
    """30 failed sign-ins (decisions.md: they lock the address; the 30th is still answered as
    a failure), each for its own email so that no account is locked, each from
    ``forwarded_for`` with a different last octet."""
    for n in range(30):
        failed = _sign_in(server, shop, f"guess{n}@example.com", forwarded_for.format(n))
        assert failed.status_code == 422, failed.text


def test_production_believes_no_forwarded_header_by_default(tmp_path: Path) -> None:
    server = _serve(tmp_path)
    try:
        with httpx.Client(base_url=server.url) as http:
            shop = new_retailer(http, server.database_url)
            # 30 failures claiming 30 addresses lock the one they all came from, 127.0.0.1
            _thirty_failures(server, shop, "10.9.{}.1")
            assert _sign_in(server, shop, "another@example.com", "10.8.0.1").status_code == 429
            claimed = http.get("/v2/fulfillment/users/x", headers={"X-Forwarded-Proto": "https"})
            assert "strict-transport-security" not in claimed.headers
            assert "server" not in claimed.headers
    finally:
        log = server.stop()
    assert "10.9." not in log and "10.8." not in log  # nor does the access log


def test_forwarded_headers_from_an_allowed_proxy_are_believed(tmp_path: Path) -> None:
    server = _serve(tmp_path, "--forwarded-allow-ips", "127.0.0.1")
    try:
        with httpx.Client(base_url=server.url) as http:
            shop = new_retailer(http, server.database_url)
            _thirty_failures(server, shop, "1.2.3.4")
            assert _sign_in(server, shop, "another@example.com", "1.2.3.4").status_code == 429
            # ...1.2.3.4 is locked, not the proxy: another client behind it still signs in
            assert _sign_in(server, shop, "another@example.com", "5.6.7.8").status_code == 422
            assert _sign_in(server, shop, "another@example.com", None).status_code == 422
            over_https = http.get("/v2/fulfillment/users/x",
                                  headers={"X-Forwarded-Proto": "https"})
            assert over_https.headers["strict-transport-security"] == HSTS
            assert "strict-transport-security" not in http.get("/v2/fulfillment/users/x").headers
    finally:
        log = server.stop()
    assert "1.2.3.4" in log and "5.6.7.8" in log  # the access log's client addresses


def test_the_variable_names_the_proxies_too_and_the_emulator_believes_loopback(
    tmp_path: Path,
) -> None:
    claims = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "1.2.3.4"}
    told = _serve(tmp_path, env={"CONNECTLINK_FORWARDED_ALLOW_IPS": "127.0.0.0/8"})
    try:
        response = httpx.get(f"{told.url}/v2/fulfillment/users/x", headers=claims)
        assert response.headers["strict-transport-security"] == HSTS
    finally:
        log = told.stop()
    assert "1.2.3.4" in log
    emulator = ServeProcess(f"sqlite:///{tmp_path / 'emulator.db'}", "--no-demo")
    try:
        response = httpx.get(f"{emulator.url}/v2/fulfillment/users/x", headers=claims)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "strict-transport-security" not in response.headers  # never in the emulator
    finally:
        log = emulator.stop()
    assert "1.2.3.4" in log


# --- graceful shutdown ------------------------------------------------------------------------


class HeldRequest:
    """A token request on a raw socket whose body is sent in two halves, on cue. Its headers
    ask for ``100 Continue``, which uvicorn sends when the handler first reads the body: from
    then on the request is in flight."""

    def __init__(self, server: ServeProcess, shop: Retailer) -> None:
        self.body = json.dumps({"client_id": shop.client_id, "client_secret": shop.client_secret,
                                "grant_type": "client_credentials"}).encode()
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        self.sock.sendall(b"POST /v2/oauth/token HTTP/1.1\r\nHost: connectlink\r\n"
                          b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(self.body))
        assert self._read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 100 Continue\r\n")
        self.sock.sendall(self.body[:len(self.body) // 2])

    def _read_until(self, end: bytes) -> bytes:
        received = b""
        while end not in received:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received

    def finish(self) -> tuple[bytes, bytes]:
        """Send the rest, and read the answer to the end: its head and its body."""
        self.sock.sendall(self.body[len(self.body) // 2:])
        return self.answer()

    def answer(self) -> tuple[bytes, bytes]:
        received = b""
        while chunk := self.sock.recv(65536):  # the server closes after it: keep-alive is off
            received += chunk
        self.sock.close()
        head, _, body = received.partition(b"\r\n\r\n")
        return head, body


def _refused(port: int, within: float = 20) -> bool:
    """Does the port refuse new connections, now or within ``within`` seconds?"""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except ConnectionRefusedError:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def production(database_url: str) -> Iterator[tuple[ServeProcess, Retailer]]:
    server = ServeProcess(database_url, "--no-demo", *PRODUCTION, env=PRODUCTION_ENV)
    try:
        with httpx.Client(base_url=server.url) as http:
            yield server, new_retailer(http, server.database_url)
    finally:
        server.stop()


def test_sigterm_lets_the_request_in_flight_finish_refuses_new_ones_and_exits_0(
    production: tuple[ServeProcess, Retailer],
) -> None:
    server, shop = production
    held = HeldRequest(server, shop)
    server.process.send_signal(signal.SIGTERM)
    assert _refused(server.port), "the server still accepts connections after SIGTERM"
    head, body = held.finish()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert b"\r\nconnection: close" in head.lower()
    token = json.loads(body)
    assert token["token_type"] == "Bearer" and len(token["access_token"]) == 43
    assert server.process.wait(timeout=30) == 0
    assert "Finished server process" in server.stop()


def test_a_request_past_the_shutdown_timeout_is_cut_and_the_server_exits_0(
    database_url: str,
) -> None:
    # Bodies may take 5 minutes here: only the shutdown timeout can end this request soon.
    server = ServeProcess(database_url, "--no-demo", *PRODUCTION, "--shutdown-timeout", "1",
                          env={**PRODUCTION_ENV, "CONNECTLINK_BODY_TIMEOUT": "300"})
    try:
        with httpx.Client(base_url=server.url) as http:
            held = HeldRequest(server, new_retailer(http, server.database_url))
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0
        head, body = held.answer()
        # cut off: a 503 in the Connect envelope, to retry elsewhere, not uvicorn's text 500
        assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), head
        assert b"\r\nretry-after: 1\r\n" in head.lower()
        assert b"\r\nx-content-type-options: nosniff" in head.lower()
        assert json.loads(body)["error"]["code"] == 2003
    finally:
        log = server.stop()
    assert "timeout graceful shutdown exceeded" in log


def test_sigint_is_a_graceful_stop_too(production: tuple[ServeProcess, Retailer]) -> None:
    server, shop = production
    held = HeldRequest(server, shop)
    server.process.send_signal(signal.SIGINT)
    assert _refused(server.port)
    head, _ = held.finish()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert server.process.wait(timeout=30) == 0

