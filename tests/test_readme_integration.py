"""The README's "Testing your integration" keeps its promise: its retailer's test file passes as
a retailer's own does, in a directory of its own, with the plugin found through the installed
package's entry point (as test_readme_sdk runs the SDK section's fixture example)."""

from __future__ import annotations

import re
from pathlib import Path

from test_readme import section
from test_readme_sdk import FENCE, passes_as_a_retailers_tests

SECTION = "Testing your integration"


def test_the_retailers_tests_in_the_readme_pass(tmp_path: Path) -> None:
    text = section(SECTION)
    [code] = [fence.group(2) for fence in FENCE.finditer(text) if fence.group(1) == "python"]
    promised = re.search(r"`pytest -q`: (\d+) passed", text)
    assert promised is not None and int(promised.group(1)) == code.count("\ndef test_")
    passes_as_a_retailers_tests(code, int(promised.group(1)), tmp_path)


def test_the_section_names_the_wire_reference_and_it_exists() -> None:
    assert "docs/emulator.md" in section(SECTION)
    assert (Path(__file__).parent.parent / "docs" / "emulator.md").exists()
