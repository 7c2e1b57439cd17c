"""Versioned schema migrations: ``sql/<engine>/NNNN_name.sql``, applied in order, recorded in
``schema_migrations``. ``serve`` refuses a database that is behind unless told to upgrade it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        return statements(self.sql)


def statements(sql: str) -> list[str]:
    """A migration file's statements, for engines that take one at a time."""
    return [s.strip() for s in sql.split(";\n") if s.strip()]


class SchemaOutOfDate(RuntimeError):
    """The database's schema is not the one this ConnectLink was built for."""


class Migratable(Protocol):
    engine: str

    async def applied_migrations(self) -> set[int]: ...

    async def apply_migration(self, migration: Migration) -> bool:
        """Apply it in one transaction unless already applied (by a racing process); say which."""
        ...


@cache
def available(engine: str) -> tuple[Migration, ...]:
    folder = resources.files("connectlink.storage") / "sql" / engine
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return tuple(sorted(found, key=lambda m: m.version))


def latest(engine: str) -> int:
    return available(engine)[-1].version


async def upgrade(store: Migratable, target: int | None = None) -> list[int]:
    """Apply every pending migration up to ``target`` (default: all); return what was applied."""
    done = await store.applied_migrations()
    applied = []
    for migration in available(store.engine):
        if migration.version in done or (target is not None and migration.version > target):
            continue
        if await store.apply_migration(migration):
            applied.append(migration.version)
    return applied


async def ensure_current(store: Migratable) -> None:
    done = await store.applied_migrations()
    wanted = {m.version for m in available(store.engine)}
    missing = sorted(wanted - done)
    if missing:
        at = max(done, default=0)
        raise SchemaOutOfDate(
            f"the database schema is at version {at}, this ConnectLink needs version "
            f"{latest(store.engine)}: run `connectlink db upgrade`, or serve with --migrate"
        )
    unknown = sorted(done - wanted)
    if unknown:
        raise SchemaOutOfDate(
            f"the database schema has version {unknown[-1]}, newer than this ConnectLink "
            f"knows ({latest(store.engine)}): upgrade ConnectLink"
        )
