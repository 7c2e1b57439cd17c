"""``connectlink``: a thin shell over the same services the HTTP handlers call (the commands
live in ``serve``, ``db``, ``retailers``, ``users`` and ``demo``, and ``emulator``, which talks
to a running server's control plane; what they share, in ``shell``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from connectlink import __version__
from connectlink.cli import db, demo, emulator, retailers, serve, shell, users
from connectlink.errors import ConnectError, MultipleErrors, ServiceUnavailable, UserNotFound
from connectlink.linking.retailers import NotFound, Refused
from connectlink.storage import DatabaseUnreachable, migrations

__all__ = ["main", "parser"]

DESCRIPTION = """\
ConnectLink, the Instacart Connect account-linking API as a server you run yourself.

Every command that prints data prints text for people, or JSON with --json. A failure is one
line on stderr, "connectlink: <what happened>", and an exit code that says which kind:
  2  usage: a bad option, database URL or setting
  3  not found: no such retailer, client or user
  4  refused: a schema that is behind, a rule broken, a server that said no
  5  unreachable: a database that cannot be opened, or a server that does not answer
"""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="connectlink", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    top.add_argument("--version", action="version", version=f"connectlink {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (serve, db, retailers, users, demo, emulator):
        module.register(commands)
    return top


def _wire_error(error: ConnectError) -> str:
    """A Connect error as one line: ``email: An account already exists with this email``."""
    errors = error.errors if isinstance(error, MultipleErrors) else [error]
    return "; ".join(f"{e.key}: {e.message}" if e.key else e.message for e in errors)


def _failure(exc: BaseException, args: argparse.Namespace) -> shell.Failed | None:
    """The exit code and line for what a command raised; None for a bug (let it show)."""
    if isinstance(exc, shell.Failed):
        return exc
    if isinstance(exc, NotFound | UserNotFound):
        return shell.Failed(shell.NOT_FOUND, str(exc))
    if isinstance(exc, migrations.SchemaOutOfDate):
        return shell.Failed(shell.REFUSED, shell.explain(exc, args))
    if isinstance(exc, Refused):
        return shell.Failed(shell.REFUSED, str(exc))
    if isinstance(exc, ConnectError) and not isinstance(exc, ServiceUnavailable):
        return shell.Failed(shell.REFUSED, _wire_error(exc))
    if isinstance(exc, ServiceUnavailable):
        return shell.Failed(shell.UNREACHABLE, "the database stopped answering; try again")
    if isinstance(exc, DatabaseUnreachable):
        return shell.Failed(shell.UNREACHABLE, str(exc))
    if isinstance(exc, ValueError):
        return shell.Failed(shell.USAGE, str(exc))
    return None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (captured in a test): nothing to flush
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code (``connectlink`` and ``python -m connectlink`` exit
    with it). Usage errors, ``--help`` and ``--version`` return argparse's code instead of
    exiting, so tests and scripts can call this in process."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else shell.USAGE
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): nobody is left to tell
        _silence_stdout()
        return 1
    except Exception as exc:
        failure = _failure(exc, args)
        if failure is None:
            raise
        print(f"connectlink: {failure}", file=sys.stderr)
        return failure.code
