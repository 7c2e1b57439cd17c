"""The ``connectlink`` command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from connectlink import security
from connectlink.storage.sqlite import SQLiteStore
from support import cli


def test_retailers_create_json_prints_one_object(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    out = cli("retailers", "create", "--name", "Garden", "--redirect-uri", "https://a.example/cb",
              "--redirect-uri", "https://b.example/cb", "--database", url, "--json")
    lines = out.strip().splitlines()
    assert len(lines) == 1
    created = json.loads(lines[0])
    assert list(created) == ["retailer_id", "client_id", "client_secret"]
    assert isinstance(created["retailer_id"], int)

    store = SQLiteStore.from_url(url)
    client = asyncio.run(store.get_client(created["client_id"]))
    assert client is not None
    assert client.redirect_uris == ("https://a.example/cb", "https://b.example/cb")
    assert security.matches(created["client_secret"], client.secret_digest)


def test_database_url_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
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

