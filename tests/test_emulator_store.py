"""The storage half of the emulator's control plane (docs/emulator.md, storage/emulator.py), on
both engines: clocks, fault rules (exactly ``times`` firings across racing workers), the
journal and its bound, secrets by fingerprint, memberships, and snapshot, restore and reset."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conftest import START
from connectlink import security
from connectlink.clock import ManualClock
from connectlink.emulator.records import (
    ACCESS_TOKEN,
    AUTHORIZATION_CODE,
    LINKING_TOKEN,
    ClockSetting,
    FaultRule,
    JournalEntry,
    JournalQuery,
    StoredSecret,
    Tables,
)
from connectlink.linking import retailers
from connectlink.models import (
    ACCOUNT_LINKING,
    FULFILLMENT,
    AccessToken,
    AuthorizationCode,
    LinkOutcome,
    OAuthClient,
    UserFields,
)
from connectlink.storage import Store, migrations, open_store, using_store
from connectlink.storage.emulator import TRIM_EVERY
from support import engine_of, query_sql, run_sync

T = TypeVar("T")
DAY = 86_400.0
LINK = "POST /v2/fulfillment/users/{user_id}/link"
TOKEN = "POST /v2/oauth/token"
STATE = ["retailers", "oauth_clients", "instacart_accounts", "authorization_codes", "tokens",
         "connect_users", "links", "audit_events", "login_throttles", "retailer_clocks",
         "emulator_faults", "emulator_journal"]


def on_store(url: str, action: Callable[[Store], Awaitable[T]]) -> T:
    return run_sync(using_store(url, action, "upgrade"))


def fingerprint(secret: str) -> str:
    return security.digest(secret)[:8].hex()


def count(url: str, table: str, where: str = "true") -> int:
    return int(query_sql(url, f"SELECT count(*) FROM {table} WHERE {where}")[0][0])


async def new_retailer(store: Store, name: str = "Shop", pkce: bool = False) -> OAuthClient:
    made = await retailers.create(store, ManualClock(START), name, ["https://shop.example/cb"],
                                  require_pkce=pkce)
    return made.client


def rule(endpoint: str = LINK, retailer_id: int | None = 1, **settings: Any) -> FaultRule:
    return FaultRule(0, retailer_id, None, endpoint, "503", **settings)


def entry(retailer_id: int, n: int, **fields: Any) -> JournalEntry:
    values: dict[str, Any] = {
        "at": START + n, "method": "POST", "path": f"/v2/fulfillment/users/u{n}/link",
        "operation": "link", "status": 200, "latency_ms": 1.5, "request_id": f"req-{n}",
        **fields,
    }
    return JournalEntry(retailer_id=retailer_id, **values)


# clocks ---------------------------------------------------------------------------------------
def test_a_clock_is_kept_per_retailer_and_the_wall_clock_has_no_row(database_url: str) -> None:
    async def clocks(store: Store) -> list[Any]:
        first = (await new_retailer(store, "One")).retailer_id
        second = (await new_retailer(store, "Two")).retailer_id
        seen: list[Any] = [await store.get_clock(first)]
        assert await store.change_clock(first, lambda _: ClockSetting(offset=3600.5))
        seen += [await store.get_clock(first), await store.get_clock(second)]
        assert await store.change_clock(first, lambda _: ClockSetting(frozen_at=START))
        seen.append(await store.get_clock(first))
        assert await store.change_clock(second, lambda _: ClockSetting(offset=-60.0))
        assert await store.change_clock(first, lambda _: ClockSetting())  # back to the wall clock
        seen += [await store.get_clock(first),
                 await store.change_clock(999, lambda _: ClockSetting(1.0))]
        return seen

    assert on_store(database_url, clocks) == [
        ClockSetting(), ClockSetting(offset=3600.5), ClockSetting(),
        ClockSetting(frozen_at=START), ClockSetting(), None,
    ]
    assert query_sql(database_url, "SELECT retailer_id, offset_seconds, frozen_at "
                                   "FROM retailer_clocks") == [(2, -60.0, None)]


# faults ---------------------------------------------------------------------------------------
def test_rules_are_stored_listed_oldest_first_and_deleted(database_url: str) -> None:
    async def faults(store: Store) -> list[Any]:
        # what a rule says of its id, counts and creation is the store's to decide
        first = await store.add_fault(
            FaultRule(99, 1, None, LINK, "503", times=2, every=3, probability=0.5, seed=42,
                      retry_after=7, latency_ms=250, matched=5, fired=5, created_at=1.0), START)
        second = await store.add_fault(
            FaultRule(0, None, "client-1", TOKEN, "invalid_grant"), START + 1)
        listed = await store.list_faults()
        deleted = [await store.delete_fault(first), await store.delete_fault(first)]
        left = await store.list_faults()
        return [first, second, listed, deleted, left, await store.clear_faults(),
                await store.list_faults(), await store.delete_fault(second)]

    first, second, listed, deleted, left, cleared, empty, gone = on_store(database_url, faults)
    assert second > first
    kept_first = FaultRule(first, 1, None, LINK, "503", times=2, every=3, probability=0.5,
                           seed=42, retry_after=7, latency_ms=250, created_at=START)
    kept_second = FaultRule(second, None, "client-1", TOKEN, "invalid_grant", created_at=START + 1)
    assert listed == [kept_first, kept_second]
    assert deleted == [True, False]
    assert left == [kept_second]
    assert (cleared, empty, gone) == (1, [], False)


def test_the_live_rules_are_every_rule_not_spent_oldest_first(database_url: str) -> None:
    async def live(store: Store) -> list[list[int]]:
        ids = [await store.add_fault(r, START) for r in (
            rule(), rule(TOKEN), rule(times=1), rule(retailer_id=2, times=1), rule(times=0))]
        before = [r.id for r in await store.live_faults()]
        assert await store.fire_fault(ids[2])  # spent now
        return [ids, before, [r.id for r in await store.live_faults()]]

    ids, before, after = on_store(database_url, live)
    assert before == ids[:4]  # every retailer's and endpoint's: the caller decides which
    assert after == [ids[0], ids[1], ids[3]]


def test_every_clock_that_is_not_the_wall_clock(database_url: str) -> None:
    async def clocks(store: Store) -> list[dict[int, ClockSetting]]:
        one, two = await new_retailer(store, "One"), await new_retailer(store, "Two")
        await store.change_clock(one.retailer_id, lambda _: ClockSetting(offset=60))
        await store.change_clock(two.retailer_id, lambda _: ClockSetting(frozen_at=START))
        both = await store.all_clocks()
        await store.change_clock(one.retailer_id, lambda _: ClockSetting())
        return [both, await store.all_clocks(), {one.retailer_id: ClockSetting(offset=60),
                                                  two.retailer_id: ClockSetting(frozen_at=START)}]

    both, after, expected = on_store(database_url, clocks)
    assert both == expected
    assert list(after.values()) == [ClockSetting(frozen_at=START)]


def test_a_rule_counts_what_it_saw_and_fires_no_more_than_times(database_url: str) -> None:
    async def counts(store: Store) -> list[Any]:
        limited = await store.add_fault(rule(times=2), START)
        unlimited = await store.add_fault(rule(), START)
        seen = [await store.match_fault(limited) for _ in range(3)]
        fired = [await store.fire_fault(limited) for _ in range(3)]
        free = [await store.fire_fault(unlimited) for _ in range(5)]
        return [seen, fired, free, await store.list_faults(), await store.match_fault(999),
                await store.fire_fault(999)]

    seen, fired, free, (limited, unlimited), no_rule, no_firing = on_store(database_url, counts)
    assert [r.matched for r in seen] == [1, 2, 3] and all(r.fired == 0 for r in seen)
    assert fired == [True, True, False] and free == [True] * 5
    assert (limited.matched, limited.fired, limited.spent) == (3, 2, True)
    assert (unlimited.matched, unlimited.fired, unlimited.spent) == (0, 5, False)
    assert (no_rule, no_firing) == (None, False)


def test_racing_workers_fire_a_rule_exactly_times(database_url: str) -> None:
    """Store instances on threads of their own (as workers are processes), each with many
    requests in flight: the rule fires ``times`` times in all, and counts what it sees until
    spent (a request that finds it spent counts nowhere)."""
    times, workers, calls = 7, 4, 30

    async def setup(store: Store) -> int:
        await new_retailer(store)
        return await store.add_fault(rule(times=times), START)

    fault_id = on_store(database_url, setup)
    start = threading.Barrier(workers)

    async def worker() -> list[bool]:
        store = await open_store(database_url, "check", pool_size=5)
        try:
            start.wait()

            async def request() -> bool:
                return (await store.match_fault(fault_id) is not None
                        and await store.fire_fault(fault_id))

            return list(await asyncio.gather(*(request() for _ in range(calls))))
        finally:
            await store.close()

    with ThreadPoolExecutor(workers) as pool:
        runs = [pool.submit(asyncio.run, worker()) for _ in range(workers)]
        fired = [firing for run in runs for firing in run.result()]
    assert sum(fired) == times
    (stored,) = on_store(database_url, lambda store: store.list_faults())
    assert stored.fired == times and times <= stored.matched < workers * calls


# the journal ----------------------------------------------------------------------------------
def test_the_journal_keeps_the_newest_entries_per_retailer(database_url: str) -> None:
    keep, many = 10, 3 * TRIM_EVERY + 7

    async def fill(store: Store) -> list[list[JournalEntry]]:
        first = (await new_retailer(store, "One")).retailer_id
        second = (await new_retailer(store, "Two")).retailer_id
        for n in range(many):
            # the entries due to be dropped are the only ones with status 500
            await store.journal([entry(first, n, status=500 if n < many - keep else 200)], keep)
            if n % 40 == 0:
                await store.journal([entry(second, n)], keep)
        return [await store.read_journal(first, JournalQuery(limit=keep)),
                await store.read_journal(first, JournalQuery(limit=1000, keep=keep)),
                await store.read_journal(first, JournalQuery(limit=3, keep=keep)),
                await store.read_journal(first, JournalQuery(limit=keep, keep=keep, status=500)),
                await store.read_journal(second, JournalQuery(limit=keep))]

    limited, kept, three, due, other = on_store(database_url, fill)
    newest = [f"req-{n}" for n in range(many - 1, many - keep - 1, -1)]
    assert [e.request_id for e in limited] == newest
    assert kept == limited
    assert [e.request_id for e in three] == newest[:3]
    assert due == []  # stored until the next trim, but never shown
    assert [e.request_id for e in other] == ["req-120", "req-80", "req-40", "req-0"]
    assert keep < count(database_url, "emulator_journal", "retailer_id = 1") <= keep + TRIM_EVERY

    # a new store (a restarted worker) tidies up at its first entry
    on_store(database_url, lambda store: store.journal([entry(1, many)], keep))
    assert count(database_url, "emulator_journal", "retailer_id = 1") == keep
    assert count(database_url, "emulator_journal", "retailer_id = 2") == 4


def test_journal_entries_come_back_as_written_and_every_filter_selects(
    database_url: str,
) -> None:
    linking, code = fingerprint("a linking token"), fingerprint("a code")
    written = [
        entry(1, 0, path="/a", operation="link", credential="c1",
              secrets={"linking_token": linking}),
        entry(1, 10, path="/b", operation="issue_token", status=400, latency_ms=12.25,
              error_code="invalid_grant", error_key="code", client_id="client-1",
              secrets={"code": code}, fault="503"),
        entry(1, 20, path="/a", operation="get_link", credential="c1"),
        entry(2, 30, path="/a", credential="c1", secrets={"linking_token": linking}),
    ]
    queries = {
        "all": JournalQuery(limit=100),
        "path": JournalQuery(limit=100, path="/a"),
        "operation": JournalQuery(limit=100, operation="issue_token"),
        "status": JournalQuery(limit=100, status=400),
        "since": JournalQuery(limit=100, since=START + 10),
        "until": JournalQuery(limit=100, until=START + 10),
        "between": JournalQuery(limit=100, since=START + 5, until=START + 15),
        "credential": JournalQuery(limit=100, credential="c1"),
        "secret": JournalQuery(limit=100, secret=linking),
        "secret in capitals": JournalQuery(limit=100, secret=code.upper()),
        "a key is no secret": JournalQuery(limit=100, secret="linking_token"),
        "wildcards are literal": JournalQuery(limit=100, secret="%"),
        "several": JournalQuery(limit=100, path="/a", credential="c1", until=START + 5),
        "limit": JournalQuery(limit=1),
    }

    async def read(store: Store) -> dict[str, list[JournalEntry]]:
        await new_retailer(store, "One")
        await new_retailer(store, "Two")
        for written_entry in written:
            await store.journal([written_entry], 100)
        return {name: await store.read_journal(1, query) for name, query in queries.items()}

    found = on_store(database_url, read)
    everything = found["all"]
    assert [e.id for e in everything] == sorted((e.id for e in everything), reverse=True)
    assert [replace(e, id=0) for e in everything] == written[2::-1]
    by_at = {int(e.at - START): e for e in everything}
    expected = {"all": [20, 10, 0], "path": [20, 0], "operation": [10], "status": [10],
                "since": [20, 10], "until": [10, 0], "between": [10], "credential": [20, 0],
                "secret": [0], "secret in capitals": [10], "a key is no secret": [],
                "wildcards are literal": [], "several": [0], "limit": [20]}
    assert {name: [int(e.at - START) for e in entries] for name, entries in found.items()} == \
        expected
    assert found["secret"] == [by_at[0]]


# secrets by fingerprint, memberships ------------------------------------------------------------
def test_a_secret_is_found_by_its_fingerprint_whatever_it_is(database_url: str) -> None:
    bearer, linking, code = "an access token", "a linking token", "an authorization code"

    async def find(store: Store) -> list[StoredSecret | None]:
        client = await new_retailer(store)
        account = await store.create_instacart_account("a@example.com", "1", "hash", None, START)
        assert account is not None
        await store.save_token(AccessToken(
            security.digest(bearer), client.pk, client.retailer_id, frozenset({FULFILLMENT}),
            START, START + 3600, revoked_at=START + 5))
        await store.save_token(AccessToken(
            security.digest(linking), client.pk, client.retailer_id,
            frozenset({ACCOUNT_LINKING}), START + 1, START + 601, account_id=account.id,
            consumed_at=START + 2))
        await store.save_code(AuthorizationCode(
            security.digest(code), client.pk, client.retailer_id, account.id,
            "https://shop.example/cb", frozenset({ACCOUNT_LINKING}), START + 3, START + 603))
        return [await store.find_secret(bytes.fromhex(fingerprint(secret)))
                for secret in (bearer, linking, code, "never issued")]

    assert on_store(database_url, find) == [
        StoredSecret(ACCESS_TOKEN, 1, START, START + 3600, revoked_at=START + 5),
        StoredSecret(LINKING_TOKEN, 1, START + 1, START + 601, consumed_at=START + 2),
        StoredSecret(AUTHORIZATION_CODE, 1, START + 3, START + 603),
        None,
    ]


def test_a_fingerprint_covers_its_digests_and_no_other(database_url: str) -> None:
    """The range's edges: the prefix's first and last digests are in it, the next prefix's
    first is not, and a prefix of 0xff bytes only has no upper bound."""
    prefix = bytes.fromhex("123456789abcdeff")
    digests = {  # digest -> its created_at, to tell which one was found
        prefix + b"\xff" * 24: 1.0,  # the last digest of the prefix
        bytes.fromhex("123456789abcdf00") + b"\x00" * 24: 2.0,  # the first of the next one
        b"\xff" * 32: 3.0,
        b"\xff" * 7 + b"\xfe" + b"\xff" * 24: 4.0,
        b"\x00" * 32: 5.0,
    }

    async def find(store: Store) -> list[float | None]:
        client = await new_retailer(store)
        for digest, created in digests.items():
            await store.save_token(AccessToken(digest, client.pk, client.retailer_id,
                                               frozenset({FULFILLMENT}), created, START))
        found = [await store.find_secret(wanted) for wanted in (
            prefix, bytes.fromhex("123456789abcdf00"), b"\xff" * 8, b"\xff" * 7 + b"\xfe",
            b"\x00" * 8, bytes.fromhex("123456789abcdefe"))]
        return [secret.created_at if secret else None for secret in found]

    assert on_store(database_url, find) == [1.0, 2.0, 3.0, 4.0, 5.0, None]


def test_a_membership_is_changed_and_lapsed(database_url: str) -> None:
    async def memberships(store: Store) -> list[Any]:
        account = await store.create_instacart_account("m@example.com", "1", "hash", None, START)
        assert account is not None
        started = await store.change_membership(account.id, lambda _: START + 30 * DAY)
        stored = await store.get_instacart_account(account.id)
        lapsed = await store.change_membership(account.id, lambda ends: None)
        return [started, stored, lapsed, await store.change_membership(999, lambda _: START)]

    started, stored, lapsed, unknown = on_store(database_url, memberships)
    assert started is not None and started.membership_expires_at == START + 30 * DAY
    assert stored == started
    assert lapsed == replace(started, membership_expires_at=None)
    assert unknown is None


# snapshot, restore, reset ---------------------------------------------------------------------
@dataclass(frozen=True)
class Filled:
    """What ``fill`` made, to check a restored state by."""

    client: OAuthClient
    bearer: str
    linking: str


async def fill(store: Store, label: str) -> Filled:
    """A row in every table of the state (flags both ways, digests, JSON, NULLs), and a server
    secret and a lease, which no snapshot, restore or reset touches."""
    clock = ManualClock(START)
    client = await new_retailer(store, f"Shop {label}", pkce=True)
    other = await new_retailer(store, f"Other {label}")
    retailer_id = client.retailer_id
    account = await store.create_instacart_account(f"{label}@example.com", "+18005550100",
                                                   "$argon2id$hash", START + DAY, START)
    assert account is not None
    bearer, linking, code = (security.new_secret() for _ in range(3))
    await store.save_token(AccessToken(security.digest(bearer), client.pk, retailer_id,
                                       frozenset({FULFILLMENT}), START, START + 3600))
    await store.save_code(AuthorizationCode(
        security.digest(code), client.pk, retailer_id, account.id, "https://shop.example/cb",
        frozenset({ACCOUNT_LINKING}), START, START + 600, code_challenge="c" * 43,
        code_challenge_method="S256", consumed_at=START + 1))
    await store.save_token(AccessToken(
        security.digest(linking), client.pk, retailer_id, frozenset({ACCOUNT_LINKING}), START,
        START + 600, account_id=account.id, code_digest=security.digest(code)))
    await store.upsert_connect_user(retailer_id, UserFields("u1", "Ann", "Lee", "+1555", "en-US"),
                                    START)
    outcome = await store.link(retailer_id, "u1", security.digest(linking), START + 2, "banner")
    assert outcome is LinkOutcome.LINKED
    leaving = await store.upsert_connect_user(retailer_id, UserFields("u2", "Bob"), START)
    await store.deactivate_connect_user(leaving, START + 3, START + 30 * DAY, "privacy_request")
    await store.update_login_throttle("address:127.0.0.1",
                                      lambda throttle: throttle.failed(START, 900, 5, 900))
    assert await store.change_clock(retailer_id, lambda _: ClockSetting(offset=120.5))
    assert await store.change_clock(other.retailer_id, lambda _: ClockSetting(frozen_at=START))
    fault = await store.add_fault(rule(retailer_id=retailer_id, times=3), clock.now())
    await store.match_fault(fault)
    await store.fire_fault(fault)
    for n in range(3):
        await store.journal([entry(retailer_id, n, credential=fingerprint(bearer),
                                   secrets={"linking_token": fingerprint(linking)})], 100)
    await store.server_secret("session_key", f"key {label}", START)
    await store.take_lease("sweeper", f"holder {label}", START, START + 60)
    return Filled(client, bearer, linking)


def snapshot(url: str) -> tuple[int, Tables]:
    return on_store(url, lambda store: store.snapshot())


def over_the_wire(tables: Tables) -> Tables:
    """As a client gets it and sends it back: JSON."""
    decoded: Tables = json.loads(json.dumps(tables))
    return decoded


def test_a_snapshot_holds_every_table_as_json(database_url: str) -> None:
    on_store(database_url, lambda store: fill(store, "a"))
    version, tables = snapshot(database_url)
    assert version == migrations.latest(engine_of(database_url))
    assert list(tables) == STATE
    assert over_the_wire(tables) == tables
    assert all(tables[name]["rows"] for name in STATE)  # fill wrote to every one

    def column(table: str, name: str) -> list[Any]:
        index = tables[table]["columns"].index(name)
        return [row[index] for row in tables[table]["rows"]]

    assert column("oauth_clients", "require_pkce") == [True, False]
    assert column("connect_users", "active") == [True, False]
    digests = column("tokens", "digest")
    assert digests == sorted(digests) and all(len(d) == 64 and d == d.lower() for d in digests)
    assert column("retailers", "id") == [1, 2]
    assert column("retailer_clocks", "offset_seconds") == [120.5, 0.0]
    assert tables["login_throttles"] == {"columns": ["subject", "failures", "locked_until"],
                                         "rows": [["address:127.0.0.1", repr(START), None]]}


def test_reset_restore_round_trip_gives_the_same_state_back(database_url: str) -> None:
    filled = on_store(database_url, lambda store: fill(store, "a"))
    _, before = snapshot(database_url)

    on_store(database_url, lambda store: store.reset())
    _, empty = snapshot(database_url)
    assert all(empty[name]["rows"] == [] for name in STATE)
    assert count(database_url, "server_secrets") == 1 and count(database_url, "leases") == 1

    on_store(database_url, lambda store: store.restore(over_the_wire(before)))
    assert snapshot(database_url)[1] == before

    async def use(store: Store) -> list[Any]:
        token = await store.get_token(security.digest(filled.bearer))
        client = await store.get_client(filled.client.client_id)
        linked = await store.find_link(filled.client.retailer_id, "u1", START)
        secret = await store.server_secret("session_key", "another key", START)
        made = await new_retailer(store, "After")
        fault = await store.add_fault(rule(), START)
        await store.journal([entry(made.retailer_id, 9)], 100)
        return [token, client, linked, secret, made, fault,
                await store.read_journal(made.retailer_id, JournalQuery(limit=1))]

    token, client, linked, secret, made, fault, (journaled,) = on_store(database_url, use)
    assert token is not None and token.client_pk == filled.client.pk
    assert client == filled.client
    assert linked is not None and linked[1] is not None and linked[1].email == "a@example.com"
    assert secret == "key a"
    # new rows take ids past the restored ones, on PostgreSQL's sequences too
    assert (made.retailer_id, made.pk, fault, journaled.id) == (3, 3, 2, 4)


def test_a_reset_empties_the_state_and_ids_start_afresh(database_url: str) -> None:
    on_store(database_url, lambda store: fill(store, "a"))

    async def reset(store: Store) -> list[Any]:
        await store.reset()
        made = await new_retailer(store, "Fresh")
        return [made.retailer_id, made.pk, await store.add_fault(rule(), START),
                await store.count_retailers(), await store.take_lease("sweeper", "new", START, 1)]

    retailer_id, client_pk, fault, retailers_left, lease = on_store(database_url, reset)
    assert (retailer_id, client_pk, fault, retailers_left) == (1, 1, 1, 1)
    assert lease.holder == "holder a"  # the lease and the server's secret are no state
    assert query_sql(database_url, "SELECT value FROM server_secrets") == [("key a",)]


def test_a_snapshot_moves_between_engines(postgres_url: str, tmp_path: Path) -> None:
    sqlite_url, copy_url = (f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    on_store(sqlite_url, lambda store: fill(store, "a"))
    _, from_sqlite = snapshot(sqlite_url)

    on_store(postgres_url, lambda store: store.restore(over_the_wire(from_sqlite)))
    assert snapshot(postgres_url)[1] == from_sqlite

    filled = on_store(postgres_url, lambda store: fill(store, "b"))  # ids past the restored
    _, from_postgres = snapshot(postgres_url)
    assert len(from_postgres["retailers"]["rows"]) == 4
    on_store(copy_url, lambda store: store.restore(over_the_wire(from_postgres)))
    assert snapshot(copy_url)[1] == from_postgres
    token = on_store(copy_url, lambda store: store.get_token(security.digest(filled.bearer)))
    assert token is not None and token.retailer_id == filled.client.retailer_id == 3


def _table(tables: Tables, name: str) -> dict[str, Any]:
    table: dict[str, Any] = tables[name]
    return table


def _set(table: str, column: str, value: Any) -> Callable[[Tables], None]:
    def change(tables: Tables) -> None:
        t = _table(tables, table)
        t["rows"][0][t["columns"].index(column)] = value
    return change


BREAKAGES: dict[str, tuple[Callable[[Tables], Any], str]] = {
    "an unknown table": (lambda t: t.update(bogus={"columns": [], "rows": []}),
                         "unknown table 'bogus'"),
    "a missing table": (lambda t: t.pop("links"), "no table 'links'"),
    "not a table": (lambda t: t.update(links=[]), "table 'links': expected"),
    "no rows": (lambda t: _table(t, "links").pop("rows"), "table 'links': expected"),
    "a missing column": (lambda t: _table(t, "retailers")["columns"].pop(),
                         "table 'retailers' has the columns id, name, created_at"),
    "an unknown column": (lambda t: _table(t, "retailers")["columns"].__setitem__(1, "nom"),
                          "table 'retailers' has the columns"),
    "a column twice": (lambda t: _table(t, "retailers")["columns"].__setitem__(1, "id"),
                       "table 'retailers' has the columns"),
    "a short row": (lambda t: _table(t, "retailers")["rows"][1].pop(),
                    "table 'retailers', row 1: expected a list of 3 values"),
    "a row that is no list": (lambda t: _table(t, "retailers")["rows"].append("x"),
                              "table 'retailers', row 2"),
    "bad hex": (_set("tokens", "digest", "zz"), "digest takes a hex string, not 'zz'"),
    "text for a number": (_set("retailers", "created_at", "soon"),
                          "created_at takes a number, not str"),
    "a number for text": (_set("retailers", "name", 5), "name takes a string, not int"),
    "a float for an integer": (_set("links", "account_id", 1.5),
                               "account_id takes an integer, not float"),
    "a boolean for an integer": (_set("emulator_faults", "times", True),
                                 "times takes an integer, not bool"),
    "an integer for a flag": (_set("connect_users", "active", 1),
                              "active takes true or false, not int"),
    "a list for text": (_set("audit_events", "detail", ["x"]), "detail takes a string"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_restore_that_does_not_fit_is_refused_and_changes_nothing(
    database_url: str, breakage: str,
) -> None:
    on_store(database_url, lambda store: fill(store, "a"))
    _, before = snapshot(database_url)
    broken = copy.deepcopy(before)
    change, message = BREAKAGES[breakage]
    change(broken)
    with pytest.raises(ValueError, match=re.escape(message)):
        on_store(database_url, lambda store: store.restore(broken))
    assert snapshot(database_url)[1] == before


def test_a_restore_that_breaks_a_constraint_is_rolled_back(database_url: str) -> None:
    """Rows that fit the columns but not the rules (a link to no user): the database refuses
    them, the store says so as a ValueError (the admin plane's 400), and the state is as it
    was."""
    on_store(database_url, lambda store: fill(store, "a"))
    _, before = snapshot(database_url)
    broken = copy.deepcopy(before)
    _set("links", "connect_user_pk", 999)(broken)
    with pytest.raises(ValueError, match="break the schema"):
        on_store(database_url, lambda store: store.restore(broken))
    assert snapshot(database_url)[1] == before


def test_a_restore_takes_the_columns_in_any_order(database_url: str) -> None:
    on_store(database_url, lambda store: fill(store, "a"))
    _, before = snapshot(database_url)
    shuffled = copy.deepcopy(before)
    for table in shuffled.values():
        table["columns"].reverse()
        for row in table["rows"]:
            row.reverse()
    on_store(database_url, lambda store: store.restore(shuffled))
    assert snapshot(database_url)[1] == before


def test_racing_clock_changes_apply_one_after_the_other(database_url: str) -> None:
    """Store instances on threads of their own each advance one retailer's clock 20 times, all
    at once: none of the 80 advances is lost (each reads and writes in one transaction)."""
    workers, advances = 4, 20
    retailer_id = on_store(database_url, lambda store: new_retailer(store)).retailer_id
    start = threading.Barrier(workers)

    async def worker() -> None:
        store = await open_store(database_url, "check", pool_size=5)
        try:
            start.wait()
            await asyncio.gather(*(store.change_clock(
                retailer_id, lambda s: ClockSetting(offset=s.offset + 1)) for _ in range(advances)))
        finally:
            await store.close()

    with ThreadPoolExecutor(workers) as pool:
        for run in [pool.submit(asyncio.run, worker()) for _ in range(workers)]:
            run.result()
    assert on_store(database_url, lambda store: store.get_clock(retailer_id)) == ClockSetting(
        offset=float(workers * advances))
