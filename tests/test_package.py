"""A plain, non-editable install works anywhere: a wheel built from a clean copy of the
repository holds every file under ``src/``, and, installed in a fresh venv with its dependencies
from the package index, migrates a database, makes a retailer, serves and answers.

Slow (it builds a wheel and a venv), so it is one test; every step has a time limit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
REDIRECT_URI = "https://a.example/cb"


def run(*command: str | Path, timeout: float, **kwargs: object) -> str:
    """Run a command that must succeed within ``timeout`` seconds; its stdout."""
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                          timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return str(done.stdout)


def repository_files() -> list[str]:
    """The files a clone would hold: the tracked ones, and new ones git does not ignore (a
    module written but not yet committed is part of the package too), less deleted ones."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        message = "building the wheel from the repository's files needs git and a checkout"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    listed = run("git", "-C", REPO, "ls-files", "-z", "--cached", "--others",
                 "--exclude-standard", timeout=30)
    return sorted({path for path in listed.split("\0") if path and (REPO / path).is_file()})


def build_wheel(files: list[str], workdir: Path) -> Path:
    """``pip wheel`` of a copy holding only ``files``: no egg-info, cache or stray file helps."""
    source = workdir / "source"
    for path in files:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, source / path)
    dist = workdir / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
        "--quiet", "-w", dist, source, timeout=300)
    wheels = list(dist.glob("connectlink-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def fresh_venv(wheel: Path, workdir: Path) -> Path:
    """A new venv with the wheel installed, its dependencies from the package index."""
    venv = workdir / "venv"
    run(sys.executable, "-m", "venv", venv, timeout=120)
    run(venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check",
        "--quiet", wheel, timeout=600)
    return venv


def clean_environment() -> dict[str, str]:
    """This process's environment without what could point the venv back at the repository
    or configure ConnectLink behind the test's back."""
    return {name: value for name, value in os.environ.items()
            if name not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
            and not name.startswith("CONNECTLINK_")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(server: subprocess.Popen[str], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, f"connectlink serve exited:\n{log.read_text()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"connectlink serve was not listening after 30 s:\n{log.read_text()}")


def stop(server: subprocess.Popen[str]) -> None:
    """SIGINT to the server's process group, then SIGKILL if it has not gone in 15 s."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)


def check_served(base: str, credentials: dict[str, str]) -> None:
    """SQL (a token), templates (the login page) and assets (its stylesheet), as installed."""
    with httpx.Client(base_url=base, timeout=10) as http:
        token = http.post("/v2/oauth/token", json={
            "client_id": credentials["client_id"], "client_secret": credentials["client_secret"],
            "grant_type": "client_credentials", "scope": "connect:fulfillment"})
        assert token.status_code == 200, token.text
        assert token.json()["token_type"] == "Bearer"
        assert token.json()["scope"] == "connect:fulfillment"
        login = http.get("/oauth/authorize", params={
            "response_type": "code", "client_id": credentials["client_id"],
            "redirect_uri": REDIRECT_URI, "state": "s"})
        assert login.status_code == 200, login.text
        assert 'type="password"' in login.text
        stylesheet = http.get("/oauth/assets/connectlink.css")
        assert stylesheet.status_code == 200
        assert stylesheet.headers["content-type"].startswith("text/css")


def test_a_wheel_installs_and_serves_in_a_fresh_venv(tmp_path: Path) -> None:
    files = repository_files()
    wheel = build_wheel(files, tmp_path)
    shipped = set(zipfile.ZipFile(wheel).namelist())
    packaged = [path.removeprefix("src/") for path in files if path.startswith("src/")]
    assert any(path.endswith(".sql") for path in packaged), packaged
    missing = [path for path in packaged if path not in shipped]
    assert not missing, f"the wheel leaves out {missing}"

    venv = fresh_venv(wheel, tmp_path)
    env, cwd = clean_environment(), tmp_path  # nowhere near the repository's src/
    where = run(venv / "bin" / "python", "-c", "import connectlink; print(connectlink.__file__)",
                timeout=30, env=env, cwd=cwd)
    assert Path(where.strip()).is_relative_to(venv), where

    connectlink = venv / "bin" / "connectlink"
    database = f"sqlite:///{tmp_path / 'x.db'}"
    run(connectlink, "db", "upgrade", "--database", database, timeout=60, env=env, cwd=cwd)
    credentials = json.loads(run(
        connectlink, "retailers", "create", "--name", "X", "--redirect-uri", REDIRECT_URI,
        "--database", database, "--json", timeout=60, env=env, cwd=cwd))
    port, log = free_port(), tmp_path / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [str(connectlink), "serve", "--database", database, "--port", str(port),
             "--no-demo"],
            stdout=output, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd,
            start_new_session=True,  # its own process group, so stop() reaches every worker
        )
    try:
        wait_listening(server, port, log)
        check_served(f"http://127.0.0.1:{port}", credentials)
    finally:
        stop(server)
