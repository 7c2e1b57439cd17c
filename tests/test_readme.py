"""The README keeps its promises: the curl walk-through runs as written against a real
``connectlink serve`` (again on the same database, and stopping, with the error in view, at a
wrong secret), its table names every setting, and nothing in it points outside the repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import upgraded
from support import ServeProcess, cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DEMO_REDIRECT_URI = "http://localhost:3000/account/instacart/callback"
CREATED_USER = {"user_id": "shopper-42", "first_name": "John", "last_name": "Smith",
                "phone_number": "+18005550100", "locale": "en-US"}
# Where the code may read a variable: the package, and what runs around it.
SOURCES = ("src/connectlink", "tests", "bench", "examples")
VARIABLE = re.compile(r"\bCONNECTLINK_[A-Z][A-Z0-9_]*[A-Z0-9]\b")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
LINK = re.compile(r"\]\(([^)\s]+)\)")
PARENT = re.compile(r"(?<![.\w])\.\./")  # a path that climbs out (not an ellipsis: ".../")


def section(heading: str) -> str:
    """The text of the README's ``## heading...`` section, up to the next one."""
    return README.read_text().split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]


def walkthrough_script() -> str:
    """The walk-through's steps as one script that stops at the first failure, writing a
    marker to stderr as each step starts (the first block, the variables, comes from env)."""
    blocks = re.findall(r"```sh\n(.*?)```", section("Walk-through"), flags=re.S)
    assert blocks[0].startswith("BASE="), "the first block sets the variables"
    lines = ["set -euo pipefail"]
    for number, step in enumerate(blocks[1:], 1):
        lines += [f"echo '>>> step {number}' >&2", step, "echo"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    """A server on one database, and the credentials of a retailer made with the CLI."""
    for tool in ("jq", "curl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed by the README walk-through (.ci/run installs jq)")
    url = upgraded(f"sqlite:///{tmp_path_factory.mktemp('readme') / 'readme.db'}")
    credentials = json.loads(cli("retailers", "create", "--name", "Demo", "--redirect-uri",
                                 DEMO_REDIRECT_URI, "--database", url, "--json"))
    server = ServeProcess(url, "--no-demo")
    try:
        yield server.url, credentials
    finally:
        server.stop()


def walk(served: tuple[str, dict[str, Any]], **variables: str) -> subprocess.CompletedProcess[str]:
    base, credentials = served
    env = {**os.environ, "BASE": base, "CLIENT_ID": credentials["client_id"],
           "CLIENT_SECRET": credentials["client_secret"], "REDIRECT_URI": DEMO_REDIRECT_URI,
           **variables}
    return subprocess.run(["bash", "-c", walkthrough_script()], capture_output=True, text=True,
                          timeout=60, check=False, env=env)


def test_readme_walkthrough_runs_again_on_the_same_database(
    served: tuple[str, dict[str, Any]],
) -> None:
    for run in ("first", "second"):
        done = walk(served)
        assert done.returncode == 0, f"the {run} run failed:\n{done.stderr}"
        printed = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        assert len(printed) == 3, done.stdout
        assert printed[0] == CREATED_USER
        assert printed[1] == {"success": True}
        assert printed[2]["instacartplus_member"] is True
        assert set(printed[2]) == {"express_member", "instacartplus_member", "expired_at"}


def test_readme_walkthrough_stops_at_a_wrong_secret_and_shows_why(
    served: tuple[str, dict[str, Any]],
) -> None:
    done = walk(served, CLIENT_SECRET="not-the-client-secret")
    assert done.returncode != 0
    assert '"error":"invalid_client"' in done.stderr, done.stderr
    assert ">>> step 1" in done.stderr
    assert ">>> step 2" not in done.stderr, "a step ran after the token step failed"
    assert done.stdout.strip() == ""


def configuration_names(pattern: re.Pattern[str]) -> set[str]:
    """What the first column of the README's configuration table names."""
    rows = [line for line in section("Configuration").splitlines() if line.startswith("| `")]
    return {name for row in rows for name in pattern.findall(row.split(" | ")[0])}


def python_sources() -> Iterator[Path]:
    """The Python files of ``SOURCES``, less hidden folders and installed node packages."""
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            relative = path.relative_to(ROOT).parts
            if not any(part.startswith(".") or part == "node_modules" for part in relative):
                yield path


def test_readme_table_has_every_variable_the_code_reads() -> None:
    used = {name for path in python_sources()
            for name in VARIABLE.findall(path.read_text(errors="replace"))}
    documented = configuration_names(VARIABLE)
    assert "CONNECTLINK_DATABASE_URL" in used
    assert not used - documented, f"missing from the README table: {sorted(used - documented)}"
    assert not documented - used, f"read by no code: {sorted(documented - used)}"


def test_readme_table_has_every_serve_flag() -> None:
    offered = set(FLAG.findall(cli("serve", "--help"))) - {"--help"}
    documented = configuration_names(FLAG)
    assert "--database" in offered
    missing = sorted(offered - documented)
    assert not missing, f"missing from the README table: {missing}"
    assert not documented - offered, f"serve has no {sorted(documented - offered)}"


def test_readme_and_docs_point_only_inside_the_repository() -> None:
    for document in [README, *sorted((ROOT / "docs").rglob("*.md"))]:
        text = document.read_text()
        assert not PARENT.search(text), f"{document.name} points outside the repository"
        for target in LINK.findall(text):
            assert ":" not in target and not target.startswith("/"), (document.name, target)
            path = (document.parent / target.split("#", 1)[0]).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), (document.name, target)
