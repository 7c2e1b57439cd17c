"""What the benchmark puts in a database itself; everything else the server makes.

- ``retailer``: the retailer whose client the benchmark uses (``retailers.create``, as
  ``connectlink retailers create`` makes one), before the server starts.
- ``batch``: Instacart accounts for linking tokens, one account a token, and (unless the
  seeding makes them through the API) the Connect users they will be linked to, as plain rows
  inserted in bulk, before the server starts and again while it idles between seeding runs. A
  sandbox account made through the API would hash its password with argon2, some 45 ms of the
  server's CPU each, tens of minutes for the tens of thousands a run uses; these share one hash
  and never log in.
- ``filler``: N links already stored, for ``--scale``; written in bulk since only their number
  matters.

Everything that carries a secret is made through the server's HTTP API (``run.py``: the bearer
by ``client_credentials``; ``lua/seed.lua``: an authorization code for each account from the
sandbox's authorize endpoint, exchanged with ``grant_type=authorization_code`` for the linking
token a link request then uses), so the server stores it, as a digest, as it always does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from connectlink import security
from connectlink.clock import SystemClock
from connectlink.linking import retailers
from connectlink.storage import Store, using_store
from connectlink.storage.sql import SQLStore

DAY = 86_400
YEAR = 365 * DAY
REDIRECT_URI = "https://bench.example/callback"
USER_PREFIX = "u"  # the Connect users are u1, u2, ...
# Seeded accounts never log in; one real argon2 hash serves them all.
PASSWORD_HASH = security.hash_password("benchmark")


@dataclass(frozen=True)
class Shop:
    retailer_id: int
    client_id: str
    client_secret: str


@dataclass(frozen=True)
class Batch:
    first_account: int  # accounts first_account .. first_account + accounts - 1
    accounts: int
    first_user: int  # users USER_PREFIX + str(first_user) on
    users: int  # how many of them are made here; 0: the seeding makes them through the API


async def retailer(database_url: str) -> Shop:
    clock = SystemClock()
    shop = await using_store(
        database_url, lambda store: retailers.create(store, clock, "Bench", [REDIRECT_URI]),
        "upgrade")
    return Shop(shop.retailer.id, shop.client.client_id, shop.client_secret)


async def batch(database_url: str, shop: Shop, accounts: int, first_user: int,
                users: int) -> Batch:
    """``accounts`` Instacart accounts with consecutive ids (Instacart+ members), and the
    retailer's Connect users ``first_user`` .. ``first_user + users - 1``, none linked."""
    now = SystemClock().now()
    tag = uuid.uuid4().hex[:8]  # unique emails, batch after batch
    if database_url.startswith("sqlite"):
        ids = _sqlite_rows(database_url, shop.retailer_id, accounts, first_user, users, tag, now)
    else:
        ids = await _postgres_rows(database_url, shop.retailer_id, accounts, first_user, users,
                                   tag, now)
    ids.sort()
    if ids != list(range(ids[0], ids[0] + accounts)):
        raise RuntimeError("the accounts' ids are not consecutive")
    return Batch(ids[0], accounts, first_user, users)


def _sqlite_rows(database_url: str, retailer_id: int, accounts: int, first_user: int,
                 users: int, tag: str, now: float) -> list[int]:
    import sqlite3

    from connectlink.storage.sqlite import path_from_url

    db = sqlite3.connect(path_from_url(database_url), isolation_level=None, timeout=30)
    try:
        db.execute("BEGIN IMMEDIATE")  # the server may have the database open
        base = db.execute("SELECT coalesce(max(id), 0) FROM instacart_accounts").fetchone()[0]
        db.executemany(
            "INSERT INTO instacart_accounts (id, email, phone, password_hash, "
            "membership_expires_at, created_at) VALUES (?, ?, '+18005550100', ?, ?, ?)",
            ((base + n, f"bench{n}.{tag}@example.com", PASSWORD_HASH, now + YEAR, now)
             for n in range(1, accounts + 1)))
        db.executemany(
            "INSERT INTO connect_users (retailer_id, user_id, first_name, created_at, "
            "updated_at) VALUES (?, ?, 'Bench', ?, ?)",
            ((retailer_id, f"{USER_PREFIX}{n}", now, now)
             for n in range(first_user, first_user + users)))
        db.execute("COMMIT")
    finally:
        db.close()
    return list(range(base + 1, base + accounts + 1))


async def _postgres_rows(database_url: str, retailer_id: int, accounts: int, first_user: int,
                         users: int, tag: str, now: float) -> list[int]:
    import asyncpg

    db = await asyncpg.connect(database_url)
    try:
        async with db.transaction():
            ids = await db.fetch(
                "INSERT INTO instacart_accounts (email, phone, password_hash, "
                "membership_expires_at, created_at) SELECT 'bench' || g || '.' || $1::text || "
                "'@example.com', '+18005550100', $2, $3, $4 FROM generate_series(1, $5) g "
                "RETURNING id", tag, PASSWORD_HASH, now + YEAR, now, accounts)
            await db.execute(
                "INSERT INTO connect_users (retailer_id, user_id, first_name, created_at, "
                "updated_at) SELECT $1, $2::text || g, 'Bench', $3, $3 "
                "FROM generate_series($4::int, $5::int) g", retailer_id, USER_PREFIX, now,
                first_user, first_user + users - 1)
        await db.execute("ANALYZE instacart_accounts, connect_users")
    finally:
        await db.close()
    return [row[0] for row in ids]


async def filler(database_url: str, links: int) -> None:
    """``links`` more links under a retailer of their own: ``batch``'s accounts and users, the
    n-th user linked to the n-th account, in one statement through the store."""
    clock = SystemClock()
    created = await using_store(
        database_url, lambda store: retailers.create(store, clock, "Filler", [REDIRECT_URI]),
        "upgrade")
    shop = Shop(created.retailer.id, created.client.client_id, created.client_secret)
    rows = await batch(database_url, shop, links, 1, links)

    async def link(store: Store) -> None:
        assert isinstance(store, SQLStore)
        await store.db.write(lambda db: db.execute(
            "INSERT INTO links (connect_user_pk, retailer_id, account_id, linked_at) "
            "SELECT pk, retailer_id, CAST(? AS INTEGER) + CAST(substr(user_id, ?) AS INTEGER), "
            "CAST(? AS DOUBLE PRECISION) FROM connect_users WHERE retailer_id = ?",
            rows.first_account - 1, len(USER_PREFIX) + 1, clock.now(), shop.retailer_id),
            atomic=False)
        if store.engine == "postgres":
            await store.db.write(lambda db: db.execute("ANALYZE links"), atomic=False)

    await using_store(database_url, link)
