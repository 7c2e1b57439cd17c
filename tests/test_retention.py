"""Retention: the sweeper removes tokens and codes a day past their expiry and users past their
privacy retention, in batches, one sweeper at a time (the lease), in the server's background
and by hand (``connectlink db sweep``); and every rule answers as it did before the sweep."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from conftest import START, upgraded
from connectlink import security
from connectlink.cli import main
from connectlink.clock import Clock, ManualClock, SystemClock
from connectlink.linking import retailers, retention
from connectlink.models import (
    ACCOUNT_LINKING,
    FULFILLMENT,
    AccessToken,
    AuthorizationCode,
    SweepCounts,
    UserFields,
)
from connectlink.server.app import create_app
from connectlink.settings import Settings
from connectlink.storage import Store, open_store, using_store
from support import Emulator, ServeProcess, ThreadServer, query_sql, run_sync

DAY = 86_400.0
T = TypeVar("T")
WAIT = 20.0  # seconds the background tests wait for a sweep, at most


def on_store(url: str, action: Callable[[Store], Awaitable[T]]) -> T:
    return run_sync(using_store(url, action, "upgrade"))


@dataclass
class Shop:
    """A retailer, its client and an Instacart account, to hang tokens and codes on."""

    retailer_id: int
    client_pk: int
    account_id: int

    def token(self, label: str, expires_at: float, **extra: Any) -> AccessToken:
        return AccessToken(security.digest(label), self.client_pk, self.retailer_id,
                           frozenset({FULFILLMENT}), expires_at - DAY, expires_at, **extra)

    def code(self, label: str, expires_at: float, **extra: Any) -> AuthorizationCode:
        # The label rides in the redirect URI, so that a test can read which codes are left.
        return AuthorizationCode(security.digest(label), self.client_pk, self.retailer_id,
                                 self.account_id, f"https://shop.example/{label}",
                                 frozenset({ACCOUNT_LINKING}), expires_at - 600, expires_at,
                                 **extra)


async def new_shop(store: Store, clock: Clock) -> Shop:
    made = await retailers.create(store, clock, "Retention", ["https://shop.example/cb"])
    account = await store.create_instacart_account(
        f"r{time.monotonic_ns()}@example.com", "+18005550100", "hash", None, clock.now())
    assert account is not None
    return Shop(made.retailer.id, made.client.pk, account.id)


def codes_left(url: str) -> set[str]:
    rows = query_sql(url, "SELECT redirect_uri FROM authorization_codes")
    return {row[0].rsplit("/", 1)[1] for row in rows}


# What goes and what stays --------------------------------------------------------------------
def test_tokens_and_codes_go_a_day_after_their_expiry_and_not_before(database_url: str) -> None:
    clock = ManualClock(START)
    tokens = {  # label: (expires_at, gone after the sweep)
        "expired-two-days": (START - 2 * DAY, True),
        "revoked-expired-two-days": (START - 2 * DAY, True),
        "expired-an-hour": (START - 3600, False),
        "expired-23-hours": (START - DAY + 3600, False),
        "live": (START + 3600, False),
        "revoked-live": (START + 3600, False),
    }
    codes = {
        "code-expired-two-days": (START - 2 * DAY, True),
        "code-used-expired-two-days": (START - 2 * DAY, True),
        "code-used-expired-an-hour": (START - 3600, False),
        "code-live": (START + 300, False),
    }

    async def sweep(store: Store) -> tuple[retention.SweepReport, dict[str, bool]]:
        shop = await new_shop(store, clock)
        for label, (expires_at, _) in tokens.items():
            revoked = START - 2 * DAY - 60 if label.startswith("revoked") else None
            await store.save_token(shop.token(label, expires_at, revoked_at=revoked))
        for label, (expires_at, _) in codes.items():
            used = expires_at - 300 if "used" in label else None
            await store.save_code(shop.code(label, expires_at, consumed_at=used))
        report = await retention.Sweeper(store, clock).sweep()
        kept = {label: await store.get_token(security.digest(label)) is not None
                for label in tokens}
        return report, kept

    report, kept = on_store(database_url, sweep)
    assert report.removed == SweepCounts(tokens=2, codes=2, users=0)
    assert report.complete and report.rounds == 1
    assert kept == {label: not gone for label, (_, gone) in tokens.items()}
    assert codes_left(database_url) == {label for label, (_, gone) in codes.items() if not gone}


def test_a_code_used_in_its_life_is_still_reuse_after_sweeps(emulator: Emulator) -> None:
    """decisions.md: reusing a code is invalid_grant and revokes the linking token its first
    use produced. A sweep within the code's life forgets nothing; one a day after its expiry
    forgets the code, which is refused all the same."""
    shop = emulator.retailer()
    account = shop.instacart_user("reuse@example.com")
    shop.create_user("u1")
    code = shop.code(account)
    first = shop.exchange(code)
    assert first.status_code == 200, first.text
    linking_token = first.json()["access_token"]

    def sweep() -> retention.SweepReport:
        report: retention.SweepReport = emulator.run(
            lambda store: retention.Sweeper(store, emulator.clock).sweep())
        return report

    emulator.clock.advance(300)  # within the code's 10 minutes
    assert sweep().removed == SweepCounts()
    replay = shop.exchange(code)
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")
    refused = shop.link("u1", linking_token)  # revoked by the reuse
    assert refused.status_code == 400 and refused.json()["error"]["code"] == 1001, refused.text

    emulator.clock.advance(600 + DAY)  # the code a day past its expiry, the token expired too
    shop.forget_token()
    assert sweep().removed.codes == 1
    assert codes_left(emulator.database_url) == set()
    again = shop.exchange(code)
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")


def test_users_past_their_privacy_retention_are_purged_and_the_audit_stays(
    emulator: Emulator,
) -> None:
    shop = emulator.retailer()
    for user_id in ("gone", "kept", "later"):
        assert shop.create_user(user_id).status_code == 200
    assert shop.post("/v2/fulfillment/users/gone/privacy_request").status_code == 200
    emulator.clock.advance(29 * DAY)
    shop.forget_token()
    assert shop.post("/v2/fulfillment/users/later/privacy_request").status_code == 200
    emulator.clock.advance(DAY + 1)  # past "gone"'s 30 days, not "later"'s
    shop.forget_token()
    users_before = query_sql(emulator.database_url, "SELECT user_id FROM connect_users")
    assert {row[0] for row in users_before} == {"gone", "kept", "later"}

    report = emulator.run(lambda store: retention.Sweeper(store, emulator.clock).sweep())

    assert report.removed.users == 1  # (and the first bearer token, 29 days past expiry)
    users_after = query_sql(emulator.database_url, "SELECT user_id FROM connect_users")
    assert {row[0] for row in users_after} == {"kept", "later"}
    gone = shop.get("/v2/fulfillment/users/gone")
    assert gone.status_code == 400 and gone.json()["error"]["message"] == "User Not Found"
    assert shop.get("/v2/fulfillment/users/kept").status_code == 200
    later = shop.membership("later")
    assert later.status_code == 403 and later.json()["error"]["message"] == "User Not Active"
    retailer_id = int(query_sql(emulator.database_url, "SELECT id FROM retailers")[0][0])
    trail = emulator.run(lambda store: store.audit_trail(retailer_id))
    assert ("privacy_request", "gone") in {(action, user) for _, action, user, _ in trail}


def test_a_small_batch_removes_everything_over_several_rounds(database_url: str) -> None:
    clock = ManualClock(START)

    async def sweep(store: Store) -> tuple[retention.SweepReport, int]:
        shop = await new_shop(store, clock)
        for i in range(25):
            await store.save_token(shop.token(f"t{i}", START - 2 * DAY - i))
        for i in range(7):
            await store.save_code(shop.code(f"c{i}", START - 2 * DAY - i))
        await store.save_token(shop.token("live", START + 60))
        for i in range(5):
            user = await store.upsert_connect_user(shop.retailer_id, UserFields(f"u{i}", "A"),
                                                   START - 40 * DAY)
            await store.deactivate_connect_user(user, START - 40 * DAY, START - 10 * DAY,
                                                "privacy_request")
        report = await retention.Sweeper(store, clock, batch=4).sweep()
        return report, len(await store.list_connect_users(shop.retailer_id, START - 50 * DAY,
                                                          100))

    report, listed_before_purge_time = on_store(database_url, sweep)
    assert report.removed == SweepCounts(tokens=25, codes=7, users=5)
    assert report.rounds == 7  # 4 a round: the seventh takes the last token, and is short
    assert listed_before_purge_time == 0  # the rows are gone, not only hidden
    assert query_sql(database_url, "SELECT count(*) FROM tokens")[0][0] == 1  # "live"
    assert codes_left(database_url) == set()


# One sweeper at a time -----------------------------------------------------------------------
async def _two_stores(url: str, action: Callable[[Store, Store], Awaitable[T]]) -> T:
    first, second = await open_store(url, "upgrade"), await open_store(url, "upgrade")
    try:
        return await action(first, second)
    finally:
        await first.close()
        await second.close()


def test_of_two_sweepers_at_once_only_one_sweeps(database_url: str) -> None:
    clock = ManualClock(START)

    async def race(one: Store, two: Store) -> list[Any]:
        shop = await new_shop(one, clock)
        for i in range(40):
            await one.save_token(shop.token(f"t{i}", START - 2 * DAY))
        sweepers = [retention.Sweeper(store, clock, batch=2) for store in (one, two)]
        outcomes = await asyncio.gather(*(s.sweep() for s in sweepers), return_exceptions=True)
        return [*outcomes, *(s.holder for s in sweepers)]

    first, second, *holders = run_sync(_two_stores(database_url, race))
    reports = [o for o in (first, second) if isinstance(o, retention.SweepReport)]
    refusals = [o for o in (first, second) if isinstance(o, retention.SweepUnderWay)]
    assert len(reports) == 1 and len(refusals) == 1, (first, second)
    assert reports[0].removed.tokens == 40
    winner = holders[0] if reports[0] is first else holders[1]
    assert refusals[0].lease.holder == winner
    assert query_sql(database_url, "SELECT count(*) FROM leases")[0][0] == 0  # let go at the end


def test_a_lease_whose_holder_died_expires(database_url: str) -> None:
    clock = ManualClock(START)

    async def dies(store: Store) -> str:
        shop = await new_shop(store, clock)
        await store.save_token(shop.token("old", START - 2 * DAY))
        lease = await store.take_lease(retention.LEASE, "dead-host:1:abcd", START,
                                       START + retention.LEASE_TTL)
        return lease.holder  # and the process goes away without letting it go

    async def survivor(store: Store) -> list[Any]:
        sweeper = retention.Sweeper(store, clock)
        with pytest.raises(retention.SweepUnderWay) as refused:
            await sweeper.sweep()
        clock.advance(retention.LEASE_TTL - 1)
        with pytest.raises(retention.SweepUnderWay):
            await sweeper.sweep()
        clock.advance(1)
        report = await sweeper.sweep()
        return [refused.value.lease.holder, report.removed]

    assert on_store(database_url, dies) == "dead-host:1:abcd"
    holder, removed = on_store(database_url, survivor)
    assert holder == "dead-host:1:abcd"
    assert removed == SweepCounts(tokens=1)


def test_a_holder_renews_its_own_lease_and_no_one_else_can_take_it(database_url: str) -> None:
    async def leases(store: Store) -> list[tuple[str, float]]:
        taken = [await store.take_lease("job", "a", START, START + 60),
                 await store.take_lease("job", "b", START + 10, START + 70),
                 await store.take_lease("job", "a", START + 20, START + 80)]
        await store.release_lease("job", "b")  # not b's: nothing happens
        taken.append(await store.take_lease("job", "b", START + 30, START + 90))
        await store.release_lease("job", "a")
        taken.append(await store.take_lease("job", "b", START + 40, START + 100))
        return [(lease.holder, lease.expires_at) for lease in taken]

    assert on_store(database_url, leases) == [
        ("a", START + 60), ("a", START + 60), ("a", START + 80), ("a", START + 80),
        ("b", START + 100),
    ]


# In the server ---------------------------------------------------------------------------------
def test_the_server_sweeps_in_the_background_and_stops_at_shutdown(
    database_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="connectlink.retention")
    url = upgraded(database_url)
    clock = ManualClock(START)

    async def old_token(store: Store) -> None:
        shop = await new_shop(store, clock)
        await store.save_token(shop.token("old", START - 2 * DAY))

    on_store(url, old_token)
    settings = Settings(database_url=url, access_log=False, pool_size=4, sweep_interval=0.05)
    app = create_app(settings, clock=clock)
    server = ThreadServer(settings, clock)
    server.start(app)
    try:
        background = app.state.context.sweeps
        assert isinstance(background, retention.Background)
        deadline = time.monotonic() + WAIT
        while not any("removed 1 token and" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no sweep within the wait"
            time.sleep(0.02)
    finally:
        server.stop()
    assert background.task is not None and background.task.cancelled()
    assert app.state.context.sweeps is None
    assert on_store(url, lambda store: store.get_token(security.digest("old"))) is None
    lines = [r for r in caplog.records if r.name == "connectlink.retention"]
    assert all(r.levelno == logging.INFO for r in lines), [r.getMessage() for r in lines]
    assert query_sql(url, "SELECT count(*) FROM leases")[0][0] == 0


def test_an_interval_of_0_starts_no_sweeper(database_url: str) -> None:
    settings = Settings(database_url=upgraded(database_url), access_log=False, pool_size=4,
                        sweep_interval=0)
    app = create_app(settings, clock=ManualClock(START))
    server = ThreadServer(settings, ManualClock(START))
    server.start(app)
    try:
        assert app.state.context.sweeps is None
        assert app.state.context.store is not None  # started, all the same
    finally:
        server.stop()


@pytest.fixture
def expired_rows(database_url: str) -> Iterator[str]:
    """A database holding one token and one code a day past expiry, and one user past its
    retention, by the wall clock (what ``serve`` and the CLI go by)."""
    now = time.time()

    async def fill(store: Store) -> None:
        shop = await new_shop(store, SystemClock())
        await store.save_token(shop.token("old", now - 2 * DAY))
        await store.save_token(shop.token("live", now + DAY))
        await store.save_code(shop.code("old-code", now - 2 * DAY))
        user = await store.upsert_connect_user(shop.retailer_id, UserFields("u", "A"), now)
        await store.deactivate_connect_user(user, now - 2 * DAY, now - DAY, "privacy_request")

    on_store(database_url, fill)
    yield database_url


def test_serve_sweeps_on_its_interval_in_every_worker_and_stops_cleanly(
    expired_rows: str,
) -> None:
    server = ServeProcess(expired_rows, "--no-demo", "--workers", "2",
                          env={"CONNECTLINK_SWEEP_INTERVAL": "0.2"})
    try:
        deadline = time.monotonic() + WAIT
        while query_sql(expired_rows, "SELECT count(*) FROM tokens")[0][0] != 1:
            assert time.monotonic() < deadline, "no sweep within the wait"
            time.sleep(0.05)
    finally:
        output = server.stop()
    assert server.process.returncode == 0, output
    assert ("sweep: removed 1 token and 1 authorization code expired more than a day ago, "
            "and 1 Connect user past their privacy retention (1 round, ") in output, output
    assert "Traceback" not in output and "ERROR" not in output, output
    assert codes_left(expired_rows) == set()


# By hand -------------------------------------------------------------------------------------
def test_db_sweep_removes_what_is_due_and_says_how_much(
    expired_rows: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["db", "sweep", "--database", expired_rows, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {k: printed[k] for k in ("tokens", "codes", "users", "rounds", "complete")} == {
        "tokens": 1, "codes": 1, "users": 1, "rounds": 1, "complete": True}
    assert query_sql(expired_rows, "SELECT count(*) FROM tokens")[0][0] == 1
    assert main(["db", "sweep", "--database", expired_rows, "--batch", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tokens:  0 removed (expired more than a day ago)\n"), out
    assert "users:   0 purged (past their privacy retention)\n" in out


def test_db_sweep_is_refused_while_another_sweep_holds_the_lease(
    expired_rows: str, capsys: pytest.CaptureFixture[str],
) -> None:
    now = time.time()
    on_store(expired_rows, lambda store: store.take_lease(retention.LEASE, "web-1:42:beef", now,
                                                          now + 60))
    assert main(["db", "sweep", "--database", expired_rows]) == 4
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("connectlink: another sweep is under way (web-1:42:beef), "
                                   "its lease until "), captured.err
    assert captured.err.count("\n") == 1
    assert query_sql(expired_rows, "SELECT count(*) FROM tokens")[0][0] == 2  # nothing removed
    on_store(expired_rows, lambda store: store.release_lease(retention.LEASE, "web-1:42:beef"))
    assert main(["db", "sweep", "--database", expired_rows, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == 1


@pytest.mark.parametrize(("value", "message"), [
    ("-1", "CONNECTLINK_SWEEP_INTERVAL must be 0 (off) or more seconds"),
    ("hourly", "CONNECTLINK_SWEEP_INTERVAL must be a number of seconds (0: off), not 'hourly'"),
    ("nan", "CONNECTLINK_SWEEP_INTERVAL must be 0 (off) or more seconds"),
])
def test_a_bad_sweep_interval_is_refused(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env({"CONNECTLINK_SWEEP_INTERVAL": value})


def test_the_sweep_interval_reaches_the_workers() -> None:
    assert Settings.from_env({}).sweep_interval == 3600
    settings = Settings.from_env({"CONNECTLINK_SWEEP_INTERVAL": "0"})
    assert settings.sweep_interval == 0
    assert Settings.from_env(settings.to_env()).sweep_interval == 0
    assert Settings.from_env({"CONNECTLINK_SWEEP_INTERVAL": "90.5"}).sweep_interval == 90.5
