"""The README keeps its promises: the curl walk-through runs as written against a real
``connectlink serve`` (again on the same database, and stopping, with the error in view, at a
wrong secret), and so do the command line's examples, which show every command; its tables name
every setting and exit code, and nothing in it points outside the repository. (The Python SDK's
examples: test_readme_sdk.py.)"""

from __future__ import annotations

import argparse
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
from connectlink import __version__
from connectlink.cli import parser
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


# The command line -------------------------------------------------------------------------------
CONNECTLINK = ROOT / ".venv" / "bin" / "connectlink"  # what the examples run, from ROOT
EXIT_ROW = re.compile(r"^\| `([0-9])` \| (.+) \|$", flags=re.M)
MASKED_SECRET = re.compile(r'"client_secret": "[^"]{4}…\(43\)"')


def cli_blocks() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", section("The command line"), flags=re.S)
    assert blocks[0].startswith("BASE="), "the first block sets the variables"
    return blocks[1:]


def cli_script() -> str:
    """The command line's blocks as one script that stops at the first failure. After each
    block it notes the client secret the shell holds, so that a test can look for it in what
    was printed."""
    lines = ["set -euo pipefail"]
    for number, block in enumerate(cli_blocks(), 1):
        lines += [f"echo '>>> block {number}' >&2", block,
                  'printf \'%s\\n\' "${CLIENT_SECRET:-}" >> "$SECRETS_SEEN"']
    return "\n".join(lines) + "\n"


def cli_commands(command: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    """Every runnable command of ``connectlink``: ``serve``, ``db status``..."""
    groups = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield " ".join(prefix)
        return
    for name, sub in groups[0].choices.items():
        yield from cli_commands(sub, (*prefix, name))


def test_readme_command_line_runs_as_written(tmp_path: Path) -> None:
    if shutil.which("jq") is None:
        pytest.fail("jq is needed by the README's command line examples (.ci/run installs jq)")
    assert CONNECTLINK.exists(), f"the examples run {CONNECTLINK.relative_to(ROOT)}: make run"
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    seen = tmp_path / "secrets"
    server = ServeProcess(url)  # as make run serves a new database: with the demo retailer
    try:
        done = subprocess.run(
            ["bash", "-c", cli_script()], cwd=ROOT, capture_output=True, text=True, timeout=180,
            check=False, env={**os.environ, "BASE": server.url, "CONNECTLINK_DATABASE_URL": url,
                              "SECRETS_SEEN": str(seen)})
    finally:
        server.stop()
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    out = done.stdout
    assert f"connectlink {__version__}\n" in out
    assert "pending:  none" in out
    for step in range(1, 8):
        assert f"[{step}/7] " in out, f"link demo did not print step {step}:\n{out}"
    assert out.count("  < 200 OK\n") == 7, out
    linked = json.loads(out.split("\nLinked: ", 1)[1].split("\n", 1)[0])
    assert linked["instacartplus_member"] is True
    assert MASKED_SECRET.search(out), "link demo shows the secret masked"
    secrets = {line for line in seen.read_text().splitlines() if line}
    assert secrets, "no block kept a client secret"
    for secret in secrets:
        assert secret not in out and secret not in done.stderr, "a kept secret was printed"
    assert re.search(r"^\S+Z +link +demo-\w+ +\d+$", out, flags=re.M), out
    assert re.search(r"^\S+Z +unlink +demo-\w+ +\d+$", out, flags=re.M), out
    assert "\nunlinked\n" in out
    assert out.endswith("exit 3\n"), out
    # Only the one failure the README shows, with its one line on stderr.
    failures = [line for line in done.stderr.splitlines() if line.startswith("connectlink:")]
    assert len(failures) == 1 and failures[0].endswith("has no user 'nobody'"), done.stderr


def test_readme_command_line_shows_every_command() -> None:
    shown = "".join(cli_blocks())
    everything = set(cli_commands(parser()))
    assert "serve" in everything and "link demo" in everything
    missing = sorted(name for name in everything - {"serve"}
                     if not re.search(rf"connectlink {name}(?= |$)", shown, flags=re.M))
    assert not missing, f"no README example runs: {missing}"
    assert ".venv/bin/connectlink --version" in shown
    assert "`connectlink serve`" in section("The command line")
    assert "--plus" in shown and "--json" in shown


def test_readme_exit_codes_are_the_cli_s() -> None:
    rows = EXIT_ROW.findall(section("The command line"))
    assert [code for code, _ in rows] == ["0", "2", "3", "4", "5"]
    told = cli("--help")
    for code, meaning in rows[1:]:
        assert f"  {code}  {meaning}\n" in told, (code, meaning)


def test_readme_a_new_database_gets_the_schema_but_not_from_db_status(tmp_path: Path) -> None:
    env = {**os.environ, "CONNECTLINK_DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CONNECTLINK), *args], capture_output=True, text=True,
                              timeout=60, check=False, env=env, cwd=ROOT)

    status = run("db", "status")
    assert status.returncode == 4 and "version:  0 " in status.stdout, status
    listed = run("retailers", "list")
    assert listed.returncode == 0 and listed.stdout.startswith("No retailers yet."), listed
    assert run("db", "status").returncode == 0
