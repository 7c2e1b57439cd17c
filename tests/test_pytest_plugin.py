"""The ``connectlink_emulator`` fixture (``connectlink.pytest_plugin``), used as a retailer uses
it: the example module in ``retailer_example/`` run by pytest in a directory of its own, on each
engine, and the fixture itself in this suite (which loads the plugin like any other run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from connectlink.client import ConnectClient, ServiceUnavailable, UserNotFound
from connectlink.testing import EmulatedRetailer, RetailerClock, RetailerFaults

EXAMPLE = Path(__file__).parent / "retailer_example" / "checkout_tests.py"


def run_retailer_suite(directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """pytest on the example as a retailer's CI runs it: its own directory and rootdir, the
    plugin found through its entry point, nothing of this repository's tests on the path."""
    shutil.copy(EXAMPLE, directory / "test_checkout.py")
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *options,
         "test_checkout.py"],
        cwd=directory, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_a_retailer_suite_passes_on_its_own_database(tmp_path: Path) -> None:
    done = run_retailer_suite(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "7 passed" in done.stdout, done.stdout


def test_a_retailer_suite_passes_on_a_given_database(tmp_path: Path, database_url: str) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    done = run_retailer_suite(suite, f"--connectlink-database={database_url}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "7 passed" in done.stdout, done.stdout


def test_a_failing_retailer_test_fails(tmp_path: Path) -> None:
    """The fixture is no rubber stamp: a wrong expectation about the emulator fails."""
    (tmp_path / "test_wrong.py").write_text(
        "def test_unlinked_is_a_member(connectlink_emulator):\n"
        "    connectlink_emulator.client.users.create('c', 'x')\n"
        "    assert connectlink_emulator.client.users.get_link('c').instacartplus_member\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_wrong.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "UserNotLinked" in done.stdout


def test_the_fixture_in_this_suite(connectlink_emulator: EmulatedRetailer) -> None:
    connect = connectlink_emulator.client
    assert isinstance(connect, ConnectClient)
    assert connectlink_emulator.client_id and connectlink_emulator.client_secret
    assert connectlink_emulator.redirect_uri.startswith("https://")
    account = connectlink_emulator.sandbox_shopper(plus=True)
    connect.users.create("u1", "jane")
    connect.users.link("u1", connectlink_emulator.linking_token(account))
    assert connect.users.get_link("u1").instacartplus_member
    with pytest.raises(UserNotFound):
        connect.users.get("someone else")


def test_the_fixture_s_clock_is_its_retailer_s(connectlink_emulator: EmulatedRetailer) -> None:
    """``clock`` moves this retailer's virtual clock through the admin plane (in process, with
    the emulator's own admin token), in ``ManualClock``'s terms: seconds since the epoch."""
    clock, plane = connectlink_emulator.clock, connectlink_emulator.client.emulator.clock
    assert isinstance(clock, RetailerClock)
    other = connectlink_emulator.emulator.retailer()
    start = clock.now()
    assert start == connectlink_emulator.emulator.clock.now()  # the server's, until moved
    assert clock.advance(3600) == start + 3600
    assert clock.now() == start + 3600
    assert plane.get(connectlink_emulator.retailer_id).offset_seconds == 3600.0
    assert plane.get(other.retailer_id).offset_seconds == 0.0  # another retailer's: unmoved
    assert clock.set("2030-01-01T00:00:00Z") == 1_893_456_000.0
    assert clock.freeze() == 1_893_456_000.0 and clock.state().frozen
    connectlink_emulator.emulator.clock.advance(60)  # the server's time runs; a frozen one not
    assert clock.now() == 1_893_456_000.0
    assert clock.unfreeze() == 1_893_456_000.0 and not clock.state().frozen
    assert clock.reset() == connectlink_emulator.emulator.clock.now()
    other.client.close()


def test_the_fixture_s_faults_are_its_retailer_s(connectlink_emulator: EmulatedRetailer) -> None:
    faults, connect = connectlink_emulator.faults, connectlink_emulator.client
    assert isinstance(faults, RetailerFaults)
    other = connectlink_emulator.emulator.retailer()
    connect.users.create("u1", "jane")
    theirs = connect.emulator.faults.add("GET /v2/fulfillment/users/{user_id}", 500,
                                         retailer_id=other.retailer_id)
    mine = faults.add("GET /v2/fulfillment/users/{user_id}", 503, retry_after=0)
    assert [rule.id for rule in faults.list()] == [mine]  # only this retailer's
    with pytest.raises(ServiceUnavailable):  # the SDK's retries ran out
        connect.users.get("u1")
    assert [e.fault for e in connectlink_emulator.journal(operation="get_user")] == ["503"] * 4
    assert faults.clear() == 1
    assert [rule.id for rule in connect.emulator.faults.list()] == [theirs]  # kept
    assert connect.users.get("u1").user_id == "u1"
    once = faults.add("GET /v2/fulfillment/users/{user_id}", "drop", times=1)
    assert connect.users.get("u1").user_id == "u1"  # a lost answer, and the SDK's retry
    [spent] = faults.list()
    assert (spent.id, spent.fired) == (once, 1)
    faults.delete(once)
    assert faults.list() == []
    by_client = connect.emulator.faults.add("POST /v2/oauth/token", 503,
                                            client_id=connectlink_emulator.client_id)
    assert [rule.id for rule in faults.list()] == [by_client]  # named by its client only
    assert faults.clear() == 1
    other.client.close()


def test_each_test_gets_a_fresh_emulator(tmp_path: Path) -> None:
    """Two tests in order in one process: the second sees nothing the first made."""
    (tmp_path / "test_order.py").write_text(
        "import pytest\n"
        "from connectlink.client import UserNotFound\n"
        "def test_first(connectlink_emulator):\n"
        "    connectlink_emulator.client.users.create('u1', 'jane')\n"
        "def test_second(connectlink_emulator):\n"
        "    with pytest.raises(UserNotFound):\n"
        "        connectlink_emulator.client.users.get('u1')\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", "-q",
         "test_order.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        check=False, env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout


def test_the_plugin_imports_nothing_of_the_server() -> None:
    """Every pytest run loads the plugin: importing it stays cheap."""
    code = ("import sys, connectlink.pytest_plugin; "
            "loaded = [m for m in sys.modules if m.startswith(('connectlink.', 'starlette', "
            "'httpx'))]; assert loaded == ['connectlink.pytest_plugin'], loaded")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
