"""``make bench``: ConnectLink against a bare ASGI baseline and against Prism, in one run.

Every server is started here, pinned with ``taskset`` (server on CPU 1, wrk on CPU 0), warmed
up, driven by wrk with 64 connections for a bounded time on 127.0.0.1 only, and stopped. Every
figure is a ratio to the baseline measured in the same run; the baseline runs first and last to
show the noise. A scenario with any unexpected status or socket error is not a result: the run
fails.

Each ConnectLink server gets a database of its own, filled the way production fills one: the
retailer and its Instacart accounts (and Connect users) are made through the store first
(``seed.py``); then, through the running server that is about to be measured, wrk
(``lua/seed.lua``) has every account consent through the sandbox's authorize endpoint and
exchanges each code at ``POST /v2/oauth/token`` for the linking token a link request then uses
once; every one of those answers is checked too. The bearer is a ``client_credentials`` token
from the same server. ``--granian`` adds the default SQLite configuration and the baseline
served by granian (``granian_app.py``).
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
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def wrk_command(url: str, script: str, seconds: int) -> list[str]:
    return ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s",
            "--timeout", "10s", "-s", str(LUA / script), url]


def wrk_env(out: str, env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "BENCH_LUA": str(LUA), "BENCH_RESULT": out, **env}


def checked(summary_file: str, what: str = "not a result") -> dict[str, int]:
    """wrk's summary (``lua/report.lua``); raises if any response was wrong."""
    summary: dict[str, int] = json.loads(Path(summary_file).read_text())
    if summary["status_errors"] or summary["socket_errors"]:
        raise RuntimeError(f"{summary['status_errors']} unexpected statuses and "
                           f"{summary['socket_errors']} socket errors: {what}")
    return summary


def wrk(url: str, script: str, seconds: int, env: dict[str, str]) -> tuple[int, float, float,
                                                                             float]:
    """(requests, seconds, p50 ms, p99 ms) of one wrk run; raises if any response was wrong."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(wrk_command(url, script, seconds), env=wrk_env(out.name, env),
                       check=True, stdout=subprocess.DEVNULL, timeout=seconds + 60)
        summary = checked(out.name)
    return (summary["requests"], summary["duration_us"] / 1e6, summary["p50_us"] / 1000,
            summary["p99_us"] / 1000)


def call(url: str, path: str, body: dict[str, str], auth: str | None = None) -> dict[str, Any]:
    """One JSON POST that must answer 200; its decoded body."""
    headers = {"Content-Type": "application/json", **({"Authorization": auth} if auth else {})}
    request = urllib.request.Request(url + path, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
            status = response.status
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"POST {path}: {exc.code} {exc.read()[:300]!r}") from exc
    if status != 200:
        raise RuntimeError(f"POST {path}: {status} {answer}")
    return answer


SEED_LIMIT = 300  # seconds: a seeding still running by then has gone wrong
# The seeding's first pairs, whose pace (and a floor) sizes the rest: a fixed count would run
# out on a fast machine, or take longer than needed on a slow one.
CALIBRATION = 3_000
# Link requests a second per calibration request a second, on the same server and database
# (the requests cost it about the same), at most, by engine: measured 0.95-1.43 on SQLite
# (mostly near 1.2) before group commit, whose links ran up to 1.45 times its seeding's pace
# (at 1.2, a lean run with 10^6 links stored ran out of tokens); 1.10-1.55 on PostgreSQL, whose
# calibration runs on a cold pool.
LINK_PER_SEEDING = {"SQLite": 1.6, "PostgreSQL": 1.5}
SPARE = 2 * CONNECTIONS  # accounts for the authorizations in flight when a seeding has enough


def seed_through_api(url: str, shop: seed.Shop, batch: seed.Batch, bearer: str, pairs: int,
                     pairs_file: Path) -> float:
    """``pairs`` fresh (Connect user, linking token) lines in ``pairs_file``, made through the
    API by ``lua/seed.lua`` from ``batch``; the requests a second it went at. Raises if any
    answer was wrong."""
    status = pairs_file.with_name(pairs_file.name + ".status")
    status.unlink(missing_ok=True)
    env = {"BENCH_AUTH": f"Bearer {bearer}", "BENCH_CLIENT_ID": shop.client_id,
           "BENCH_CLIENT_SECRET": shop.client_secret, "BENCH_REDIRECT_URI": seed.REDIRECT_URI,
           "BENCH_SEED_PAIRS": str(pairs), "BENCH_SEED_FIRST_ACCOUNT": str(batch.first_account),
           "BENCH_SEED_ACCOUNTS": str(batch.accounts), "BENCH_SEED_USER_PREFIX": seed.USER_PREFIX,
           "BENCH_SEED_FIRST_USER": str(batch.first_user),
           "BENCH_SEED_MAKE_USERS": "0" if batch.users else "1",
           "BENCH_PAIRS": str(pairs_file), "BENCH_SEED_STATUS": str(status)}
    started = time.monotonic()
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        process = subprocess.Popen(wrk_command(url, "seed.lua", SEED_LIMIT),
                                   env=wrk_env(out.name, env), stdout=subprocess.DEVNULL)
        try:
            while process.poll() is None and not status.exists():
                time.sleep(0.02)
            # wrk's main thread sleeps out its -d whatever its threads do; SIGINT ends that.
            process.send_signal(signal.SIGINT)
            process.wait(60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        took = time.monotonic() - started
        outcome = status.read_text().strip() if status.exists() else "unfinished"
        if outcome != f"ok {pairs}":
            raise RuntimeError(f"seeding through the API: {outcome}")
        summary = checked(out.name, "not a seeding")
    lines = pairs_file.read_text().splitlines()
    if len(lines) != pairs or len({line.split()[1] for line in lines}) != pairs:
        raise RuntimeError(f"seeding through the API: {len(lines)} pairs, not {pairs}")
    return summary["requests"] / took


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


# --granian: the same apps on granian (ASGI, one worker, uvloop, HTTP/1), installed into this
# venv on demand; never a dependency of the project.
GRANIAN = "granian>=2.8,<2.9"


def granian(port: int, target: str, log_level: str = "info") -> list[str]:
    from connectlink.settings import Settings

    header_timeout_ms = int(Settings.from_env().header_timeout * 1000)
    return [str(BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port",
            str(port), "--workers", "1", "--loop", "uvloop", "--http", "1", "--no-ws",
            "--http1-header-read-timeout", str(header_timeout_ms), "--log-level", log_level,
            target]


def bench_path() -> dict[str, str]:
    """PYTHONPATH with bench/ first, for granian to import its target from."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}


def granian_version() -> str:
    from importlib.metadata import version

    return f"granian {version('granian')}"


def install_granian() -> None:
    if not (BIN / "granian").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", GRANIAN], check=True,
                       timeout=600)


def split_pairs(pairs: Path, args: argparse.Namespace, rate: float) -> tuple[Path, Path]:
    """Disjoint token files for the warm-up and the measurement (each token works once)."""
    lines = pairs.read_text().splitlines(keepends=True)
    cut = int(rate * args.warmup * 1.3) + 500
    warm, measured = pairs.with_suffix(".warm"), pairs.with_suffix(".measured")
    warm.write_text("".join(lines[:cut]))
    measured.write_text("".join(lines[cut:]))
    return warm, measured


@dataclass
class Seeding:
    pairs: int
    seconds: float


def seed_pairs(url: str, database_url: str, shop: seed.Shop, first: seed.Batch, bearer: str,
               args: argparse.Namespace, rate: float, link_per_seeding: float,
               pairs: Path) -> tuple[float, Seeding]:
    """The pairs a link scenario needs, in ``pairs``, made through the server at ``url``: the
    calibration's from ``first``, then as many more as the link rate it predicts (``rate`` at
    least) needs; that rate, and what the seeding took."""
    started = time.monotonic()
    pace = seed_through_api(url, shop, first, bearer, CALIBRATION, pairs.with_suffix(".first"))
    expected = max(rate, link_per_seeding * pace)
    # One pair more, linked for GET link.
    needed = int(expected * (args.warmup + args.seconds) * 1.3) + 1000 + 1
    more = needed - CALIBRATION
    rest = asyncio.run(seed.batch(database_url, shop, more + SPARE,
                                  first.first_user + CALIBRATION + 1, more if first.users else 0))
    pace_rest = seed_through_api(url, shop, rest, bearer, more, pairs.with_suffix(".rest"))
    pairs.write_text(pairs.with_suffix(".first").read_text()
                     + pairs.with_suffix(".rest").read_text())
    took = time.monotonic() - started
    print(f"  seeded {needed:,} pairs through the API in {took:.1f} s (calibration: "
          f"{pace:,.0f} req/s, so {expected:,.0f} link requests a second expected; then "
          f"{pace_rest:,.0f} req/s)", flush=True)
    return expected, Seeding(needed, took)


def bench_connectlink(engine: str, configuration: str, database_url: str, workers: int,
                      args: argparse.Namespace, work: Path, results: list[Result], baseline: str,
                      rate: float, reads: bool, seeding: dict[str, Seeding],
                      on_granian: bool = False, variant: tuple[str, dict[str, str]] | None = None
                      ) -> None:
    """``variant``: (what to call it, the environment that makes it), e.g. direct writes."""
    name = (f"{engine}, {configuration}" + (", granian" if on_granian else "")
            + (f", {variant[0]}" if variant else ""))
    pairs = work / f"pairs-{uuid.uuid4().hex[:6]}.txt"
    print(f"seeding {name} ...", flush=True)
    shop = asyncio.run(seed.retailer(database_url))
    first = asyncio.run(seed.batch(database_url, shop, CALIBRATION + SPARE, 1,
                                   CALIBRATION if args.users == "store" else 0))
    if args.scale:
        asyncio.run(seed.filler(database_url, args.scale))
    port = free_port()
    if on_granian:  # the default configuration, as granian_app.py builds it
        command = granian(port, "granian_app:app")
        env = {**bench_path(), "CONNECTLINK_DATABASE_URL": database_url}
    else:
        command, env = connectlink(port, database_url, workers, configuration), {}
    if variant:
        env = {**env, **variant[1]}
    with server(command, port, env) as url:
        token = call(url, "/v2/oauth/token", {
            "client_id": shop.client_id, "client_secret": shop.client_secret,
            "grant_type": "client_credentials"})
        auth = f"Bearer {token['access_token']}"
        expected, seeding[name] = seed_pairs(
            url, database_url, shop, first, token["access_token"], args, rate,
            LINK_PER_SEEDING[engine.split(",")[0]], pairs)
        linked, *rest = pairs.read_text().splitlines(keepends=True)
        linked_user, linking_token = linked.split()
        call(url, f"/v2/fulfillment/users/{linked_user}/link", {"linking_token": linking_token},
             auth)
        pairs.write_text("".join(rest))
        warm, measured = split_pairs(pairs, args, expected)
        results.append(measure(f"POST link ({name})", url, "link.lua",
                               {"BENCH_PAIRS": str(measured), "BENCH_AUTH": auth}, args,
                               baseline, warmup_env={"BENCH_PAIRS": str(warm)}))
        if not reads:
            return
        results.append(measure(
            f"GET link ({name})", url, "static.lua",
            {"BENCH_PATH": f"/v2/fulfillment/users/{linked_user}/link",
             "BENCH_AUTH": auth}, args, baseline))
        body = json.dumps({"client_id": shop.client_id, "client_secret": shop.client_secret,
                           "grant_type": "client_credentials"})
        results.append(measure(
            f"POST token client_credentials ({name})", url, "static.lua",
            {"BENCH_METHOD": "POST", "BENCH_PATH": "/v2/oauth/token", "BENCH_BODY": body},
            args, baseline))


def bench_baseline(name: str, workers: int, args: argparse.Namespace,
                   on_granian: bool = False) -> Result:
    port = free_port()
    command, env = ((granian(port, "baseline:app", "warning"), bench_path()) if on_granian
                    else (uvicorn_baseline(port, workers), {}))
    with server(command, port, env) as url:
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


def table(results: list[Result], args: argparse.Namespace, seeding: dict[str, Seeding]) -> str:
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
    versus = [f"{r.name.replace(', default, granian', '')} {r.rps / on_uvicorn.rps - 1:+.1%}"
              for r in results if ", granian)" in r.name
              and (on_uvicorn := by_name.get(r.name.replace(", granian)", ")"))) is not None]
    if versus:
        own = by_name.get("baseline (granian)")
        lines += ["", f"granian rows ({granian_version()}, ASGI, 1 worker, uvloop, HTTP/1; "
                      "`bench/granian_app.py`: the app as `connectlink serve --no-demo` builds "
                      "it) against uvicorn, same configuration: " + "; ".join(versus) + "."
                  + (f" granian's own baseline (the same bare app): {own.rps:,.0f} req/s, "
                     f"{own.rps / single:.3f} x uvicorn's; the ratios above stay against "
                     "uvicorn's." if own else "")]
    grouped = [f"{r.name.replace(', default, direct writes', '')} "
               f"{group.rps / r.rps - 1:+.1%} (p99 {group.p99_ms:.1f} against "
               f"{r.p99_ms:.1f} ms)"
               for r in results if ", direct writes)" in r.name
               and (group := by_name.get(r.name.replace(", direct writes)", ")"))) is not None]
    if grouped:
        lines += ["", "SQLite group commit (the default) against direct writes "
                      "(`CONNECTLINK_SQLITE_GROUP_COMMIT=off`, each write committed alone on the "
                      "event loop's thread), same configuration: " + "; ".join(grouped) + "."]
    if seeding:
        users = "Connect users, " if args.users == "api" else ""
        lines += ["", f"Seeding through the API ({users}sandbox authorizations, code "
                      "exchanges) before each measurement: " + "; ".join(
                          f"{name} {done.pairs:,} pairs in {done.seconds:.1f} s"
                          for name, done in seeding.items()) + "."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8, help="measured seconds a scenario")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds a scenario")
    parser.add_argument("--scale", type=int, default=0, help="store N links before measuring")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--users", choices=["store", "api"], default="store",
                        help="where the seeding makes the Connect users: through the store "
                             "before the server starts (default), or through the API, POST "
                             "/v2/fulfillment/users (half as many requests again)")
    parser.add_argument("--skip-prism", action="store_true")
    parser.add_argument("--granian", action="store_true",
                        help=f"also serve the SQLite default configuration and the baseline on "
                             f"granian ({GRANIAN}, installed into this venv if missing)")
    parser.add_argument("--direct-writes", action="store_true",
                        help="also serve the SQLite default configuration without group commit "
                             "(CONNECTLINK_SQLITE_GROUP_COMMIT=off)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
        if shutil.which("wrk") is None:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    if args.granian:
        install_granian()

    started = time.monotonic()
    results: list[Result] = []
    seeding: dict[str, Seeding] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results.append(bench_baseline("baseline (start)", 1, args))
        for configuration in CONFIGURATIONS:
            bench_connectlink("SQLite", configuration, f"sqlite:///{work / configuration}.db",
                              1, args, work, results, "baseline", rate=3500, reads=True,
                              seeding=seeding)
        if args.direct_writes:  # its seeding's pace says little of its links': size from these
            plain = next(r for r in results if r.name == "POST link (SQLite, default)")
            bench_connectlink("SQLite", "default", f"sqlite:///{work / 'direct'}.db", 1, args,
                              work, results, "baseline", rate=max(3500, 1.5 * plain.rps),
                              reads=True, seeding=seeding,
                              variant=("direct writes",
                                       {"CONNECTLINK_SQLITE_GROUP_COMMIT": "off"}))
        if args.granian:
            results.append(bench_baseline("baseline (granian)", 1, args, on_granian=True))
            bench_connectlink("SQLite", "default", f"sqlite:///{work / 'granian'}.db", 1, args,
                              work, results, "baseline", rate=3500, reads=True, seeding=seeding,
                              on_granian=True)
        if not args.skip_prism:
            results.append(bench_prism(args))
        if not args.skip_postgres:
            results.append(bench_baseline("baseline, 2 workers", 2, args))
            for configuration in CONFIGURATIONS:
                with postgres_schema() as url:
                    bench_connectlink("PostgreSQL, 2 workers", configuration, url, 2, args,
                                      work, results, "baseline, 2 workers", rate=1500,
                                      reads=False, seeding=seeding)
        results.append(bench_baseline("baseline (end)", 1, args))

    report = table(results, args, seeding)
    print("\n" + report)
    print(f"\n(bench took {time.monotonic() - started:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
