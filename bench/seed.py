"""What the benchmark needs in a database, made through ConnectLink's own store.

- ``pairs``: Connect users, each with a fresh linking token for an Instacart account of its
  own, so every benchmarked link request is a new link (issued the way the exchange issues
  them: ``security.new_secret`` stored as its digest by ``Store.save_token``).
- ``filler``: N links already stored, for ``--scale``; written in bulk since only their number
  matters.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from connectlink import security
from connectlink.clock import SystemClock
from connectlink.linking import retailers
from connectlink.models import (
    ACCOUNT_LINKING,
    FULFILLMENT,
    AccessToken,
    ConnectUser,
    UserFields,
)
from connectlink.storage import Store, using_store

DAY = 86_400
YEAR = 365 * DAY
REDIRECT_URI = "https://bench.example/callback"
# Seeded accounts never log in; one real argon2 hash serves them all.
PASSWORD_HASH = security.hash_password("benchmark")


@dataclass(frozen=True)
class Seeded:
    client_id: str
    client_secret: str
    bearer: str
    linked_user: str  # for GET .../link


async def _pair(store: Store, retailer_id: int, client_pk: int, n: int, tag: str,
                now: float) -> tuple[ConnectUser, str]:
    account = await store.create_instacart_account(
        f"bench{n}.{tag}@example.com", "+18005550100", PASSWORD_HASH, now + YEAR, now)
    assert account is not None
    user = await store.upsert_connect_user(retailer_id, UserFields(f"{tag}{n}", "Bench"), now)
    token = security.new_secret()
    await store.save_token(AccessToken(
        security.digest(token), client_pk, retailer_id, frozenset({ACCOUNT_LINKING}), now,
        now + DAY, account_id=account.id))
    return user, token


async def seed(database_url: str, pairs: int, pairs_file: Path, concurrency: int = 16) -> Seeded:
    """A retailer, a bearer, one linked user, and ``pairs`` (user, token) lines in a file."""

    async def fill(store: Store) -> Seeded:
        clock = SystemClock()
        now = clock.now()
        shop = await retailers.create(store, clock, "Bench", [REDIRECT_URI])
        bearer = security.new_secret()
        await store.save_token(AccessToken(
            security.digest(bearer), shop.client.pk, shop.retailer.id, frozenset({FULFILLMENT}),
            now, now + DAY))
        linked, token = await _pair(store, shop.retailer.id, shop.client.pk, 0, "linked", now)
        await store.link(shop.retailer.id, linked.user_id, security.digest(token), now, None)

        lines: list[str] = []
        for start in range(0, pairs, concurrency):
            batch = await asyncio.gather(*(
                _pair(store, shop.retailer.id, shop.client.pk, n, "u", now)
                for n in range(start, min(start + concurrency, pairs))
            ))
            lines += [f"{user.user_id} {token}" for user, token in batch]
        pairs_file.write_text("\n".join(lines) + "\n")
        return Seeded(shop.client.client_id, shop.client_secret, bearer, linked.user_id)

    return await using_store(database_url, fill, "upgrade", pool_size=concurrency)


async def filler(database_url: str, links: int) -> None:
    """``links`` more links under a retailer of their own, inserted in bulk."""
    clock = SystemClock()
    shop = await using_store(
        database_url, lambda store: retailers.create(store, clock, "Filler", [REDIRECT_URI]),
        "upgrade")
    now = clock.now()
    if database_url.startswith("sqlite"):
        _sqlite_filler(database_url, shop.retailer.id, links, now)
    else:
        await _postgres_filler(database_url, shop.retailer.id, links, now)


def _sqlite_filler(database_url: str, retailer_id: int, links: int, now: float) -> None:
    import sqlite3

    from connectlink.storage.sqlite import path_from_url

    db = sqlite3.connect(path_from_url(database_url), isolation_level=None)
    try:
        base = db.execute("SELECT coalesce(max(id), 0) FROM instacart_accounts").fetchone()[0]
        user_base = db.execute("SELECT coalesce(max(pk), 0) FROM connect_users").fetchone()[0]
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO instacart_accounts (id, email, phone, password_hash, "
            "membership_expires_at, created_at) VALUES (?, ?, '+18005550100', ?, ?, ?)",
            ((base + i + 1, f"filler{base + i}@example.com", PASSWORD_HASH, now + YEAR, now)
             for i in range(links)))
        db.executemany(
            "INSERT INTO connect_users (pk, retailer_id, user_id, first_name, created_at, "
            "updated_at) VALUES (?, ?, ?, 'Filler', ?, ?)",
            ((user_base + i + 1, retailer_id, f"f{i}", now, now) for i in range(links)))
        db.executemany(
            "INSERT INTO links (connect_user_pk, retailer_id, account_id, linked_at) "
            "VALUES (?, ?, ?, ?)",
            ((user_base + i + 1, retailer_id, base + i + 1, now) for i in range(links)))
        db.execute("COMMIT")
    finally:
        db.close()


async def _postgres_filler(database_url: str, retailer_id: int, links: int, now: float) -> None:
    import asyncpg

    db = await asyncpg.connect(database_url)
    try:
        async with db.transaction():
            accounts = await db.fetch(
                "INSERT INTO instacart_accounts (email, phone, password_hash, "
                "membership_expires_at, created_at) SELECT 'filler' || g || '.' || $1 || "
                "'@example.com', '+18005550100', $2, $3, $4 FROM generate_series(1, $5) g "
                "RETURNING id", str(retailer_id), PASSWORD_HASH, now + YEAR, now, links)
            users = await db.fetch(
                "INSERT INTO connect_users (retailer_id, user_id, first_name, created_at, "
                "updated_at) SELECT $1, 'f' || g, 'Filler', $2, $2 "
                "FROM generate_series(1, $3) g RETURNING pk", retailer_id, now, links)
            await db.copy_records_to_table(
                "links", columns=["connect_user_pk", "retailer_id", "account_id", "linked_at"],
                records=[(u[0], retailer_id, a[0], now) for u, a in zip(users, accounts,
                                                                        strict=True)])
        await db.execute("ANALYZE")
    finally:
        await db.close()
