"""``connectlink db upgrade|status|sweep``: the schema version, moving it forward, and
retention by hand."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from connectlink.cli import shell
from connectlink.clock import SystemClock
from connectlink.linking import retention
from connectlink.storage import Store, masked_url, migrations


def register(commands: Any) -> None:
    db = shell.group(commands, "db", "the database schema")
    upgrade = shell.command(db, "upgrade", "apply the pending schema migrations (safe to run "
                            "from several hosts at once)", json_output=True)
    upgrade.set_defaults(run=upgrade_schema)
    status = shell.command(db, "status", "the schema version, the latest this ConnectLink "
                           "knows, and what is pending; exit 0 if current, 4 if not",
                           json_output=True)
    status.set_defaults(run=schema_status)
    sweep = shell.command(db, "sweep", "remove now what the server's sweeper removes every "
                          "CONNECTLINK_SWEEP_INTERVAL seconds: tokens and codes expired more "
                          "than a day ago, Connect users past their privacy retention",
                          json_output=True)
    sweep.add_argument("--batch", type=_batch, metavar="N",
                       help="rows a statement (default: 500 on SQLite, 5000 on PostgreSQL)")
    sweep.set_defaults(run=sweep_now)


def upgrade_schema(args: argparse.Namespace) -> int:
    async def upgrade(store: Store) -> tuple[list[int], int]:
        pending = await migrations.pending(store)
        applied = []
        with shell.Progress(args, len(pending), "applying migrations") as progress:
            for migration in pending:
                progress.describe(f"migration {migration.version} ({migration.name})")
                if await store.apply_migration(migration):
                    applied.append(migration.version)
                progress.advance()
        return applied, max(await store.applied_migrations(), default=0)

    applied, version = shell.run(args, upgrade, "as-is")
    if args.json:
        shell.emit_json({"applied": applied, "version": version})
    else:
        print(f"applied {', '.join(map(str, applied))}" if applied else "already up to date")
    return shell.OK


def schema_status(args: argparse.Namespace) -> int:
    """Read only: a new database is reported at version 0, not given the schema."""
    async def status(store: Store) -> tuple[str, set[int], list[migrations.Migration]]:
        return store.engine, await store.applied_migrations(), await migrations.pending(store)

    engine, done, pending = shell.run(args, status, "as-is")
    latest = migrations.latest(engine)
    version = max(done, default=0)
    current = not pending and version <= latest
    url = masked_url(shell.database(args))
    if args.json:
        shell.emit_json({
            "database": url, "engine": engine, "version": version, "latest": latest,
            "pending": [m.version for m in pending], "current": current,
        })
    else:
        waiting = ", ".join(f"{m.version} ({m.name})" for m in pending) or "none"
        print(f"database: {url}\nengine:   {engine}\nversion:  {version} (this ConnectLink's "
              f"latest: {latest})\npending:  {waiting}")
    if current:
        return shell.OK
    refusal = migrations.SchemaOutOfDate(version, latest, newer=version > latest)
    print(f"connectlink: {shell.explain(refusal, args)}", file=sys.stderr)
    return shell.REFUSED


def _batch(value: str) -> int:
    size = shell.count(value)
    if size < 1:
        raise argparse.ArgumentTypeError("a batch is 1 row or more")
    return size


def sweep_now(args: argparse.Namespace) -> int:
    """Every batch until nothing is due; refused (exit 4) while another sweep holds the lease."""
    async def sweep(store: Store) -> retention.SweepReport:
        return await retention.Sweeper(store, SystemClock(), batch=args.batch).sweep()

    try:
        report = shell.run(args, sweep)
    except retention.SweepUnderWay as busy:
        raise shell.Failed(shell.REFUSED, f"{busy}, its lease until "
                           f"{shell.when(busy.lease.expires_at)}; try again then") from None
    removed = report.removed
    if args.json:
        shell.emit_json({"tokens": removed.tokens, "codes": removed.codes,
                         "users": removed.users, "rounds": report.rounds,
                         "seconds": round(report.seconds, 3), "complete": report.complete})
    else:
        print(f"tokens:  {removed.tokens} removed (expired more than a day ago)\n"
              f"codes:   {removed.codes} removed (expired more than a day ago)\n"
              f"users:   {removed.users} purged (past their privacy retention)\n"
              f"rounds:  {report.rounds}, {report.seconds:.2f} s")
    if not report.complete:
        print("connectlink: another sweeper took the lease over midway; it sweeps the rest",
              file=sys.stderr)
        return shell.REFUSED
    return shell.OK
