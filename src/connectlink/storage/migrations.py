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
    """The database's schema is not the one this ConnectLink was built for: behind (``at`` is
    below ``needed``) or from a newer ConnectLink."""

    def __init__(self, at: int, needed: int, newer: bool = False) -> None:
        self.at, self.needed, self.newer = at, needed, newer
        super().__init__(self.explain())

    def explain(self, upgrade: str = "connectlink db upgrade") -> str:
        """The refusal, its hint giving ``upgrade`` as the command to run (as the user can run
        it: the CLI passes ``.venv/bin/connectlink db upgrade`` when that is how)."""
        if self.newer:
            return (f"the database schema has version {self.at}, newer than this ConnectLink "
                    f"knows ({self.needed}): upgrade ConnectLink")
        return (f"the database schema is at version {self.at}, this ConnectLink needs version "
                f"{self.needed}: run `{upgrade}`, or serve with --migrate")


class Migratable(Protocol):
    engine: str

    async def applied_migrations(self) -> set[int]: ...

    async def is_empty(self) -> bool:
        """Does the database hold nothing at all (no table, ours or anyone's)?"""
        ...

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


async def pending(store: Migratable, target: int | None = None) -> list[Migration]:
    """The migrations not applied yet, up to ``target`` (default: all), in order."""
    done = await store.applied_migrations()
    return [m for m in available(store.engine)
            if m.version not in done and (target is None or m.version <= target)]


async def upgrade(store: Migratable, target: int | None = None) -> list[int]:
    """Apply every pending migration up to ``target`` (default: all); return what was applied."""
    applied = []
    for migration in await pending(store, target):
        if await store.apply_migration(migration):
            applied.append(migration.version)
    return applied


async def create_if_new(store: Migratable) -> list[int]:
    """Give an empty database (a new SQLite file, a PostgreSQL schema without a table) the whole
    schema, then insist it is current: a database with anything in it is never changed here,
    so one at an older version is refused as ``ensure_current`` refuses it."""
    applied: list[int] = []
    if not await store.applied_migrations() and await store.is_empty():
        applied = await upgrade(store)
    await ensure_current(store)
    return applied


async def ensure_current(store: Migratable) -> None:
    done = await store.applied_migrations()
    wanted = {m.version for m in available(store.engine)}
    if sorted(wanted - done):
        raise SchemaOutOfDate(max(done, default=0), latest(store.engine))
    unknown = sorted(done - wanted)
    if unknown:
        raise SchemaOutOfDate(unknown[-1], latest(store.engine), newer=True)
