"""The ``connectlink`` command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from conftest import upgraded
from connectlink import security
from connectlink.storage import migrations, using_store
from support import Emulator, Retailer, cli, engine_of


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
    url = upgraded(f"sqlite:///{tmp_path / 'env.db'}")
    done = subprocess.run(
        [sys.executable, "-m", "connectlink", "retailers", "create", "--name", "x",
         "--redirect-uri", "https://a.example/cb", "--json"],
        capture_output=True, text=True, env={"CONNECTLINK_DATABASE_URL": url, "PATH": ""},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "env.db").exists()


def test_bad_database_url_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "connectlink", "retailers", "create", "--name", "x",
         "--redirect-uri", "https://a.example/cb", "--database", "mysql://nope"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 2
    assert "unsupported database URL" in done.stderr
    assert "Traceback" not in done.stderr



def test_operator_unlink_and_audit(emulator: Emulator, shop: Retailer) -> None:
    account = shop.instacart_user("s@example.com")
    shop.create_user("42")
    shop.link("42", shop.linking_token(account))
    retailer = str(shop.credentials["retailer_id"])
    url = emulator.database_url
    assert cli("links", "unlink", "--retailer-id", retailer, "--user-id", "42",
               "--database", url).strip() == "unlinked"
    assert shop.membership("42").json()["error"]["message"] == "User Not Linked"
    assert cli("links", "unlink", "--retailer-id", retailer, "--user-id", "42",
               "--database", url).startswith("not linked")
    events = [json.loads(line) for line in cli("audit", "--retailer-id", retailer,
                                               "--database", url).splitlines()]
    assert [(e["action"], e["user_id"], e["instacart_user_id"]) for e in events] == [
        ("link", "42", account), ("unlink", "42", account)]


def test_unlink_of_an_unknown_user_fails(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "connectlink", "links", "unlink", "--retailer-id", "1",
         "--user-id", "nobody", "--database", upgraded(f"sqlite:///{tmp_path / 'x.db'}")],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 1
    assert "no user 'nobody'" in done.stderr


def test_an_old_schema_is_refused_until_upgraded(database_url: str) -> None:
    args = [sys.executable, "-m", "connectlink", "retailers", "create", "--name", "x",
            "--redirect-uri", "https://a.example/cb", "--database", database_url, "--json"]
    refused = subprocess.run(args, capture_output=True, text=True, check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "connectlink: the database schema is at version 0, this ConnectLink needs version "
        f"{migrations.latest(engine_of(database_url))}: run `connectlink db upgrade`, or serve "
        "with --migrate")
    assert cli("db", "upgrade", "--database", database_url).startswith("applied 1, 2")
    assert cli("db", "upgrade", "--database", database_url).strip() == "already up to date"
    assert subprocess.run(args, capture_output=True, check=False).returncode == 0


def test_serve_refuses_an_old_schema(database_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "connectlink", "serve", "--port", "1", "--database", database_url],
        capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "run `connectlink db upgrade`, or serve with --migrate" in done.stderr
    assert "Traceback" not in done.stderr

