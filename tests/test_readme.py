"""The README's curl walk-through, run as written against a real ``connectlink serve``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import upgraded
from support import ServeProcess, cli

README = Path(__file__).resolve().parent.parent / "README.md"
DEMO_REDIRECT_URI = "http://localhost:3000/account/instacart/callback"


def walkthrough_steps() -> list[str]:
    section = README.read_text().split("## Walk-through", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert blocks[0].startswith("BASE="), "the first block sets the variables"
    return blocks[1:]


def test_readme_walkthrough_runs(tmp_path: Path) -> None:
    if shutil.which("jq") is None:
        pytest.fail("jq is needed by the README walk-through (.ci/run installs it)")
    url = upgraded(f"sqlite:///{tmp_path / 'readme.db'}")
    credentials = json.loads(cli("retailers", "create", "--name", "Demo", "--redirect-uri",
                                 DEMO_REDIRECT_URI, "--database", url, "--json"))
    server = ServeProcess(url, "--no-demo")
    try:
        script = "set -euo pipefail\n" + "\necho\n".join(walkthrough_steps()) + "\necho\n"
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "BASE": server.url, "CLIENT_ID": credentials["client_id"],
                 "CLIENT_SECRET": credentials["client_secret"],
                 "REDIRECT_URI": DEMO_REDIRECT_URI},
        )
    finally:
        server.stop()
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert printed[0] == {"user_id": "shopper-42", "first_name": "John", "last_name": "Smith",
                          "phone_number": "+18005550100", "locale": "en-US"}
    assert printed[1] == {"success": True}
    assert printed[2]["instacartplus_member"] is True
    assert set(printed[2]) == {"express_member", "instacartplus_member", "expired_at"}
