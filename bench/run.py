"""``make bench``: ConnectLink against a bare ASGI baseline and against Prism, in one run.

Every server is started here, pinned with ``taskset`` (server on CPU 1, wrk on CPU 0), warmed
up, driven by wrk with 64 connections for a bounded time on 127.0.0.1 only, and stopped. Every
figure is a ratio to the baseline measured in the same run; the baseline runs first and last to
show the noise. A scenario with any unexpected status or socket error is not a result: the run
fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
LUA = HERE / "lua"
SERVER_CPU, LOAD_CPU = "1", "0"
CONNECTIONS = 64
PRISM = HERE / ".prism" / "node_modules" / ".bin" / "prism"
POSTGRES = os.environ.get("CONNECTLINK_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

sys.path.insert(0, str(HERE))
import seed  # noqa: E402


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    baseline: str = "baseline"

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on {port}")


@contextlib.contextmanager
def server(command: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """A server pinned to SERVER_CPU, in its own process group, stopped on the way out."""
    process = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *command], cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_listening(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wrk(url: str, script: str, seconds: int, env: dict[str, str]) -> tuple[int, float, float,
                                                                             float]:
    """(requests, seconds, p50 ms, p99 ms) of one wrk run; raises if any response was wrong."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s",
             "--timeout", "10s", "-s", str(LUA / script), url],
            env={**os.environ, "BENCH_LUA": str(LUA), "BENCH_RESULT": out.name, **env},
            check=True, stdout=subprocess.DEVNULL, timeout=seconds + 60)
        summary = json.loads(Path(out.name).read_text())
    if summary["status_errors"] or summary["socket_errors"]:
        raise RuntimeError(f"{summary['status_errors']} unexpected statuses and "
                           f"{summary['socket_errors']} socket errors: not a result")
    return (summary["requests"], summary["duration_us"] / 1e6, summary["p50_us"] / 1000,
            summary["p99_us"] / 1000)


def measure(name: str, url: str, script: str, env: dict[str, str], args: argparse.Namespace,
            baseline: str = "baseline", warmup_env: dict[str, str] | None = None) -> Result:
    """Warm up, then measure; ``warmup_env`` overrides ``env`` for the warm-up (fresh tokens)."""
    wrk(url, script, args.warmup, {**env, **(warmup_env or {})})
    requests, seconds, p50, p99 = wrk(url, script, args.seconds, env)
    result = Result(name, requests, seconds, p50, p99, baseline)
    print(f"  {name:<38} {result.rps:>9.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms",
          flush=True)
    return result


def uvicorn_baseline(port: int, workers: int) -> list[str]:
    return [str(BIN / "uvicorn"), "--app-dir", str(HERE), "baseline:app", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level",
            "warning", "--workers", str(workers)]


# How ConnectLink is started: as a user starts it (the access log and the metrics on; the log
# goes through its queue to stderr, here /dev/null, as JSON since that is not a terminal), and
# lean (both off), to show what they cost.
CONFIGURATIONS = {"default": [], "lean": ["--no-access-log", "--no-metrics"]}


def connectlink(port: int, database_url: str, workers: int, configuration: str) -> list[str]:
    return [str(BIN / "connectlink"), "serve", "--port", str(port), "--database", database_url,
            "--workers", str(workers), "--no-demo", *CONFIGURATIONS[configuration]]


def split_pairs(pairs: Path, args: argparse.Namespace, rate: float) -> tuple[Path, Path]:
    """Disjoint token files for the warm-up and the measurement (each token works once)."""
    lines = pairs.read_text().splitlines(keepends=True)
    cut = int(rate * args.warmup * 1.3) + 500
    warm, measured = pairs.with_suffix(".warm"), pairs.with_suffix(".measured")
    warm.write_text("".join(lines[:cut]))
    measured.write_text("".join(lines[cut:]))
    return warm, measured


def bench_connectlink(engine: str, configuration: str, database_url: str, workers: int,
                      args: argparse.Namespace, work: Path, results: list[Result], baseline: str,
                      rate: float, reads: bool) -> None:
    name = f"{engine}, {configuration}"
    pairs = work / f"pairs-{uuid.uuid4().hex[:6]}.txt"
    print(f"seeding {name} ...", flush=True)
    needed = int(rate * (args.warmup + args.seconds) * 1.3) + 1000
    seeded = asyncio.run(seed.seed(database_url, needed, pairs))
    warm, measured = split_pairs(pairs, args, rate)
    if args.scale:
        asyncio.run(seed.filler(database_url, args.scale))
    auth = f"Bearer {seeded.bearer}"
    port = free_port()
    with server(connectlink(port, database_url, workers, configuration), port) as url:
        results.append(measure(f"POST link ({name})", url, "link.lua",
                               {"BENCH_PAIRS": str(measured), "BENCH_AUTH": auth}, args,
                               baseline, warmup_env={"BENCH_PAIRS": str(warm)}))
        if not reads:
            return
        results.append(measure(
            f"GET link ({name})", url, "static.lua",
            {"BENCH_PATH": f"/v2/fulfillment/users/{seeded.linked_user}/link",
             "BENCH_AUTH": auth}, args, baseline))
        body = json.dumps({"client_id": seeded.client_id, "client_secret": seeded.client_secret,
                           "grant_type": "client_credentials"})
        results.append(measure(
            f"POST token client_credentials ({name})", url, "static.lua",
            {"BENCH_METHOD": "POST", "BENCH_PATH": "/v2/oauth/token", "BENCH_BODY": body},
            args, baseline))


def bench_baseline(name: str, workers: int, args: argparse.Namespace) -> Result:
    port = free_port()
    with server(uvicorn_baseline(port, workers), port) as url:
        return measure(name, url, "static.lua", {}, args, name)


def bench_prism(args: argparse.Namespace) -> Result:
    if not PRISM.exists():
        subprocess.run(["npm", "install", "--prefix", str(HERE / ".prism"), "--no-audit",
                        "--no-fund", "--loglevel=error", "@stoplight/prism-cli@5.16.0"],
                       check=True, timeout=600)
    port = free_port()
    command = ["node", str(PRISM), "mock", "-h", "127.0.0.1", "-p", str(port),
               str(HERE / "prism-link.yaml")]
    with server(command, port) as url:
        return measure("POST link (Prism static mock)", url, "static.lua", {
            "BENCH_METHOD": "POST", "BENCH_PATH": "/v2/fulfillment/users/u1/link",
            "BENCH_BODY": '{"linking_token":"x"}'}, args)


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:12]}"

    async def run(statement: str) -> None:
        connection = await asyncpg.connect(POSTGRES)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES}?search_path={schema}"
    finally:
        asyncio.run(run(f"DROP SCHEMA {schema} CASCADE"))


def table(results: list[Result], args: argparse.Namespace) -> str:
    by_name = {r.name: r for r in results}
    start, end = by_name["baseline (start)"], by_name["baseline (end)"]
    single = (start.rps + end.rps) / 2
    prism = by_name.get("POST link (Prism static mock)")

    def base_of(result: Result) -> float:
        return by_name["baseline, 2 workers"].rps if "2 workers" in result.baseline else single

    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}; server pinned to CPU "
        f"{SERVER_CPU}, wrk to CPU {LOAD_CPU}; {CONNECTIONS} connections, {args.warmup:g} s "
        f"warm-up, {args.seconds:g} s measured"
        + (f"; {args.scale:,} links stored first" if args.scale else "") + ".",
        "",
        "| scenario | req/s | p50 ms | p99 ms | x baseline | x Prism |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = r.rps / base_of(r)
        peer = f"{r.rps / prism.rps:.2f}" if prism else "-"
        lines.append(f"| {r.name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                     f"{ratio:.3f} | {peer} |")
    noise = abs(start.rps - end.rps) / single
    lines += ["", f"Baseline drift between start and end: {noise:.1%}. Ratios for one worker "
                  "use the mean of the two; 2-worker rows use the 2-worker baseline. "
                  "default: as `connectlink serve` starts (access log and metrics on); lean: "
                  "`--no-access-log --no-metrics`."]
    costs = [f"{r.name.replace(', default', '')} {1 - r.rps / lean.rps:+.1%}"
             for r in results if ", default)" in r.name
             and (lean := by_name.get(r.name.replace(", default)", ", lean)"))) is not None]
    if costs:
        lines += ["", "What the access log and the metrics cost (default against lean "
                      "throughput): " + "; ".join(costs) + "."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8, help="measured seconds a scenario")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds a scenario")
    parser.add_argument("--scale", type=int, default=0, help="store N links before measuring")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-prism", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
        if shutil.which("wrk") is None:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)

    started = time.monotonic()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results.append(bench_baseline("baseline (start)", 1, args))
        for configuration in CONFIGURATIONS:
            bench_connectlink("SQLite", configuration, f"sqlite:///{work / configuration}.db",
                              1, args, work, results, "baseline", rate=3500, reads=True)
        if not args.skip_prism:
            results.append(bench_prism(args))
        if not args.skip_postgres:
            results.append(bench_baseline("baseline, 2 workers", 2, args))
            for configuration in CONFIGURATIONS:
                with postgres_schema() as url:
                    bench_connectlink("PostgreSQL, 2 workers", configuration, url, 2, args,
                                      work, results, "baseline, 2 workers", rate=1500,
                                      reads=False)
        results.append(bench_baseline("baseline (end)", 1, args))

    report = table(results, args)
    print("\n" + report)
    print(f"\n(bench took {time.monotonic() - started:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
