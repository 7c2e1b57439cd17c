"""``connectlink emulator ...`` against real servers on both engines: each subcommand's text and
``--json``, its refusals and exit codes, ``--url`` and ``--admin-token`` and their variables, and
a server that does not answer or has no admin plane."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import START, make_emulator, upgraded
from connectlink.clock import ManualClock
from connectlink.linking.links import iso_utc as iso
from connectlink.settings import Settings
from support import Emulator, Retailer, ThreadServer, cli
from test_cli import CLI

ADMIN_TOKEN = "an-admin-token-for-the-cli-tests"
GET_USER = "GET /v2/fulfillment/users/{user_id}"


@pytest.fixture
def served(database_url: str) -> Iterator[Emulator]:
    yield from make_emulator(database_url)


class Admin(CLI):
    """``connectlink emulator ARGS --url URL`` in this process, its output captured."""

    def __init__(self, capsys: pytest.CaptureFixture[str], url: str | None) -> None:
        super().__init__(capsys)
        self.server_url = url

    def run(self, *args: str, database: bool = False) -> tuple[int, str, str]:
        extra = ["--url", self.server_url] if self.server_url else []
        return super().run("emulator", *args, *extra, database=False)


@pytest.fixture
def admin(capsys: pytest.CaptureFixture[str], served: Emulator) -> Admin:
    return Admin(capsys, served.server.url)  # type: ignore[union-attr]


def rid(shop: Retailer) -> str:
    return str(shop.credentials["retailer_id"])


# --- the clock ---------------------------------------------------------------------------------


def test_clock_reads_and_moves(admin: Admin, served: Emulator) -> None:
    shop = served.retailer()
    assert admin.ok("clock", rid(shop)) == (
        f"retailer_id: {rid(shop)}\nnow: {iso(START)}\noffset_seconds: 0\nfrozen: no\n")
    assert admin.json("clock", rid(shop)) == {"now": iso(START), "offset_seconds": 0.0,
                                              "frozen": False}
    assert f"now: {iso(START + 3600)}\noffset_seconds: 3600\n" in admin.ok(
        "clock", rid(shop), "--advance", "3600")
    assert admin.json("clock", rid(shop), "--advance", "-600.5")["offset_seconds"] == 2999.5
    assert admin.json("clock", rid(shop), "--set", "2030-01-01T00:00:00Z")["now"] == (
        "2030-01-01T00:00:00Z")
    assert "frozen: yes\n" in admin.ok("clock", rid(shop), "--freeze")
    assert admin.json("clock", rid(shop), "--unfreeze")["frozen"] is False
    assert admin.json("clock", rid(shop), "--reset") == {"now": iso(START),
                                                         "offset_seconds": 0.0, "frozen": False}
    assert admin.fails(3, "clock", "999999") == "no retailer 999999"
    assert admin.fails(4, "clock", rid(shop), "--set", "next tuesday") == "set: is invalid"
    code, _, err = admin.run("clock", rid(shop), "--advance", "1", "--freeze")
    assert code == 2 and "not allowed with argument" in err


# --- faults ------------------------------------------------------------------------------------


def test_faults_add_list_delete_clear(admin: Admin, served: Emulator) -> None:
    shop, other = served.retailer(), served.retailer()
    assert admin.ok("faults", "list") == "No fault rules.\n"
    assert admin.json("faults", "list") == []
    added = admin.ok("faults", "add", "--retailer-id", rid(shop), "--endpoint", GET_USER,
                     "--fault", "503", "--times", "2", "--retry-after", "0")
    assert added == f"added fault rule 1: 503 on {GET_USER}\n"
    second = admin.json("faults", "add", "--client-id", other.client_id, "--endpoint",
                        "POST /v2/oauth/token", "--fault", "latency", "--latency-ms", "10",
                        "--probability", "0.5", "--seed", "7")
    assert second == {"id": 2}
    assert shop.create_user("u1").status_code == 200
    assert shop.get("/v2/fulfillment/users/u1").status_code == 503  # it fires
    listing = admin.ok("faults", "list").splitlines()
    assert listing[0].split() == ["ID", "RETAILER_ID", "CLIENT_ID", "ENDPOINT", "FAULT",
                                  "TIMES", "EVERY", "PROBABILITY", "MATCHED", "FIRED",
                                  "CREATED_AT"]
    assert listing[1].split() == ["1", rid(shop), "-", "GET", "/v2/fulfillment/users/{user_id}",
                                  "503", "2", "1", "1", "1", "1", iso(START)]
    assert listing[2].split()[:3] == ["2", "-", other.client_id]
    rules = admin.json("faults", "list")
    assert [(r["id"], r["fired"]) for r in rules] == [(1, 1), (2, 0)]
    assert (rules[1]["fault"], rules[1]["latency_ms"], rules[1]["seed"]) == ("latency", 10, 7)
    assert admin.ok("faults", "delete", "1") == "deleted fault rule 1\n"
    assert admin.fails(3, "faults", "delete", "1") == "no fault rule 1"
    assert admin.ok("faults", "clear") == "deleted 1 fault rule\n"
    assert admin.json("faults", "clear") == {"deleted": 0}
    assert admin.ok("faults", "clear") == "deleted 0 fault rules\n"


def test_fault_rules_that_are_refused(admin: Admin, served: Emulator) -> None:
    shop = served.retailer()
    assert admin.fails(2, "faults", "add", "--endpoint", GET_USER, "--fault", "503") == (
        "say whose requests: --retailer-id or --client-id")
    assert admin.fails(4, "faults", "add", "--retailer-id", rid(shop), "--endpoint",
                       "GET /nowhere", "--fault", "503") == "endpoint: is invalid"
    assert admin.fails(4, "faults", "add", "--retailer-id", rid(shop), "--endpoint", GET_USER,
                       "--fault", "deny") == "fault: is invalid"
    assert admin.fails(3, "faults", "add", "--retailer-id", "999999", "--endpoint", GET_USER,
                       "--fault", "503") == "no retailer 999999"
    code, _, err = admin.run("faults", "add", "--retailer-id", rid(shop), "--endpoint",
                             GET_USER, "--fault", "teapot")
    assert code == 2 and "invalid choice: 'teapot'" in err
    assert admin.json("faults", "list") == []


# --- the journal -------------------------------------------------------------------------------


def test_journal(admin: Admin, served: Emulator) -> None:
    shop, other = served.retailer(), served.retailer()
    assert admin.ok("journal", rid(shop)) == f"Retailer {rid(shop)} has no journal entries yet.\n"
    shop.create_user("u1")
    shop.get("/v2/fulfillment/users/nobody")
    other.create_user("u2")
    lines = admin.ok("journal", rid(shop)).splitlines()
    assert lines[0].split() == ["AT", "METHOD", "PATH", "OPERATION", "STATUS", "ERROR", "FAULT",
                                "LATENCY_MS", "REQUEST_ID"]
    assert [line.split()[1:6] for line in lines[1:]] == [
        ["GET", "/v2/fulfillment/users/nobody", "get_user", "400", "1001"],
        ["POST", "/v2/fulfillment/users", "create_user", "200", "-"],
        ["POST", "/v2/oauth/token", "issue_token", "200", "-"],
    ]
    assert "1001 (user_id)" in lines[1]
    entries = admin.json("journal", rid(shop))
    assert [e["status"] for e in entries] == [400, 200, 200]
    assert all(e["at"] == iso(START) and len(e["request_id"]) == 32 for e in entries)
    assert [e["path"] for e in admin.json("journal", rid(shop), "--status", "400")] == [
        "/v2/fulfillment/users/nobody"]
    assert [e["operation"] for e in admin.json("journal", rid(shop), "--operation",
                                               "create_user")] == ["create_user"]
    assert len(admin.json("journal", rid(shop), "--limit", "1")) == 1
    assert admin.json("journal", rid(shop), "--path", "/v2/fulfillment/users") == [entries[1]]
    assert admin.json("journal", rid(shop), "--since", iso(START + 1)) == []
    assert len(admin.json("journal", rid(shop), "--until", iso(START))) == 3
    assert admin.ok("journal", rid(shop), "--status", "500") == (
        f"Retailer {rid(shop)} has no journal entries that match.\n")
    assert admin.fails(3, "journal", "999999") == "no retailer 999999"
    assert admin.fails(4, "journal", rid(shop), "--since", "yesterday") == "since: is invalid"


# --- snapshots ---------------------------------------------------------------------------------


def test_snapshot_restore_and_reset(admin: Admin, served: Emulator, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    shop = served.retailer()
    shop.create_user("u1")
    printed = json.loads(admin.ok("snapshot"))
    assert (printed["format"], printed["version"], printed["taken_at"]) == (
        "connectlink-snapshot", 1, iso(START))
    kept = tmp_path / "snapshot.json"
    said = admin.ok("snapshot", "-o", str(kept))
    assert said.startswith(f"wrote the snapshot taken at {iso(START)} (schema ")
    assert said.endswith(f" tables) to {kept}\n")
    assert json.loads(kept.read_text())["tables"] == printed["tables"]
    shop.create_user("u2")
    assert admin.ok("restore", str(kept)).startswith(
        f"restored the snapshot taken at {iso(START)} (schema ")
    assert shop.get("/v2/fulfillment/users/u2").status_code == 400  # gone with the restore
    assert shop.get("/v2/fulfillment/users/u1").status_code == 200
    shop.create_user("u2")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(kept.read_bytes())))
    assert admin.ok("restore", "-").startswith("restored the snapshot")
    assert shop.get("/v2/fulfillment/users/u2").status_code == 400
    # Files that hold no snapshot, or one of another version.
    (tmp_path / "text").write_text("not json")
    assert admin.fails(2, "restore", str(tmp_path / "text")) == f"{tmp_path / 'text'} is not JSON"
    (tmp_path / "list").write_text("[]")
    assert admin.fails(2, "restore", str(tmp_path / "list")).endswith("holds no snapshot "
                                                                      "(a JSON object)")
    assert admin.fails(2, "restore", str(tmp_path / "absent")).startswith(
        f"cannot read {tmp_path / 'absent'}: ")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**printed, "version": 2}))
    refusal = admin.fails(4, "restore", str(other))
    assert "version 2" in refusal and "version 1" in refusal
    assert admin.fails(2, "snapshot", "-o", str(tmp_path / "no" / "such" / "dir")).startswith(
        "cannot write ")
    # Reset, only when told twice.
    assert admin.fails(2, "reset") == ("reset empties every table, retailers included: say "
                                       "--yes to do it")
    assert admin.json("clock", rid(shop))["frozen"] is False  # nothing was done
    assert admin.ok("reset", "--yes") == "reset: every table is empty\n"
    assert admin.fails(3, "clock", rid(shop)) == f"no retailer {rid(shop)}"
    admin.ok("restore", str(kept))
    assert admin.json("clock", rid(shop))["offset_seconds"] == 0.0


# --- where the server is, and who may use it ---------------------------------------------------


def test_a_server_that_does_not_answer(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    failure = Admin(capsys, url).fails(5, "faults", "list")
    assert failure.startswith(f"cannot reach the emulator at {url}: ConnectError")


def test_the_url_comes_from_the_environment(capsys: pytest.CaptureFixture[str],
                                            served: Emulator,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    shop = served.retailer()
    monkeypatch.setenv("CONNECTLINK_URL", served.server.url)  # type: ignore[union-attr]
    assert Admin(capsys, None).json("clock", rid(shop))["now"] == iso(START)
    assert "(default: $CONNECTLINK_URL, else http://127.0.0.1:8080)" in " ".join(
        Admin(capsys, None).ok("clock", "--help").split())


def test_a_server_with_no_admin_plane(capsys: pytest.CaptureFixture[str],
                                      database_url: str) -> None:
    with contextlib.contextmanager(make_emulator)(database_url, profile="production") as (
            production):
        failure = Admin(capsys, production.server.url).fails(4, "faults", "list")  # type: ignore[union-attr]
        assert failure.endswith("has no admin plane (the production profile has none)")


class NoLoopbackName(ThreadServer):
    """A server on 127.0.0.2: a loopback peer, whose ``Host`` is no loopback name, so the
    admin plane wants its token."""

    def __init__(self, settings: Settings, clock: ManualClock) -> None:
        super().__init__(settings, clock)
        self._socket.close()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            self._socket.bind(("127.0.0.2", 0))
        except OSError as exc:
            self._socket.close()
            pytest.skip(f"no 127.0.0.2 here: {exc}")
        self.port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.2:{self.port}"


def test_the_admin_token_from_the_option_or_the_environment(
        capsys: pytest.CaptureFixture[str], database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONNECTLINK_ADMIN_TOKEN", raising=False)
    settings = Settings.for_profile("emulator", database_url=upgraded(database_url),
                                    access_log=False, pool_size=4, admin_token=ADMIN_TOKEN)
    server = NoLoopbackName(settings, ManualClock(START))
    server.start()
    try:
        admin = Admin(capsys, server.url)
        assert admin.fails(4, "faults", "list") == (
            "The admin plane is for the loopback interface or the admin token: give "
            "--admin-token or $CONNECTLINK_ADMIN_TOKEN")
        assert admin.fails(4, "faults", "list", "--admin-token", "not-it").startswith(
            "The admin plane is for the loopback interface or the admin token")
        assert admin.json("faults", "list", "--admin-token", ADMIN_TOKEN) == []
        monkeypatch.setenv("CONNECTLINK_ADMIN_TOKEN", ADMIN_TOKEN)
        assert admin.ok("faults", "clear") == "deleted 0 fault rules\n"
    finally:
        server.stop()


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    run = CLI(capsys)
    top = run.ok("emulator", "--help", database=False)
    for name in ("clock", "faults", "journal", "snapshot", "restore", "reset"):
        assert f"    {name}" in top
    for args in (["clock"], ["faults", "list"], ["faults", "add"], ["faults", "delete"],
                 ["faults", "clear"], ["journal"], ["snapshot"], ["restore"], ["reset"]):
        shown = run.ok("emulator", *args, "--help", database=False)
        assert "--url URL" in shown and "--admin-token TOKEN" in shown, args
        assert "--database" not in shown, args
    assert ADMIN_TOKEN not in run.ok("emulator", "clock", "--help", database=False)


def test_the_console_entry(served: Emulator) -> None:
    shop = served.retailer()
    url = served.server.url  # type: ignore[union-attr]
    assert json.loads(cli("emulator", "clock", rid(shop), "--url", url, "--json"))["now"] == (
        iso(START))
    assert json.loads(cli("emulator", "snapshot", "--url", url))["version"] == 1
