"""Storage: the ``Store`` interface and one implementation per engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from connectlink.storage import migrations
from connectlink.storage.base import Store
from connectlink.storage.errors import DatabaseUnreachable, masked_url

Schema = Literal["check", "create", "upgrade", "as-is"]


async def open_store(url: str, schema: Schema = "check", pool_size: int = 10) -> Store:
    """The store a database URL names (``sqlite:///path`` or ``postgresql://...``).

    ``schema``: "check" refuses a database whose schema is not current (``SchemaOutOfDate``),
    "create" does too unless the database is empty, which it gives the schema (what the CLI
    does: a new SQLite file just works), "upgrade" applies what is pending first, "as-is" does
    none of these (for tooling and tests). A database that cannot be opened or reached is
    ``DatabaseUnreachable``.
    """
    store: Store
    if url.startswith("sqlite:"):
        from connectlink.storage.sqlite import open_sqlite

        store = open_sqlite(url)
    elif url.startswith(("postgresql:", "postgres:")):
        from connectlink.storage.postgres import open_postgres

        store = await open_postgres(url, pool_size)
    else:
        raise ValueError(
            f"unsupported database URL {masked_url(url)!r}: use sqlite:///path/to.db or "
            "postgresql://..."
        )
    try:
        if schema == "upgrade":
            await migrations.upgrade(store)
        elif schema == "create":
            await migrations.create_if_new(store)
        elif schema == "check":
            await migrations.ensure_current(store)
    except BaseException:
        await store.close()
        raise
    return store


T = TypeVar("T")


async def using_store(
    url: str, action: Callable[[Store], Awaitable[T]], schema: Schema = "check",
    pool_size: int = 10,
) -> T:
    """Open the store, run ``action`` on it, close it (for the CLI, tools and tests)."""
    store = await open_store(url, schema, pool_size)
    try:
        return await action(store)
    finally:
        await store.close()


__all__ = [
    "DatabaseUnreachable", "Schema", "Store", "masked_url", "migrations", "open_store",
    "using_store",
]
