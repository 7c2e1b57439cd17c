"""The README's Python SDK section keeps its promises: the flow and the asyncio examples run as
written against a real ``connectlink serve``, again and again on one database, printing what the
README says they print, and the fixture example passes as a retailer's own test file does, in a
directory of its own, with the plugin found through the installed package's entry point."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import upgraded
from support import ServeProcess, cli
from test_readme import DEMO_REDIRECT_URI, ROOT, section

PYTHON = ROOT / ".venv" / "bin" / "python"  # the venv the section runs them with
FENCE = re.compile(r"```(\w*)\n(.*?)```", flags=re.S)
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
# What a retailer's CI would not have: this repository's paths and pytest settings.
NOT_A_RETAILERS = {"PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}


def examples() -> list[tuple[str, str | None]]:
    """The section's ```python blocks, each with the ```text block right after it (what it
    prints), or None."""
    text = section("The Python SDK")
    fences = list(FENCE.finditer(text))
    found = []
    for index, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        after = fences[index + 1] if index + 1 < len(fences) else None
        printed = None
        if after is not None and after.group(1) == "text" and not (
            text[fence.end():after.start()].strip()
        ):
            printed = after.group(2)
        found.append((fence.group(2), printed))
    return found


def example(marker: str) -> tuple[str, str | None]:
    chosen = [pair for pair in examples() if marker in pair[0]]
    assert len(chosen) == 1, f"one python block with {marker!r} in the SDK section"
    return chosen[0]


def normalized(text: str) -> str:
    return TIMESTAMP.sub("<time>", text).strip()


def retailer_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in NOT_A_RETAILERS}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A server on a database of its own, and the variables the section says to export."""
    url = upgraded(f"sqlite:///{tmp_path_factory.mktemp('readme-sdk') / 'sdk.db'}")
    credentials: dict[str, Any] = json.loads(cli(
        "retailers", "create", "--name", "Demo", "--redirect-uri", DEMO_REDIRECT_URI,
        "--database", url, "--json"))
    server = ServeProcess(url, "--no-demo")
    try:
        yield {"BASE_URL": server.url, "CLIENT_ID": credentials["client_id"],
               "CLIENT_SECRET": credentials["client_secret"]}
    finally:
        server.stop()


def run_example(code: str, directory: Path, variables: dict[str, str]
                ) -> subprocess.CompletedProcess[str]:
    script = directory / "example.py"
    script.write_text(code)
    return subprocess.run([str(PYTHON), script.name], cwd=directory, capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**retailer_env(), **variables})


def test_readme_sdk_section_has_the_three_examples() -> None:
    assert PYTHON.exists(), f"the section runs {PYTHON.relative_to(ROOT)}: make run"
    assert len(examples()) == 3, "the flow, the asyncio example and the fixture example"
    for variable in ("BASE_URL", "CLIENT_ID", "CLIENT_SECRET"):
        assert f"{variable}=" in section("The Python SDK"), f"the section says to set {variable}"


@pytest.mark.parametrize("marker", ["with ConnectClient(", "asyncio.run("])
def test_readme_sdk_example_prints_what_the_readme_says(
    marker: str, served: dict[str, str], tmp_path: Path,
) -> None:
    code, printed = example(marker)
    assert printed is not None, "the README shows what the example prints"
    for run in ("first", "second"):  # a unique email each run: it runs again and again
        done = run_example(code, tmp_path, served)
        assert done.returncode == 0, f"the {run} run failed:\n{done.stdout}\n{done.stderr}"
        assert normalized(done.stdout) == normalized(printed), done.stdout
        assert served["CLIENT_SECRET"] not in done.stdout + done.stderr


def test_readme_sdk_flow_stops_at_a_wrong_secret(served: dict[str, str], tmp_path: Path) -> None:
    """Not a silent pass: with a secret the server refuses, the flow fails at once, and says
    why in the SDK's terms."""
    code, _ = example("with ConnectClient(")
    done = run_example(code, tmp_path, {**served, "CLIENT_SECRET": "not-the-client-secret"})
    assert done.returncode == 1 and done.stdout == "", done.stdout
    assert "connectlink.errors.InvalidClient" in done.stderr, done.stderr


def test_readme_fixture_example_passes_as_a_retailers_test(tmp_path: Path) -> None:
    code, _ = example("connectlink_emulator")
    promised = re.search(r"`pytest -q`: (\d+)\s+passed", section("The Python SDK"))
    assert promised is not None, "the section says how many tests pass"
    assert int(promised.group(1)) == code.count("\ndef test_")
    passes_as_a_retailers_tests(code, int(promised.group(1)), tmp_path)


def passes_as_a_retailers_tests(code: str, tests: int, directory: Path) -> None:
    """``code`` as a retailer's test file, run by pytest in a directory of its own (the plugin
    found through the installed package): all ``tests`` of it pass."""
    (directory / "test_example.py").write_text(code)
    done = subprocess.run([str(PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=directory, capture_output=True, text=True, timeout=180,
                          check=False, env=retailer_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{tests} passed" in done.stdout, done.stdout
