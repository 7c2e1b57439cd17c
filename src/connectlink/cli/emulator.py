"""``connectlink emulator ...``: the emulator's control plane (docs/emulator.md) of a running
server, over HTTP through the SDK (``ConnectClient.emulator``): a retailer's virtual clock,
fault rules, the request journal, snapshots, restore and reset.

Unlike the other commands, these open no database: the state is the server's, so every worker
and host sees what they change. ``--url`` names the server (default ``$CONNECTLINK_URL``, else
``http://127.0.0.1:8080``); ``--admin-token`` (default ``$CONNECTLINK_ADMIN_TOKEN``) is needed
unless the server is reached on the loopback interface by a loopback name.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, get_args

import msgspec

from connectlink.cli import shell
from connectlink.client import ConnectClient, RetryPolicy
from connectlink.client.errors import ConnectionFailed, UnexpectedResponse
from connectlink.client.sync_client import Emulator
from connectlink.emulator import wire as ew
from connectlink.errors import (
    AdminForbidden,
    ConnectError,
    ConnectLinkError,
    FaultNotFound,
    MultipleErrors,
    NotFound,
    RetailerNotFound,
    ServiceUnavailable,
    SnapshotMismatch,
)

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8080"  # where `connectlink serve` listens by default
URL_VARIABLE = "CONNECTLINK_URL"
# A command line's retries: a server that is restarting, a database busy for a moment; no
# longer than a person waits for an answer.
RETRY = RetryPolicy(max_retries=2, base=0.25, cap=2.0)
TIME_HELP = "YYYY-MM-DDTHH:MM:SSZ (UTC)"


def register(commands: Any) -> None:
    group = shell.group(commands, "emulator", "the emulator's control plane, over HTTP: "
                        "virtual clocks, faults, the request journal, snapshots")

    clock = _command(group, "clock", "read a retailer's virtual clock, or move it (one of "
                     "the options)", json_output=True)
    clock.add_argument("retailer_id", type=shell.count, metavar="RETAILER_ID",
                       help="the retailer's id")
    move = clock.add_mutually_exclusive_group()
    move.add_argument("--advance", type=float, metavar="SECONDS",
                      help="move it on this many seconds (back, if negative)")
    move.add_argument("--set", metavar="TIME", help=f"make it read TIME, {TIME_HELP}")
    move.add_argument("--freeze", action="store_true", help="stop it where it stands")
    move.add_argument("--unfreeze", action="store_true", help="run on from where it stood")
    move.add_argument("--reset", action="store_true", help="the wall clock again, running")
    clock.set_defaults(run=clock_command)

    faults = shell.group(group, "faults", "fault rules: requests that fail as the real "
                         "service can")
    listing = _command(faults, "list", "every fault rule, oldest first, with how many "
                       "requests it matched and fired on", json_output=True)
    listing.set_defaults(run=list_faults)
    add = _command(faults, "add", "add a fault rule for a retailer's or a client's requests "
                   "(docs/emulator.md, Faults)", json_output=True)
    add.add_argument("--retailer-id", type=shell.count, help="whose requests: the retailer's")
    add.add_argument("--client-id", help="whose requests: one OAuth client's")
    add.add_argument("--endpoint", required=True, metavar="'METHOD PATH'",
                     help="as the API docs write it: 'POST /v2/oauth/token', "
                          "'GET /v2/fulfillment/users/{user_id}/link'...")
    add.add_argument("--fault", required=True, choices=get_args(ew.Fault), metavar="FAULT",
                     help=f"what the request gets: {', '.join(get_args(ew.Fault))}")
    add.add_argument("--times", type=shell.count,
                     help="fire this many times, then the rule is spent (default: no limit)")
    add.add_argument("--every", type=shell.count,
                     help="fire on every Nth matching request only (default: 1, each)")
    add.add_argument("--probability", type=float, metavar="P",
                     help="fire with this probability, 0 to 1 (default: 1)")
    add.add_argument("--seed", type=int, help="the seed of the probability's draws, so that "
                     "a run repeats exactly (default: 0)")
    add.add_argument("--retry-after", type=shell.count, metavar="SECONDS",
                     help="Retry-After of 429 and 503 (default: 1)")
    add.add_argument("--latency-ms", type=shell.count, metavar="MS",
                     help="the delay of latency, at most 60000 (default: 1000)")
    add.set_defaults(run=add_fault)
    delete = _command(faults, "delete", "delete one fault rule")
    delete.add_argument("fault_id", type=shell.count, metavar="ID", help="the rule's id")
    delete.set_defaults(run=delete_fault)
    clear = _command(faults, "clear", "delete every fault rule", json_output=True)
    clear.set_defaults(run=clear_faults)

    journal = _command(group, "journal", "a retailer's requests, newest first (secrets only "
                       "as fingerprints)", json_output=True)
    journal.add_argument("retailer_id", type=shell.count, metavar="RETAILER_ID",
                         help="the retailer's id")
    journal.add_argument("--path", help="only requests for this path, exactly as requested")
    journal.add_argument("--operation", help="only this operation: link, get_link, "
                         "issue_token...")
    journal.add_argument("--status", type=shell.count, help="only answers with this status")
    journal.add_argument("--since", metavar="TIME", help=f"only from TIME on, {TIME_HELP}")
    journal.add_argument("--until", metavar="TIME", help=f"only until TIME, {TIME_HELP}")
    journal.add_argument("--limit", type=shell.count,
                         help="at most this many (default: the whole journal)")
    journal.set_defaults(run=read_journal)

    snapshot = _command(group, "snapshot", "the whole state as JSON (secrets only as the "
                        "server stores them), on stdout or in a file")
    snapshot.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead")
    snapshot.set_defaults(run=take_snapshot)
    restore = _command(group, "restore", "replace the whole state with a snapshot")
    restore.add_argument("file", metavar="FILE", help="a file `emulator snapshot` wrote "
                         "('-': stdin)")
    restore.set_defaults(run=restore_snapshot)
    reset = _command(group, "reset", "empty every table, retailers included")
    reset.add_argument("--yes", action="store_true",
                       help="yes, empty it: without this, nothing is done")
    reset.set_defaults(run=reset_state)


def _command(commands: Any, name: str, summary: str, json_output: bool = False
             ) -> argparse.ArgumentParser:
    """A subcommand with the server's ``--url`` and ``--admin-token`` (no ``--database``)."""
    parser = shell.command(commands, name, summary, database=False, json_output=json_output)
    parser.add_argument("--url", help=f"the running emulator (default: ${URL_VARIABLE}, else "
                        f"{DEFAULT_URL})")
    parser.add_argument("--admin-token", metavar="TOKEN",
                        help="the server's admin token (default: $CONNECTLINK_ADMIN_TOKEN, "
                             "which keeps it out of the process list; none: the server admits "
                             "loopback callers only)")
    return parser


# talking to the server ------------------------------------------------------------------------
def _url(args: argparse.Namespace) -> str:
    return str(args.url or os.environ.get(URL_VARIABLE) or DEFAULT_URL)


def admin(args: argparse.Namespace, action: Callable[[Emulator], T]) -> T:
    """``action`` on the server's admin plane; what it raises, as the command's failure."""
    url = _url(args)
    # The admin plane takes no OAuth client: the client's credentials are never sent.
    with ConnectClient("", "", url, admin_token=args.admin_token or None, retry=RETRY,
                       timeout=30) as client:
        try:
            return action(client.emulator)
        except ConnectionFailed as exc:
            raise shell.Failed(shell.UNREACHABLE,
                               f"cannot reach the emulator at {url}: {exc.reason}") from None
        except ConnectLinkError as exc:
            raise _refusal(exc, args, url) from None


def _refusal(exc: ConnectLinkError, args: argparse.Namespace, url: str) -> shell.Failed:
    if isinstance(exc, RetailerNotFound):
        retailer = getattr(args, "retailer_id", None)
        return shell.Failed(shell.NOT_FOUND, f"no retailer {retailer}" if retailer is not None
                            else "no such retailer")
    if isinstance(exc, FaultNotFound):
        return shell.Failed(shell.NOT_FOUND, f"no fault rule {args.fault_id}")
    if type(exc) is NotFound:
        return shell.Failed(shell.REFUSED, f"the server at {url} has no admin plane (the "
                            "production profile has none)")
    if isinstance(exc, AdminForbidden):
        return shell.Failed(shell.REFUSED, f"{exc.message}: give --admin-token or "
                            "$CONNECTLINK_ADMIN_TOKEN")
    if isinstance(exc, SnapshotMismatch):
        return shell.Failed(shell.REFUSED, exc.detail or exc.message)
    if isinstance(exc, ServiceUnavailable):
        return shell.Failed(shell.UNREACHABLE, "the server's database stopped answering; "
                            "try again")
    if isinstance(exc, ConnectError):
        errors = exc.errors if isinstance(exc, MultipleErrors) else [exc]
        return shell.Failed(shell.REFUSED, "; ".join(
            f"{e.key}: {e.message}" if e.key else e.message for e in errors))
    if isinstance(exc, UnexpectedResponse):
        return shell.Failed(shell.REFUSED, f"the server at {url} answered {exc.status}, not "
                            "as ConnectLink does (is it ConnectLink?)")
    return shell.Failed(shell.REFUSED, f"the server refused: {exc}")


def _print_json(value: msgspec.Struct | list[Any] | dict[str, Any]) -> None:
    """A body as the server sent it (the admin plane's Structs), as JSON."""
    shell.emit_json(msgspec.to_builtins(value))


# the clock ------------------------------------------------------------------------------------
def clock_command(args: argparse.Namespace) -> int:
    def act(plane: Emulator) -> ew.Clock:
        clock, retailer = plane.clock, args.retailer_id
        if args.advance is not None:
            return clock.advance(retailer, args.advance)
        if args.set is not None:
            return clock.set(retailer, args.set)
        if args.freeze:
            return clock.freeze(retailer)
        if args.unfreeze:
            return clock.unfreeze(retailer)
        if args.reset:
            return clock.reset(retailer)
        return clock.get(retailer)

    state = admin(args, act)
    if args.json:
        _print_json(state)
        return shell.OK
    print(f"retailer_id: {args.retailer_id}\nnow: {state.now}\n"
          f"offset_seconds: {state.offset_seconds:g}\nfrozen: {shell.cell(state.frozen)}")
    return shell.OK


# faults ---------------------------------------------------------------------------------------
def list_faults(args: argparse.Namespace) -> int:
    rules = admin(args, lambda plane: plane.faults.list())
    if args.json:
        _print_json(rules)
        return shell.OK
    print(shell.table(
        ["ID", "RETAILER_ID", "CLIENT_ID", "ENDPOINT", "FAULT", "TIMES", "EVERY", "PROBABILITY",
         "MATCHED", "FIRED", "CREATED_AT"],
        [(r.id, r.retailer_id, r.client_id, r.endpoint, r.fault, r.times, r.every,
          f"{r.probability:g}", r.matched, r.fired, r.created_at) for r in rules],
        empty="No fault rules."))
    return shell.OK


def add_fault(args: argparse.Namespace) -> int:
    if args.retailer_id is None and args.client_id is None:
        raise shell.Failed(shell.USAGE, "say whose requests: --retailer-id or --client-id")
    fault_id = admin(args, lambda plane: plane.faults.add(
        args.endpoint, args.fault, retailer_id=args.retailer_id, client_id=args.client_id,
        times=args.times, every=args.every, probability=args.probability, seed=args.seed,
        retry_after=args.retry_after, latency_ms=args.latency_ms))
    if args.json:
        shell.emit_json({"id": fault_id})
    else:
        print(f"added fault rule {fault_id}: {args.fault} on {args.endpoint}")
    return shell.OK


def delete_fault(args: argparse.Namespace) -> int:
    admin(args, lambda plane: plane.faults.delete(args.fault_id))
    print(f"deleted fault rule {args.fault_id}")
    return shell.OK


def clear_faults(args: argparse.Namespace) -> int:
    deleted = admin(args, lambda plane: plane.faults.clear())
    if args.json:
        shell.emit_json({"deleted": deleted})
    else:
        print(f"deleted {deleted} fault rule{'' if deleted == 1 else 's'}")
    return shell.OK


# the journal ----------------------------------------------------------------------------------
def read_journal(args: argparse.Namespace) -> int:
    entries = admin(args, lambda plane: plane.journal(
        args.retailer_id, path=args.path, operation=args.operation, status=args.status,
        since=args.since, until=args.until, limit=args.limit))
    if args.json:
        _print_json(entries)
        return shell.OK
    filtered = any(getattr(args, name) is not None
                   for name in ("path", "operation", "status", "since", "until"))
    print(shell.table(
        ["AT", "METHOD", "PATH", "OPERATION", "STATUS", "ERROR", "FAULT", "LATENCY_MS",
         "REQUEST_ID"],
        [(e.at, e.method, e.path, e.operation, e.status, _error(e), e.fault,
          f"{e.latency_ms:.1f}", e.request_id) for e in entries],
        empty=f"Retailer {args.retailer_id} has no journal entries"
              f"{' that match' if filtered else ' yet'}."))
    return shell.OK


def _error(entry: ew.JournalEntry) -> str | None:
    """``1001 (linking_token)``, ``invalid_grant``, or None for a success."""
    if entry.error_code is None:
        return None
    return f"{entry.error_code} ({entry.error_key})" if entry.error_key else entry.error_code


# snapshots ------------------------------------------------------------------------------------
def take_snapshot(args: argparse.Namespace) -> int:
    taken = admin(args, lambda plane: plane.snapshot())
    content = msgspec.json.encode(taken)
    if args.output is None:
        sys.stdout.write(content.decode() + "\n")
        return shell.OK
    try:
        Path(args.output).write_bytes(content)
    except OSError as exc:
        raise shell.Failed(shell.USAGE, f"cannot write {args.output}: {exc.strerror}") from None
    print(f"wrote the snapshot taken at {taken.taken_at} (schema {taken.schema}, "
          f"{len(taken.tables)} tables) to {args.output}")
    return shell.OK


def restore_snapshot(args: argparse.Namespace) -> int:
    try:
        content = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise shell.Failed(shell.USAGE, f"cannot read {args.file}: {exc.strerror}") from None
    try:
        taken = msgspec.json.decode(content)
    except msgspec.DecodeError:
        raise shell.Failed(shell.USAGE, f"{args.file} is not JSON") from None
    if not isinstance(taken, dict):
        raise shell.Failed(shell.USAGE, f"{args.file} holds no snapshot (a JSON object)")
    admin(args, lambda plane: plane.restore(taken))
    print(f"restored the snapshot taken at {taken.get('taken_at')} "
          f"(schema {taken.get('schema')})")
    return shell.OK


def reset_state(args: argparse.Namespace) -> int:
    if not args.yes:
        raise shell.Failed(shell.USAGE, "reset empties every table, retailers included: say "
                           "--yes to do it")
    admin(args, lambda plane: plane.reset())
    print("reset: every table is empty")
    return shell.OK
