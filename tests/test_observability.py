"""Running it for real: request ids, log lines, metrics and the health endpoints, against real
servers (a uvicorn thread, and ``connectlink serve --workers 2``), on both engines."""

from __future__ import annotations

import concurrent.futures
import glob
import io
import json
import logging
import os
import queue
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

import contract
from conftest import make_emulator
from connectlink.server.app import create_app
from connectlink.server.observe import logs
from connectlink.server.observe.asgi import request_id
from connectlink.settings import Settings
from support import Emulator, Retailer, ServeProcess, engine_of, execute_sql

NEW_ID = re.compile(r"[0-9a-f]{32}")
WAIT = 10.0  # seconds any one wait for the server's logging or counting may take


# Capturing what the server logs ---------------------------------------------------------------
class Captured(logging.Handler):
    """Every record of the ``connectlink`` loggers, with the request id the filter saw."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.addFilter(logs.RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, format: str = "json") -> list[str]:
        formatter = logs.formatter(format)
        return [formatter.format(record) for record in list(self.records)]

    def access(self, request_id: str) -> dict[str, Any]:
        """The access line of the request with this id, as JSON, once it is written (the
        server logs after it has answered)."""
        deadline = time.monotonic() + WAIT
        while True:
            for line in self.lines():
                entry = json.loads(line)
                if entry["logger"] == "connectlink.access" and entry.get("request_id") == \
                        request_id:
                    return entry  # type: ignore[no-any-return]
            assert time.monotonic() < deadline, f"no access line for {request_id}"
            time.sleep(0.01)


@pytest.fixture
def captured() -> Iterator[Captured]:
    handler = Captured()
    logger = logging.getLogger("connectlink")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def logged(database_url: str, captured: Captured) -> Iterator[Emulator]:
    yield from make_emulator(database_url, access_log=True)


# Metrics, as a scraper reads them ---------------------------------------------------------------
def scrape(http: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_of(samples: dict[Any, float], operation: str, status: int) -> float:
    return value(samples, "connectlink_requests_total", operation=operation, status=str(status))


def scrape_until(http: httpx.Client, done: Any) -> dict[Any, float]:
    """Scrape until ``done(samples)``: a request is counted just after it is answered."""
    deadline = time.monotonic() + WAIT
    while not done(samples := scrape(http)):
        assert time.monotonic() < deadline, "the counts never got there"
        time.sleep(0.02)
    return samples


# Request ids ----------------------------------------------------------------------------------
def test_a_well_formed_request_id_comes_back_and_is_in_the_log_line(
    logged: Emulator, captured: Captured
) -> None:
    shop = logged.retailer()
    given = "trace.2026-12-01:a_b-C"
    response = logged.http.post("/v2/fulfillment/users", json={"user_id": "u1",
                                "first_name": "john"},
                                headers={**shop.headers(), "X-Request-Id": given})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == given
    line = captured.access(given)
    assert line["operation"] == "create_user"
    assert line["status"] == 200
    assert line["method"] == "POST"
    assert line["path"] == "/v2/fulfillment/users"
    assert line["retailer_id"] == shop.credentials["retailer_id"]
    assert line["level"] == "INFO"
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert line["pid"] == os.getpid()  # the server is a thread of this process


@pytest.mark.parametrize("sent", ["", "has space", "semi;colon", "é", "x" * 129])
def test_a_malformed_request_id_is_replaced(logged: Emulator, captured: Captured,
                                            sent: str) -> None:
    response = logged.http.get("/healthz", headers={"X-Request-Id": sent.encode()})
    returned = response.headers["x-request-id"]
    assert returned != sent and NEW_ID.fullmatch(returned)
    assert captured.access(returned)["operation"] == "healthz"


def test_128_characters_is_well_formed_and_129_is_not() -> None:
    assert request_id([(b"x-request-id", b"a" * 128)]) == b"a" * 128
    assert NEW_ID.fullmatch(request_id([(b"x-request-id", b"a" * 129)]).decode())
    assert request_id([]) != request_id([])


def test_every_response_has_a_request_id_of_its_own(logged: Emulator) -> None:
    shop = logged.retailer()
    answers = [
        shop.create_user("u1"),  # the API
        shop.get("/v2/fulfillment/users/nobody"),  # a Connect refusal
        logged.http.get("/v2/fulfillment/users/u1", headers={"Authorization": "Bearer no"}),
        shop.token_request(grant_type="client_credentials", client_secret="wrong"),  # OAuth
        logged.http.get("/oauth/authorize"),  # a page's refusal
        logged.http.get("/oauth/assets/nothing.css"),
        logged.http.get("/docs"),
        logged.http.get("/openapi.json"),
        logged.http.get("/no/such/path"),  # the router's 404
        logged.http.delete("/v2/oauth/token"),  # and its 405
        logged.http.get("/healthz"),
        logged.http.get("/readyz"),
        logged.http.get("/metrics"),
    ]
    statuses = {answer.status_code for answer in answers}
    assert {200, 400, 401, 404, 405} <= statuses, statuses
    ids = [answer.headers.get("x-request-id") for answer in answers]
    assert all(i is not None and NEW_ID.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids)


# Logs ---------------------------------------------------------------------------------------
def test_no_secret_reaches_the_log_in_either_format(logged: Emulator, captured: Captured) -> None:
    shop = logged.retailer()
    issued = logged.http.post("/v2/oauth/token?trace=QUERY-SECRET-1", json={
        "client_id": shop.client_id, "client_secret": shop.client_secret,
        "grant_type": "client_credentials"})
    assert issued.status_code == 200
    token = issued.json()["access_token"]
    wrong = "WRONG-SECRET-" + "z" * 30
    refused = logged.http.post("/v2/oauth/token", data={
        "client_id": shop.client_id, "client_secret": wrong, "grant_type": "client_credentials"})
    assert refused.status_code == 401
    read = logged.http.get("/v2/fulfillment/users/u1?q=QUERY-SECRET-2",
                           headers={"Authorization": f"Bearer {token}"})
    assert read.status_code == 400  # User Not Found
    forged = logged.http.get("/v2/fulfillment/users/u1",
                             headers={"Authorization": "Bearer FORGED-TOKEN-123"})
    assert forged.status_code == 401
    for answer in (issued, refused, read, forged):
        captured.access(answer.headers["x-request-id"])
    for format in logs.FORMATS:
        written = "\n".join(captured.lines(format))
        for secret in (shop.client_secret, token, wrong, "QUERY-SECRET", "FORGED-TOKEN"):
            assert secret not in written, (format, secret)
    # ... and what is there is one line a request, on each, with its id
    text = captured.lines("text")
    assert sum(f"[{read.headers['x-request-id']}]" in line for line in text) == 1


def test_the_access_log_can_be_turned_off(database_url: str, captured: Captured) -> None:
    for quiet in make_emulator(database_url, access_log=False):
        answer = quiet.http.get("/healthz")
        assert answer.status_code == 200 and answer.headers["x-request-id"]
        samples = scrape_until(quiet.http, lambda s: requests_of(s, "healthz", 200) == 1)
        assert requests_of(samples, "healthz", 200) == 1  # counted all the same
    assert not [r for r in captured.records if r.name == "connectlink.access"]


def test_the_metrics_can_be_turned_off(database_url: str) -> None:
    for bare in make_emulator(database_url, metrics=False):
        shop = bare.retailer()
        _link(shop, "u1")
        assert bare.http.get("/metrics").status_code == 404
        paths = bare.http.get("/openapi.json").json()["paths"]
        assert "/metrics" not in paths and "/healthz" in paths
    # and nothing is counted: the layer around every request holds no metrics to count with
    assert create_app(Settings(database_url=database_url, metrics=False)).observed.metrics is None


def test_the_queue_writes_on_its_own_thread_and_drops_what_does_not_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    handler = logs.queued_stderr("json")
    logger = logging.Logger("connectlink.test-queue")
    logger.addHandler(handler)
    token = logs.REQUEST_ID.set("req-7")
    try:
        logger.warning("one %s", "line")
    finally:
        logs.REQUEST_ID.reset(token)
    handler.close()  # what logging.shutdown does at exit: everything queued is written
    [line] = [json.loads(text) for text in stderr.getvalue().splitlines()]
    assert line["message"] == "one line" and line["request_id"] == "req-7"
    assert line["level"] == "WARNING"

    records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
    full = logs.QueuedHandler(records, limit=2)  # no writer: nothing takes them off
    for n in range(3):
        full.handle(logging.makeLogRecord({"msg": f"record {n}"}))
    assert full.dropped == 1
    records.get_nowait(), records.get_nowait()
    full.handle(logging.makeLogRecord({"msg": "after"}))
    report, after = records.get_nowait(), records.get_nowait()
    assert report is not None and "1 log lines were dropped" in report.getMessage()
    assert after is not None and after.getMessage() == "after"


def test_the_default_format_is_text_on_a_terminal_and_json_elsewhere() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.default_format(Terminal()) == "text"
    assert logs.default_format(io.StringIO()) == "json"
    with pytest.raises(ValueError):
        logs.log_config("xml")


# Metrics ------------------------------------------------------------------------------------
def _link(shop: Retailer, user_id: str) -> None:
    assert shop.create_user(user_id).status_code == 200
    account = shop.instacart_user(f"{user_id}@example.com")
    assert shop.link(user_id, shop.linking_token(account)).status_code == 200


def test_metrics_count_requests_errors_links_and_tokens(logged: Emulator) -> None:
    shop = logged.retailer()
    _link(shop, "u1")  # a token, a user, an account, a code, a linking token, a link
    for _ in range(2):
        assert shop.get("/v2/fulfillment/users/nobody-SECRET-PATH").status_code == 400
    assert logged.http.get("/no/such/path").status_code == 404
    assert logged.http.delete("/v2/oauth/token").status_code == 405
    assert shop.get("/v2/fulfillment/users/u1", token="not-a-token").status_code == 401
    assert shop.token_request(grant_type="client_credentials",
                              client_secret="wrong").status_code == 401
    samples = scrape_until(logged.http, lambda s: requests_of(s, "issue_token", 401) == 1)

    assert requests_of(samples, "issue_token", 200) == 2  # the bearer and the linking token
    assert requests_of(samples, "issue_token", 401) == 1
    assert requests_of(samples, "create_user", 200) == 1
    assert requests_of(samples, "create_instacart_user", 200) == 1
    assert requests_of(samples, "authorize_instacart_user", 200) == 1
    assert requests_of(samples, "link", 200) == 1
    assert requests_of(samples, "get_user", 400) == 2  # User Not Found
    assert requests_of(samples, "get_user", 401) == 1
    assert requests_of(samples, "none", 404) == 1
    assert value(samples, "connectlink_request_duration_seconds_count", operation="get_user",
                 status="400") == 2
    assert value(samples, "connectlink_errors_total", code="1001") == 2  # User Not Found
    assert value(samples, "connectlink_errors_total", code="4000") == 1  # the router's 404
    assert value(samples, "connectlink_errors_total", code="4001") == 1  # and its 405
    assert value(samples, "connectlink_errors_total", code="invalid_token") == 1
    assert value(samples, "connectlink_errors_total", code="invalid_client") == 1
    assert value(samples, "connectlink_links_total") == 1
    assert value(samples, "connectlink_tokens_issued_total", grant="client_credentials") == 1
    assert value(samples, "connectlink_tokens_issued_total", grant="authorization_code") == 1
    assert value(samples, "connectlink_rate_limited_total", operation="get_user") == 0
    operations = {dict(labels).get("operation") for (name, labels) in samples
                  if name == "connectlink_requests_total"}
    assert operations <= {op["operationId"] for item in contract.DOCUMENT["paths"].values()
                          for op in item.values()} | {"none"}
    scraped = logged.http.get("/metrics").text
    assert "SECRET-PATH" not in scraped and "/no/such" not in scraped
    pool = [v for (name, _), v in samples.items() if name == "connectlink_db_connections_in_use"]
    if engine_of(logged.database_url) == "postgres":
        assert len(pool) == 1 and 0 <= pool[0] <= 4  # make_emulator's pool_size
    else:
        assert pool == []  # one connection, no pool to watch


def test_metrics_count_rate_limited_requests_and_a_limiter_failing_open(
    database_url: str,
) -> None:
    # 0.1 a second: a bucket of one request, refilled in ten seconds.
    for limited in make_emulator(database_url, rate_limit_api=0.1):
        shop = limited.retailer()
        assert shop.get("/v2/fulfillment/users/u1").status_code == 400
        refused = shop.get("/v2/fulfillment/users/u1")
        assert refused.status_code == 429 and refused.headers["x-request-id"]
        samples = scrape_until(limited.http,
                               lambda s: requests_of(s, "get_user", 429) == 1)
        assert value(samples, "connectlink_rate_limited_total", operation="get_user") == 1
        assert value(samples, "connectlink_errors_total", code="2003") == 1
        assert value(samples, "connectlink_rate_limit_fail_open_total") == 0
    # A Redis that does not answer: every limited request is served, and counted.
    for unlimited in make_emulator(database_url, rate_limit_api=0.1,
                                   redis_url="redis://127.0.0.1:1/0"):
        shop = unlimited.retailer()
        for _ in range(3):
            assert shop.get("/v2/fulfillment/users/u1").status_code == 400
        samples = scrape_until(unlimited.http,
                               lambda s: requests_of(s, "get_user", 400) == 3)
        assert value(samples, "connectlink_rate_limit_fail_open_total") == 3
        assert value(samples, "connectlink_rate_limited_total", operation="get_user") == 0


def _healthz_by_worker(directory: Path) -> dict[str, float]:
    """Each worker's count of answered /healthz requests, read from its own file."""
    counts = {}
    for path in glob.glob(str(directory / "counter_*.db")):
        pid = Path(path).stem.removeprefix("counter_")
        for family in MultiProcessCollector.merge([path], accumulate=True):
            for sample in family.samples:
                if sample.name == "connectlink_requests_total" and \
                        sample.labels == {"operation": "healthz", "status": "200"}:
                    counts[pid] = sample.value
    return counts


def _healthz_many(url: str, n: int) -> None:
    """``n`` requests, each on a connection of its own, eight at a time: the kernel hands new
    connections to whichever worker accepts first."""
    def one(_: int) -> int:
        return httpx.get(f"{url}/healthz", timeout=10).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(n))) == {200}


def test_metrics_add_up_across_two_workers(database_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_999999.db").write_bytes(b"a previous run's counts")
    server = ServeProcess(database_url, "--no-demo", "--log-format", "json", "--workers", "2",
                          env={"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    try:
        assert not (directory / "counter_999999.db").exists()  # emptied at the start
        sent, deadline = 0, time.monotonic() + 30
        while len(_healthz_by_worker(directory)) < 2:  # until both workers have answered
            assert time.monotonic() < deadline, "one worker answered everything"
            _healthz_many(server.url, 20)
            sent += 20
        with httpx.Client(base_url=server.url) as http:
            samples = scrape_until(http, lambda s: requests_of(s, "healthz", 200) >= sent)
        assert requests_of(samples, "healthz", 200) == sent
        by_worker = _healthz_by_worker(directory)
        assert len(by_worker) == 2 and sum(by_worker.values()) == sent
    finally:
        output = server.stop()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "connectlink.access"
              and line["operation"] == "healthz"]
    assert len(access) == sent
    assert access[0]["level"] == "INFO" and access[0]["status"] == 200
    assert {"time", "message", "client", "method", "path", "latency_ms"} <= access[0].keys()
    assert len({line["pid"] for line in access}) == 2
    assert all(NEW_ID.fullmatch(line["request_id"]) for line in access)
    # uvicorn's lines too, to each worker's last: the queue is written out before a worker ends
    finished = [line for line in lines if line["logger"] == "uvicorn.error"
                and line["message"].startswith("Finished server process")]
    assert {line["pid"] for line in finished} == {line["pid"] for line in access}


def test_two_workers_without_a_directory_given_get_one_from_serve(database_url: str) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": ""}  # set but empty: not the current directory
    server = ServeProcess(database_url, "--no-demo", "--no-access-log", "--workers", "2",
                          env=env)
    try:
        _healthz_many(server.url, 30)
        with httpx.Client(base_url=server.url) as http:
            samples = scrape_until(http, lambda s: requests_of(s, "healthz", 200) >= 30)
        assert requests_of(samples, "healthz", 200) == 30
    finally:
        output = server.stop()
    assert "connectlink.access" not in output
    assert not glob.glob("counter_*.db")


def test_an_access_line_reads_the_same_through_the_queue_and_as_a_record() -> None:
    entry = logs.Access(1764627060.25, "rid-1", "10.0.0.9", "GET", "/v2/x\n%0A" + "y" * 300,
                        400, 1.234, "get_user", 7)
    message, fields = entry.line()
    assert message.startswith('10.0.0.9 "GET /v2/x\\x0a%0A') and message.endswith(
        '" 400 1.2ms get_user retailer 7')
    assert "\n" not in message and len(fields["path"]) < 300
    record = logging.makeLogRecord({"name": "connectlink.access", "levelno": logging.INFO,
                                    "levelname": "INFO", "msg": message, "fields": fields,
                                    "created": entry.created, "msecs": 250.0,
                                    "request_id": "rid-1", "process": os.getpid()})
    json_formatter = logs.JsonFormatter()
    assert json.loads(json_formatter.access(entry)) == json.loads(json_formatter.format(record))
    text_formatter = logs.TextFormatter()
    assert text_formatter.access(entry) == text_formatter.format(record)
    assert text_formatter.access(entry).endswith(f"INFO connectlink.access [rid-1] {message}")


def test_serve_writes_text_when_told(database_url: str) -> None:
    server = ServeProcess(database_url, "--no-demo", env={"CONNECTLINK_LOG_FORMAT": "text"})
    try:
        answer = httpx.get(f"{server.url}/v2/fulfillment/users/u1?secret=QUERY",
                           headers={"X-Request-Id": "text-1"})
        assert answer.status_code == 401
    finally:
        output = server.stop()
    [line] = [line for line in output.splitlines() if "[text-1]" in line]
    assert 'connectlink.access [text-1] 127.0.0.1 "GET /v2/fulfillment/users/u1" 401' in line
    assert "QUERY" not in output
    assert not [line for line in output.splitlines() if line.startswith("{")]


# Health -------------------------------------------------------------------------------------
def test_healthz_and_readyz_answer_ok(logged: Emulator) -> None:
    for path in ("/healthz", "/readyz"):
        answer = logged.http.get(path)
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
        contract.check(answer)
    assert logged.http.head("/readyz").status_code == 200


def test_readyz_is_503_once_the_database_is_gone(logged: Emulator, captured: Captured) -> None:
    url = logged.database_url
    assert logged.http.get("/readyz").status_code == 200
    if engine_of(url) == "sqlite":
        for path in glob.glob(url.removeprefix("sqlite:///") + "*"):
            os.remove(path)  # the server's connection still holds the deleted file open
        why = "is gone"
    else:
        schema = url.rsplit("search_path=", 1)[1]
        execute_sql(url, f"DROP SCHEMA {schema} CASCADE")
        execute_sql(url, f"CREATE SCHEMA {schema}")  # empty, for the fixture to drop
        why = "schema is at version 0"
    answer = logged.http.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {"error": {"message": "Service temporarily unavailable. Please try "
                                       "again later.", "code": 2003}, "meta": {}}
    assert answer.headers["retry-after"] == "1"
    contract.check(answer)
    assert logged.http.get("/healthz").status_code == 200  # the process is up all the same
    said = answer.headers["x-request-id"]
    captured.access(said)
    [warning] = [json.loads(line) for line in captured.lines()
                 if json.loads(line)["logger"] == "connectlink.health"]
    assert warning["request_id"] == said and why in warning["message"]
    assert warning["level"] == "WARNING"
