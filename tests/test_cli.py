"""The ``connectlink`` command line: every command and its ``--json`` form in process
(``connectlink.cli.main``), on both engines, with every exit code; a few runs of the real
console entry; ``link demo`` and ``clients rotate-secret`` against real servers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import shlex
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from conftest import POSTGRES, SECRET_KEY, upgraded
from connectlink import __version__, security
from connectlink.cli import main, parser
from connectlink.cli.shell import program
from connectlink.clock import SystemClock
from connectlink.linking import users
from connectlink.storage import migrations, using_store
from support import (
    REDIRECT_URI,
    Emulator,
    Retailer,
    ServeProcess,
    cli,
    engine_of,
    execute_sql,
    query_sql,
    stored_bytes,
)

NEW = "https://garden.example/account/instacart/callback"


class CLI:
    """``connectlink ARGS --database URL`` in this process, its output captured."""

    def __init__(self, capsys: pytest.CaptureFixture[str], url: str | None = None) -> None:
        self.capsys, self.url = capsys, url

    def run(self, *args: str, database: bool = True) -> tuple[int, str, str]:
        extra = ["--database", self.url] if database and self.url else []
        code = main([*args, *extra])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def ok(self, *args: str, database: bool = True) -> str:
        code, out, err = self.run(*args, database=database)
        assert (code, err) == (0, ""), (code, err)
        return out

    def json(self, *args: str, database: bool = True) -> Any:
        return json.loads(self.ok(*args, "--json", database=database))

    def fails(self, code: int, *args: str, database: bool = True) -> str:
        """The one line a failure prints on stderr."""
        got, _, err = self.run(*args, database=database)
        assert got == code, (got, err)
        assert err.startswith("connectlink: ") and err.count("\n") == 1, err
        return err.removeprefix("connectlink: ").strip()


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], database_url: str) -> CLI:
    return CLI(capsys, database_url)


def _shop(run: CLI, name: str = "Garden", *uris: str) -> dict[str, Any]:
    args = ["retailers", "create", "--name", name]
    for uri in uris or (NEW,):
        args += ["--redirect-uri", uri]
    created: dict[str, Any] = run.json(*args)
    return created


# the console entry (subprocesses) ------------------------------------------------------------
def test_retailers_create_json_prints_one_object(database_url: str) -> None:
    url = upgraded(database_url)
    out = cli("retailers", "create", "--name", "Garden", "--redirect-uri", "https://a.example/cb",
              "--redirect-uri", "https://b.example/cb", "--database", url, "--json")
    lines = out.strip().splitlines()
    assert len(lines) == 1
    created = json.loads(lines[0])
    assert list(created) == ["retailer_id", "client_id", "client_secret"]
    assert isinstance(created["retailer_id"], int)

    client = asyncio.run(using_store(url, lambda store: store.get_client(created["client_id"])))
    assert client is not None
    assert client.redirect_uris == ("https://a.example/cb", "https://b.example/cb")
    assert security.matches(created["client_secret"], client.secret_digest)


def test_database_url_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"  # a new file: no `db upgrade` first
    done = subprocess.run(
        [sys.executable, "-m", "connectlink", "retailers", "create", "--name", "x",
         "--redirect-uri", "https://a.example/cb", "--json"],
        capture_output=True, text=True, env={"CONNECTLINK_DATABASE_URL": url, "PATH": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "env.db").exists()


def test_bad_database_url_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "connectlink", "retailers", "create", "--name", "x",
         "--redirect-uri", "https://a.example/cb", "--database", "mysql://nope"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 2
    assert "unsupported database URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_console_script_and_the_hint_program_run_as_printed() -> None:
    for command in ([str(Path(sys.executable).parent / "connectlink")],
                    [sys.executable, "-m", "connectlink"], shlex.split(program())):
        done = subprocess.run([*command, "--version"], capture_output=True, text=True,
                              check=False)
        assert (done.returncode, done.stdout.strip()) == (0, f"connectlink {__version__}")


def test_unlink_of_an_unknown_user_is_not_found(tmp_path: Path) -> None:
    """Exit 3 (was 1 before the exit codes were settled)."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    cli("retailers", "create", "--name", "x", "--redirect-uri", NEW, "--database", url)
    done = subprocess.run(
        [sys.executable, "-m", "connectlink", "links", "unlink", "--retailer-id", "1",
         "--user-id", "nobody", "--database", url],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 3
    assert done.stderr == "connectlink: retailer 1 has no user 'nobody'\n"


# usage, help, version --------------------------------------------------------------------
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = CLI(capsys, f"sqlite:///{tmp_path / 'u.db'}")
    for args in (["retailers"], ["no-such-command"], ["users", "list", "--retailer-id", "x"],
                 ["clients", "create", "--retailer-id", "1"]):
        assert run.run(*args, database=False)[0] == 2
    assert "unsupported database URL 'mysql://x'" in run.fails(
        2, "retailers", "list", "--database", "mysql://x", database=False)
    assert run.fails(2, "sandbox", "create-user", "--email", "a@example.com", "--phone", "1",
                     "--password", "p", "--count", "0") == "--count must be at least 1"


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    run = CLI(capsys)
    assert run.ok("--version").strip() == f"connectlink {__version__}"
    top = run.ok("--help")
    for name in ("serve", "db", "retailers", "clients", "users", "sandbox", "links", "audit",
                 "link"):
        assert f"\n    {name}" in top
    assert "5  unreachable" in top


def test_serve_help_describes_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    serve = parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    options = [a for a in serve._actions if a.option_strings and "--help" not in a.option_strings]
    assert {o.option_strings[0] for o in options} == {
        "--database", "--host", "--port", "--profile", "--workers", "--migrate",
        "--no-access-log", "--no-demo", "--redis", "--forwarded-allow-ips", "--shutdown-timeout",
        "--log-format", "--no-metrics"}
    # argparse wraps to the terminal, at spaces and after hyphens: compare without whitespace
    shown = "".join(CLI(capsys).ok("serve", "--help").split())
    for option in options:
        assert option.help and option.option_strings[0] in shown
        assert "".join(option.help.split()) in shown
    for default in ("(default: 127.0.0.1)", "(default: 8080)", "(default: 1)",
                    "(default: $CONNECTLINK_DATABASE_URL, else sqlite:///var/connectlink.db)"):
        assert "".join(default.split()) in shown


# the schema ----------------------------------------------------------------------------
def test_a_new_empty_database_gets_the_schema(run: CLI, database_url: str) -> None:
    created = _shop(run)
    assert created["retailer_id"] == 1
    versions = [m.version for m in migrations.available(engine_of(database_url))]
    assert [v for (v,) in query_sql(
        database_url, "SELECT version FROM schema_migrations ORDER BY version")] == versions
    status = run.json("db", "status")
    assert (status["version"], status["pending"], status["current"]) == (versions[-1], [], True)
    assert "pending:  none" in run.ok("db", "status")


def test_a_database_holding_other_tables_is_not_touched(run: CLI, database_url: str) -> None:
    execute_sql(database_url, "CREATE TABLE someone_elses (x INTEGER)")
    assert "schema is at version 0" in run.fails(4, "retailers", "list")
    exists = ("SELECT count(*) FROM sqlite_master WHERE name = 'schema_migrations'"
              if engine_of(database_url) == "sqlite"
              else "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() "
                   "AND tablename = 'schema_migrations'")
    assert query_sql(database_url, exists) == [(0,)]


def _at_version_1(url: str) -> None:
    asyncio.run(using_store(url, lambda store: migrations.upgrade(store, target=1), "as-is"))


def test_an_old_schema_is_refused_until_upgraded(run: CLI, database_url: str) -> None:
    """Exit 4 (was 2); the hint names the command as it runs from here."""
    _at_version_1(database_url)
    latest = migrations.latest(engine_of(database_url))
    refusal = (f"the database schema is at version 1, this ConnectLink needs version {latest}: "
               f"run `{program()} db upgrade --database {shlex.quote(database_url)}`, or serve "
               "with --migrate")
    assert run.fails(4, "retailers", "create", "--name", "x", "--redirect-uri", NEW) == refusal
    assert run.fails(4, "db", "status") == refusal
    code, out, err = run.run("db", "status", "--json")
    status = json.loads(out)
    assert (code, status["current"], status["version"]) == (4, False, 1)
    assert status["pending"] == list(range(2, latest + 1))
    assert err == f"connectlink: {refusal}\n"
    assert run.ok("db", "upgrade").startswith("applied 2, 3")
    assert run.json("db", "upgrade") == {"applied": [], "version": latest}
    assert run.ok("db", "upgrade").strip() == "already up to date"
    assert _shop(run)["retailer_id"] == 1


def test_serve_refuses_an_old_schema(run: CLI, database_url: str) -> None:
    _at_version_1(database_url)
    assert run.fails(4, "serve", "--port", "1").endswith(
        "db upgrade --database " + shlex.quote(database_url) + "`, or serve with --migrate")
    done = subprocess.run(
        [sys.executable, "-m", "connectlink", "serve", "--port", "1", "--database", database_url],
        capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 4
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1


# setup mistakes: one line, exit 5 -----------------------------------------------------------
def _postgres(database: str, user: str = "postgres", password: str | None = None) -> str:
    server = urlsplit(POSTGRES)
    credentials = f"{user}:{password}" if password else user
    return f"postgresql://{credentials}@{server.hostname}:{server.port or 5432}/{database}"


COMMANDS = [["retailers", "list"], ["db", "upgrade"], ["db", "status"], ["serve", "--port", "1"],
            ["users", "list", "--retailer-id", "1"]]


def test_a_postgres_database_or_role_that_does_not_exist(
    capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    missing_db = _postgres("no_such_db_xyz")
    for command in COMMANDS:
        assert CLI(capsys, missing_db).fails(5, *command) == (
            f'cannot open the database {missing_db}: database "no_such_db_xyz" does not exist')
    missing_role = _postgres("test", "nobody_xyz", "hunter2-not-for-printing")
    line = CLI(capsys, missing_role).fails(5, "retailers", "list")
    assert line == (f"cannot open the database {_postgres('test', 'nobody_xyz', '***')}: "
                    'role "nobody_xyz" does not exist')
    done = subprocess.run([sys.executable, "-m", "connectlink", "db", "upgrade", "--database",
                           missing_role], capture_output=True, text=True, check=False)
    assert done.returncode == 5
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and 'role "nobody_xyz"' in done.stderr


def test_an_sqlite_path_that_cannot_hold_a_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cases = {"/proc/nope/x.db": "its directory /proc/nope cannot be created",
             "/dev/null/x.db": "/dev/null is not a directory",
             str(tmp_path): "it cannot be opened or created there"}
    for path, cause in cases.items():
        url = f"sqlite:///{path}"
        for command in COMMANDS:
            assert CLI(capsys, url).fails(5, *command).startswith(
                f"cannot open the database {url}: {cause}")
    done = subprocess.run([sys.executable, "-m", "connectlink", "retailers", "list",
                           "--database", "sqlite:////proc/nope/x.db"],
                          capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr.count("\n")) == (5, 1)


def test_a_read_only_sqlite_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Root writes through any mode bits, so the file is made immutable instead."""
    url = f"sqlite:///{tmp_path / 'ro.db'}"
    run = CLI(capsys, url)
    run.ok("db", "upgrade")
    if subprocess.run(["chattr", "+i", str(tmp_path / "ro.db")], check=False,
                      capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        assert run.fails(5, "retailers", "create", "--name", "x", "--redirect-uri", NEW) == (
            f"cannot open the database {url}: the file is read-only")
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "ro.db")], check=True)


# retailers and clients ------------------------------------------------------------------------
def test_retailers_list_and_show(run: CLI) -> None:
    assert run.ok("retailers", "list").startswith("No retailers yet. `")
    assert run.json("retailers", "list") == []
    first, second = _shop(run, "Garden"), _shop(run, "Bakery", NEW, "https://b.example/cb")
    extra = run.json("clients", "create", "--retailer-id", "1", "--redirect-uri",
                     "https://staging.example/cb", "--require-pkce")
    listed = run.json("retailers", "list")
    assert [(r["retailer_id"], r["name"], r["users"], r["links"]) for r in listed] == [
        (1, "Garden", 0, 0), (2, "Bakery", 0, 0)]
    assert [c["client_id"] for c in listed[0]["clients"]] == [first["client_id"],
                                                             extra["client_id"]]
    assert listed[1]["clients"][0]["redirect_uris"] == [NEW, "https://b.example/cb"]
    table = run.ok("retailers", "list").splitlines()
    assert table[0].split() == ["RETAILER", "NAME", "USERS", "LINKS", "CLIENT_ID",
                                "REDIRECT_URIS"]
    assert table[3].split() == ["2", "Bakery", "0", "0", second["client_id"], NEW,
                                "https://b.example/cb"]
    shown = run.json("retailers", "show", "--retailer-id", "1")
    assert shown == {**listed[0], "clients": shown["clients"]}
    assert shown["clients"][1]["require_pkce"] is True
    text = run.ok("retailers", "show", "--retailer-id", "1")
    assert f"client {first['client_id']}\n  redirect URIs: {NEW}" in text
    assert "PKCE required: yes" in text and "users:    0 (0 linked)" in text
    assert first["client_secret"] not in text + json.dumps(listed)
    assert run.fails(3, "retailers", "show", "--retailer-id", "9") == "there is no retailer 9"


def test_clients_create_list_and_add_redirect_uri(run: CLI, database_url: str) -> None:
    shop = _shop(run)
    created = run.json("clients", "create", "--retailer-id", "1", "--redirect-uri", NEW)
    assert list(created) == ["retailer_id", "client_id", "client_secret"]
    stored = asyncio.run(using_store(database_url,
                                     lambda store: store.get_client(created["client_id"])))
    assert stored is not None and security.matches(created["client_secret"], stored.secret_digest)
    human = run.ok("clients", "create", "--retailer-id", "1", "--redirect-uri", NEW)
    assert re.search(r"^client_secret: \S{43}$", human, re.M)
    assert "clients rotate-secret --client-id" in human
    assert [c["client_id"] for c in run.json("clients", "list", "--retailer-id", "1")][:2] == [
        shop["client_id"], created["client_id"]]
    assert len(run.json("clients", "list")) == 3
    assert created["client_id"] in run.ok("clients", "list")

    added = run.json("clients", "add-redirect-uri", "--client-id", created["client_id"],
                     "--redirect-uri", "https://other.example/cb")
    assert (added["added"], added["redirect_uris"]) == (True, [NEW, "https://other.example/cb"])
    again = run.ok("clients", "add-redirect-uri", "--client-id", created["client_id"],
                   "--redirect-uri", "https://other.example/cb")
    assert again.startswith("already registered: https://other.example/cb")

    assert run.fails(3, "clients", "create", "--retailer-id", "9", "--redirect-uri", NEW) == (
        "there is no retailer 9")
    assert run.fails(3, "clients", "list", "--retailer-id", "9") == "there is no retailer 9"
    for command in (["rotate-secret"], ["add-redirect-uri", "--redirect-uri", NEW]):
        assert run.fails(3, "clients", *command, "--client-id", "nope") == (
            "there is no client 'nope'")
    for bad in ("/relative/cb", "https://a.example/cb#x", "https:///no-host", "https://a b/"):
        assert bad in run.fails(4, "clients", "add-redirect-uri", "--client-id",
                                shop["client_id"], "--redirect-uri", bad)
    refusals = {
        "javascript:alert(1)": "is not https",
        "data:text/html,hi": "is not https",
        "com.shop.app:/cb": "is not https",
        "http://*.example/cb": "not loopback",
        "https://*.shop.example/cb": "has a wildcard",
        "https://shop.example/cb/*": "has a wildcard",
        "http://shop.example/cb": "not loopback",
        "https://user:pw@shop.example/cb": "has user info",
        "http://localhost:abc/cb": "is not a URI",
    }
    for bad, reason in refusals.items():
        assert reason in run.fails(4, "clients", "add-redirect-uri", "--client-id",
                                   shop["client_id"], "--redirect-uri", bad)
        assert reason in run.fails(4, "retailers", "create", "--name", "x",
                                   "--redirect-uri", bad)
    for loopback in ("http://localhost:3000/cb", "http://127.0.0.1/cb", "http://[::1]:8/cb"):
        assert run.json("clients", "add-redirect-uri", "--client-id", shop["client_id"],
                        "--redirect-uri", loopback)["added"] is True
    assert "has a fragment" in run.fails(4, "retailers", "create", "--name", "x",
                                         "--redirect-uri", "https://a.example/#f")
    assert "needs a name" in run.fails(4, "retailers", "create", "--name", " ",
                                       "--redirect-uri", NEW)


def test_rotate_secret_over_http(capsys: pytest.CaptureFixture[str], emulator: Emulator,
                                 shop: Retailer) -> None:
    run = CLI(capsys, emulator.database_url)
    assert shop.token_request(grant_type="client_credentials").status_code == 200
    rotated = run.json("clients", "rotate-secret", "--client-id", shop.client_id)
    assert rotated["client_id"] == shop.client_id
    renewed = Retailer(emulator.http, rotated, shop.redirect_uris)
    assert shop.token_request(grant_type="client_credentials").status_code == 401
    assert renewed.token_request(grant_type="client_credentials").status_code == 200

    printed = run.ok("clients", "rotate-secret", "--client-id", shop.client_id)
    secret = re.findall(r"^client_secret: (\S+)$", printed, re.M)[0]
    assert renewed.token_request(grant_type="client_credentials").status_code == 401
    again = Retailer(emulator.http, {**rotated, "client_secret": secret}, shop.redirect_uris)
    assert again.token_request(grant_type="client_credentials").status_code == 200
    stored, as_stored = stored_bytes(emulator.database_url)
    assert secret.encode() not in stored
    assert as_stored(hashlib.sha256(secret.encode()).digest()) in stored


# users, sandbox, links, audit -------------------------------------------------------------------
def test_users_list_and_show(capsys: pytest.CaptureFixture[str], emulator: Emulator,
                             shop: Retailer) -> None:
    run, retailer = CLI(capsys, emulator.database_url), str(shop.credentials["retailer_id"])
    account = shop.instacart_user("s@example.com")
    for user_id in ("42", "7", "9"):
        shop.create_user(user_id, last_name="smith")
    shop.link("42", shop.linking_token(account))
    emulator.run(lambda store: users.request_privacy(  # by the real clock, as the CLI reads it
        store, SystemClock(), 30 * 86_400, int(retailer), "9"))

    listed = run.json("users", "list", "--retailer-id", retailer)
    assert [(u["user_id"], u["state"], u["active"]) for u in listed] == [
        ("42", "linked", True), ("7", "not linked", True), ("9", "not active", False)]
    assert listed[0]["instacart_user"]["id"] == account
    assert listed[0]["instacart_user"]["instacartplus_member"] is True
    assert [u["user_id"] for u in run.json("users", "list", "--retailer-id", retailer,
                                           "--limit", "1")] == ["42"]
    rows = [line.split() for line in run.ok("users", "list", "--retailer-id", retailer)
            .splitlines()]
    assert rows[1] == ["42", "John", "Smith", "linked", str(account), "yes"]
    assert rows[3] == ["9", "John", "Smith", "not", "active", "-", "no"]

    shown = run.json("users", "show", "--retailer-id", retailer, "--user-id", "42")
    assert shown == {**listed[0]}
    text = run.ok("users", "show", "--retailer-id", retailer, "--user-id", "7")
    assert "state: not linked" in text and "first_name: John" in text and "active: yes" in text
    assert "instacartplus_member: yes" in run.ok("users", "show", "--retailer-id", retailer,
                                                 "--user-id", "42")
    counts = run.json("retailers", "show", "--retailer-id", retailer)
    assert (counts["users"], counts["links"]) == (3, 1)

    assert run.fails(3, "users", "show", "--retailer-id", retailer, "--user-id", "nobody") == (
        f"retailer {retailer} has no user 'nobody'")
    assert run.fails(3, "users", "list", "--retailer-id", "99") == "there is no retailer 99"
    assert run.fails(4, "users", "list", "--retailer-id", retailer, "--limit", "0")


def test_sandbox_create_user(run: CLI, database_url: str) -> None:
    made = run.json("sandbox", "create-user", "--email", "Plus@Example.com", "--phone",
                    "+18005550100", "--password", "a password", "--plus")
    assert (made["email"], made["instacartplus_member"]) == ("plus@example.com", True)
    found = asyncio.run(using_store(database_url,
                                    lambda store: store.get_instacart_login("plus@example.com")))
    assert found is not None and found[0].id == made["id"]
    assert found[1].startswith("$argon2id$") and security.verify_password(found[1], "a password")
    plain = run.ok("sandbox", "create-user", "--email", "plain@example.com", "--phone", "1",
                   "--password", "pw")
    assert re.fullmatch(r"created Instacart user \d+: plain@example\.com \(no Instacart\+\)\n",
                        plain)
    several = run.json("sandbox", "create-user", "--email", "many@example.com", "--phone", "1",
                       "--password", "pw", "--count", "3")
    assert [a["email"] for a in several] == [f"many+{n}@example.com" for n in (1, 2, 3)]
    assert run.fails(4, "sandbox", "create-user", "--email", "plain@example.com", "--phone", "1",
                     "--password", "pw") == "email: An account already exists with this email"
    assert run.fails(4, "sandbox", "create-user", "--email", "nope", "--phone", "",
                     "--password", "pw") == "email: is invalid; phone: can't be blank"


def test_operator_unlink_and_audit(capsys: pytest.CaptureFixture[str], emulator: Emulator,
                                   shop: Retailer) -> None:
    """``audit`` prints a table now; ``--json`` gives the JSON lines it printed before."""
    run, retailer = CLI(capsys, emulator.database_url), str(shop.credentials["retailer_id"])
    assert run.ok("audit", "--retailer-id", retailer).startswith("Retailer 1 has no audit")
    account = shop.instacart_user("s@example.com")
    shop.create_user("42")
    shop.link("42", shop.linking_token(account))
    assert run.ok("links", "unlink", "--retailer-id", retailer, "--user-id", "42") == "unlinked\n"
    assert shop.membership("42").json()["error"]["message"] == "User Not Linked"
    assert run.json("links", "unlink", "--retailer-id", retailer, "--user-id", "42") == {
        "retailer_id": 1, "user_id": "42", "unlinked": False}
    assert run.ok("links", "unlink", "--retailer-id", retailer, "--user-id", "42").startswith(
        "not linked")
    _, out, _ = run.run("audit", "--retailer-id", retailer, "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["action"], e["user_id"], e["instacart_user_id"]) for e in events] == [
        ("link", "42", account), ("unlink", "42", account)]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["at"]) for e in events)
    table = [line.split() for line in run.ok("audit", "--retailer-id", retailer).splitlines()]
    assert [row[1:] for row in table] == [["ACTION", "USER_ID", "INSTACART_USER"],
                                          ["link", "42", str(account)],
                                          ["unlink", "42", str(account)]]
    assert run.fails(3, "audit", "--retailer-id", "9") == "there is no retailer 9"
    assert run.fails(3, "links", "unlink", "--retailer-id", "9", "--user-id", "42") == (
        "there is no retailer 9")


# serve and link demo, against real servers ---------------------------------------------------
def test_serve_says_what_it_serves(database_url: str) -> None:
    served = ServeProcess(database_url, "--no-demo")
    output = served.stop()
    assert (f"ConnectLink {__version__}: emulator profile, sandbox on, database {database_url}, "
            f"serving http://127.0.0.1:{served.port} (1 worker)") in output


def test_serve_on_a_database_with_retailers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    cli("retailers", "create", "--name", "Garden", "--redirect-uri", NEW, "--database", url)
    served = ServeProcess(url, "--profile", "production", env={"CONNECTLINK_SECRET_KEY":
                                                               SECRET_KEY})
    assert "production profile, sandbox off" in served.stop()
    again = ServeProcess(url).stop()  # retailers already there: the hints must work as printed
    hint = re.findall(r"`([^`]*retailers list[^`]*)`", again)[0]
    assert hint == f"{program()} retailers list --database {url}"
    listed = subprocess.run(shlex.split(hint), capture_output=True, text=True, check=False)
    assert listed.returncode == 0 and "Garden" in listed.stdout


def test_serve_masks_the_password(postgres_url: str) -> None:
    with_password = postgres_url.replace("postgres@", "postgres:topsecret-pw@", 1)
    assert with_password != postgres_url  # trust auth: the password is sent, and ignored
    output = ServeProcess(with_password, "--no-demo").stop()
    assert "database postgresql://postgres:***@" in output and "topsecret" not in output


TOKENISH = re.compile(r"[A-Za-z0-9_\-]{22,}")  # what a token, code or password looks like
STEPS = ["client_credentials token", "create a Connect user",
         "sandbox Instacart user, an Instacart+ member", "sandbox authorize, PKCE S256",
         "exchange the code for a linking token", "link the Instacart account",
         "Instacart+ membership of the link"]


def _without_secrets(output: str, client: dict[str, Any], made: list[str]) -> None:
    """No secret in ``output``: not the client's, not those the demo made (``made``), and no
    token-like run of characters but the client id and the (public) PKCE challenges."""
    for secret in [client["client_secret"], *made]:
        assert secret not in output
    challenges = set(re.findall(r'"code_challenge": "([^"]+)"', output))
    assert set(TOKENISH.findall(output)) <= {client["client_id"], *challenges}


def test_link_demo(capsys: pytest.CaptureFixture[str], database_url: str,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    run = CLI(capsys, database_url)
    client = _shop(run, "Demo", REDIRECT_URI)
    made: list[str] = []
    real = secrets.token_urlsafe
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n=None: made.append(real(n)) or made[-1])
    served = ServeProcess(database_url, "--no-demo")
    try:
        demo = ["link", "demo", "--base-url", served.url, "--client-id", client["client_id"],
                "--redirect-uri", REDIRECT_URI]
        out = run.ok(*demo, "--client-secret", client["client_secret"], database=False)
        for number, title in enumerate(STEPS, 1):
            assert f"[{number}/7] {title}\n" in out
        assert out.count("  < 200 OK\n") == 7
        assert '"instacartplus_member": true' in out.splitlines()[-1]
        steps = [json.loads(line) for line in run.ok(
            *demo, "--client-secret", client["client_secret"], "--json",
            database=False).splitlines()]
        assert [(s["step"], s["title"], s["response"]["status"]) for s in steps] == [
            (n, title, 200) for n, title in enumerate(STEPS, 1)]
        for step in steps:
            for body in (step["request"]["body"] or {}, step["response"]["body"]):
                for key in {"client_secret", "access_token", "code", "linking_token",
                            "password", "code_verifier"} & set(body):
                    assert re.fullmatch(r"(\S{4})?…\(\d+\)", body[key]), (key, body[key])
        assert len(made) == 4  # a verifier and a password a run
        _without_secrets(out + json.dumps(steps, ensure_ascii=False), client, made)

        code, out, err = run.run(*demo, "--client-secret", "wrong", database=False)
        assert (code, out.count("  < 401 Unauthorized\n")) == (4, 1)
        assert err.startswith("connectlink: step 1 (client_credentials token) failed: 401 ")
        code, out, err = run.run("link", "demo", "--base-url", served.url, "--client-id",
                                 client["client_id"], "--client-secret", client["client_secret"],
                                 "--redirect-uri", "https://unregistered.example/cb",
                                 database=False)
        assert code == 4 and '"meta": {"key": "redirect_uri"}' in out
        assert err.startswith("connectlink: step 4 (sandbox authorize, PKCE S256) failed: 400")
        _without_secrets(out + err, client, made)
    finally:
        served.stop()
    assert run.fails(5, *demo, "--client-secret", client["client_secret"], database=False
                     ).startswith(f"cannot reach the server at {served.url}")


def test_hints_use_a_program_that_runs(capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    run = CLI(capsys, f"sqlite:///{tmp_path / 'h.db'}")
    out = run.ok("retailers", "create", "--name", "x", "--redirect-uri", NEW)
    hint = re.findall(r"`([^`]+)` makes a new one", out)[0]
    assert hint.startswith(program() + " clients rotate-secret --client-id ")
    done = subprocess.run([*shlex.split(hint), "--json"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["retailer_id"] == 1


def test_serve_refuses_impossible_settings_before_doing_anything(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad ports and worker counts are usage errors; a taken address is refused before the
    demo retailer is made or a banner printed; a bad number in a variable names it."""
    run = CLI(capsys, f"sqlite:///{tmp_path / 's.db'}")
    for args in (["--port", "99999"], ["--port", "-1"], ["--workers", "0"]):
        code, _, err = run.run("serve", *args)
        assert code == 2 and "serve: error: argument" in err, (code, err)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert "Address already in use" in run.fails(4, "serve", "--port", port)
    assert not (tmp_path / "s.db").exists()  # nothing was created
    monkeypatch.setenv("CONNECTLINK_POOL_SIZE", "abc")
    assert run.fails(2, "serve") == "CONNECTLINK_POOL_SIZE must be a whole number, not 'abc'"
    monkeypatch.setenv("CONNECTLINK_POOL_SIZE", "0")
    assert run.fails(2, "serve") == "CONNECTLINK_POOL_SIZE must be more than 0, not 0"
    monkeypatch.setenv("CONNECTLINK_POOL_SIZE", "4")
    monkeypatch.setenv("CONNECTLINK_HEADER_TIMEOUT", "nan")  # would time out every request
    assert run.fails(2, "serve") == "CONNECTLINK_HEADER_TIMEOUT must be more than 0, not nan"


def test_an_empty_sqlite_path_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """``sqlite:///$UNSET`` would be SQLite's throwaway database: a usage error instead."""
    run = CLI(capsys, "sqlite:///")
    assert "not a SQLite URL with a path" in run.fails(2, "retailers", "list")


def test_a_search_path_naming_no_schema_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"{POSTGRES}?search_path=cl_no_such_schema_{uuid.uuid4().hex[:8]}"
    run = CLI(capsys, url)
    for command in (["db", "upgrade"], ["db", "status"], ["retailers", "list"]):
        assert "search_path names no schema that exists" in run.fails(5, *command)


def test_an_id_past_64_bits_is_a_usage_error(run: CLI) -> None:
    code, _, err = run.run("users", "list", "--retailer-id", "9" * 20)
    assert code == 2 and "not a number from 0 to 2^63-1" in err, (code, err)
