"""Rate limits across workers (decisions.md "Rate limits"): how close two workers sharing
their buckets through Redis keep to one limit, and what a Redis outage midway lets through.

Everything runs on 127.0.0.1 and is bounded: a redis-server of this script's own on a free
port (stopped and started again for the outage; the machine's Redis is never touched), a
SQLite database in a temporary directory, ``connectlink serve --workers 2``, and one client
that sends ``3 x rate`` requests a second for ``--seconds`` from a few threads, a new
connection a request so that the kernel hands them to either worker. Prints a markdown table.

    .venv/bin/python bench/rate_limits.py [--rate 50] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import free_port, wait_listening

BIN = Path(sys.executable).parent
THREADS = 6
NOBODY = "/v2/fulfillment/users/nobody"  # a Connect read: 400 User Not Found when admitted


class Redis:
    """A redis-server of our own; ``stop`` and ``start`` again on the same port (empty)."""

    def __init__(self, directory: str) -> None:
        self.port, self.directory = free_port(), directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", self.directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@contextmanager
def serve(database_url: str, rate: float, redis_url: str | None) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "CONNECTLINK_RATE_LIMIT_API": str(rate),
           "CONNECTLINK_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:12]}:"}  # buckets of its own
    extra = ["--redis", redis_url] if redis_url else []
    process = subprocess.Popen(
        [str(BIN / "connectlink"), "serve", "--no-demo", "--no-access-log", "--workers", "2",
         "--port", str(port), "--database", database_url, *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_listening(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(30)


def bearer(base: str, database_url: str) -> str:
    made = json.loads(subprocess.run(
        [str(BIN / "connectlink"), "retailers", "create", "--name", "Bench", "--redirect-uri",
         "https://bench.example/callback", "--database", database_url, "--json"],
        capture_output=True, text=True, check=True).stdout)
    with httpx.Client(base_url=base, timeout=30) as http:
        for _ in range(10):  # both workers up before anything is counted (no bucket here)
            http.get("/openapi.json").raise_for_status()
        issued = http.post("/v2/oauth/token", json={
            "client_id": made["client_id"], "client_secret": made["client_secret"],
            "grant_type": "client_credentials"})
        issued.raise_for_status()
        return str(issued.json()["access_token"])


def drive(base: str, token: str, per_second: float, seconds: float) -> list[tuple[float, int]]:
    """(when sent, status) of each request, ``per_second`` in all from ``THREADS`` threads."""
    sent: list[tuple[float, int]] = []
    started = time.monotonic() + 0.1
    headers = {"Authorization": f"Bearer {token}"}
    total = int(per_second * seconds)

    def run(first: int) -> None:
        with httpx.Client(base_url=base, timeout=10, headers=headers,
                          limits=httpx.Limits(max_keepalive_connections=0)) as http:
            for i in range(first, total, THREADS):
                delay = started + i / per_second - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                at = time.monotonic() - started  # when it went, late or not
                sent.append((at, http.get(NOBODY).status_code))

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    unexpected = {status for _, status in sent} - {400, 429}
    if unexpected:
        raise SystemExit(f"unexpected statuses: {sorted(unexpected)}")
    return sent


def row(name: str, sent: list[tuple[float, int]], start: float, end: float, rate: float,
        allowed: float) -> str:
    """One phase: what was sent in [start, end), what was admitted, against what was due."""
    phase = [status for at, status in sent if start <= at < end]
    admitted, seconds = phase.count(400), end - start
    return (f"| {name} | {seconds:.1f} | {len(phase)} | {admitted} | {phase.count(429)} | "
            f"{admitted / seconds:.1f} | {rate:g} | {allowed:.0f} | "
            f"{admitted / allowed:.2f} |")


def rows_of(name: str, sent: list[tuple[float, int]], rate: float, seconds: float,
            outage: bool) -> list[str]:
    burst = max(1.0, 2 * rate)
    if not outage:
        return [row(f"2 workers, {name}", sent, 0, seconds, rate, burst + rate * seconds)]
    third = seconds / 3
    phases = [("before the outage", 0, third, burst + rate * third),
              ("Redis down", third, 2 * third, 3 * rate * third),  # everything, fail open
              ("Redis back (empty)", 2 * third, seconds, burst + rate * third)]
    total = sum(allowed for *_, allowed in phases)
    return [row(f"2 workers, {name}", sent, 0, seconds, rate, total),
            *(row(f"- {phase}", sent, start, end, rate, allowed)
              for phase, start, end, allowed in phases)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50, help="CONNECTLINK_RATE_LIMIT_API")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("needs redis-server")
    rate, seconds = args.rate, args.seconds
    rows = []
    with tempfile.TemporaryDirectory(prefix="connectlink-limits-") as scratch:
        redis = Redis(scratch)
        redis.start()
        try:
            for name, redis_url, outage in (("Redis", redis.url, False),
                                            ("Redis stopped midway", redis.url, True),
                                            ("no Redis (buckets per worker)", None, False)):
                database_url = f"sqlite:///{scratch}/{len(rows)}.db"
                with serve(database_url, rate, redis_url) as base:
                    token = bearer(base, database_url)
                    if outage:  # down for the middle third, then back (empty)
                        threading.Timer(seconds / 3 + 0.1, redis.stop).start()
                        threading.Timer(2 * seconds / 3 + 0.1, redis.start).start()
                    sent = drive(base, token, 3 * rate, seconds)
                rows.extend(rows_of(name, sent, rate, seconds, outage))
        finally:
            redis.stop()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, CPython "
          f"{platform.python_version()}; {3 * rate:g} requests/s sent for {seconds:g} s "
          f"(3x the limit), {THREADS} threads, a new connection a request, 127.0.0.1.\n")
    print("| scenario | s | sent | admitted | refused (429) | admitted/s | limit/s | "
          "allowed | admitted / allowed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print("\nallowed: the burst (2 x rate) plus rate x seconds; while Redis is down, every "
          "request sent (fail open).")


if __name__ == "__main__":
    main()
