"""What every command shares: the database it opens, how it prints (JSON or a table), the
command name its hints give, the progress bar, and the failures that become exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from connectlink import text
from connectlink.linking.links import iso_utc
from connectlink.settings import DEFAULT_DATABASE_URL
from connectlink.storage import Schema, Store, masked_url, migrations, using_store

T = TypeVar("T")

# Exit codes: argparse's own 2 for usage, then one per kind of failure.
OK, USAGE, NOT_FOUND, REFUSED, UNREACHABLE = 0, 2, 3, 4, 5


class Failed(Exception):
    """A command that cannot go on: ``message`` is the one line for stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def database(args: argparse.Namespace) -> str:
    """``--database``, else ``CONNECTLINK_DATABASE_URL``, else the default SQLite file."""
    given = getattr(args, "database", None)
    return str(given or os.environ.get("CONNECTLINK_DATABASE_URL", DEFAULT_DATABASE_URL))


def run(
    args: argparse.Namespace, action: Callable[[Store], Awaitable[T]], schema: Schema = "create"
) -> T:
    """``action`` on the command's database. An empty database gets the schema first (a new
    SQLite file just works); one at an older version is refused (``SchemaOutOfDate``)."""
    return asyncio.run(using_store(database(args), action, schema))


def program() -> str:
    """This CLI as the user can run it again from here: ``connectlink`` if that is on PATH and
    is this installation, else its console script's path (``.venv/bin/connectlink`` after
    ``make run``), else this interpreter with ``-m connectlink``."""
    script = Path(sys.executable).parent / "connectlink"
    on_path = shutil.which("connectlink")
    if on_path is not None and script.exists() and Path(on_path).resolve() == script.resolve():
        return "connectlink"
    if script.exists():
        return _shown(script)
    return f"{_shown(Path(sys.executable))} -m connectlink"


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is under it (shorter, and it still
    runs as printed: it holds a slash), else absolute."""
    absolute = path.absolute()
    try:
        return shlex.quote(str(absolute.relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(absolute))


def hint(command: str, database_url: str | None = None) -> str:
    """``command`` as a line the user can paste: the program as ``program`` gives it, and
    ``--database`` when the URL is not the default (masked if it holds a password)."""
    line = f"{program()} {command}"
    if database_url and database_url != DEFAULT_DATABASE_URL:
        line += f" --database {shlex.quote(masked_url(database_url))}"
    return line


def database_hint(args: argparse.Namespace) -> str | None:
    """The URL a hint must repeat: only one given with ``--database`` (the environment that
    supplied ``CONNECTLINK_DATABASE_URL`` will supply it again)."""
    given = getattr(args, "database", None)
    return str(given) if given else None


def explain(refusal: migrations.SchemaOutOfDate, args: argparse.Namespace) -> str:
    """The schema refusal, with an upgrade command that works as printed."""
    return refusal.explain(hint("db upgrade", database_hint(args)))


def emit_json(value: Any) -> None:
    print(json.dumps(value))


def when(timestamp: float | None) -> str | None:
    return iso_utc(timestamp) if timestamp is not None else None


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], empty: str) -> str:
    """Aligned columns, nothing cut: ids and URIs must survive a copy and paste whole. With no
    rows, the sentence ``empty`` instead."""
    cells = [list(headers)] + [[cell(value) for value in row] for row in rows]
    if len(cells) == 1:
        return empty
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def cell(value: object) -> str:
    """A value as text for people: ``-`` for none, yes or no for a flag."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


class Progress:
    """A rich progress bar on stdout while it is a terminal and the output is not ``--json``;
    otherwise nothing at all, so pipes and JSON carry only the data. ``print`` goes above the
    bar while it runs (rich redirects stdout)."""

    def __init__(self, args: argparse.Namespace, total: int, description: str) -> None:
        self.enabled = sys.stdout.isatty() and not getattr(args, "json", False)
        self.total, self.description = total, description
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import Progress as Bar

            self._bar = Bar(transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def describe(self, description: str) -> None:
        """Say what is under way now."""
        if self._bar is not None:
            self._bar.update(self._task, description=description)

    def advance(self) -> None:
        """One more done."""
        if self._bar is not None:
            self._bar.update(self._task, advance=1)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()


# argparse: every command's shared options, and help that shows real defaults -----------------
class HelpFormatter(argparse.HelpFormatter):
    """argparse's help with "(default: X)" after every option that has a default worth naming
    (not for flags, which default to off, nor for options with no default)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        said = action.help or ""
        default = action.default
        if "%(default)" in said or default in (None, False, argparse.SUPPRESS) or (
            not action.option_strings
        ):
            return said
        return f"{said} (default: %(default)s)"


def command(
    commands: Any, name: str, summary: str, *, database: bool = True, json_output: bool = False,
) -> argparse.ArgumentParser:
    """A subcommand with its one-line summary, ``--database`` and ``--json`` as it needs."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=summary, formatter_class=HelpFormatter
    )
    if database:
        parser.add_argument(
            "--database", metavar="URL",
            help="database URL: sqlite:///path/to.db or postgresql://user@host:5432/db "
                 f"(default: $CONNECTLINK_DATABASE_URL, else {DEFAULT_DATABASE_URL})",
        )
    if json_output:
        parser.add_argument("--json", action="store_true",
                            help="print JSON (for scripts) instead of text for people")
    return parser


def group(commands: Any, name: str, summary: str) -> Any:
    """A command that only holds subcommands (``db``, ``retailers``...)."""
    parser = commands.add_parser(name, help=summary, description=summary,
                                 formatter_class=HelpFormatter)
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def count(value: str) -> int:
    """An id, a limit or a count: a whole number from 0 to 2^63 - 1 (a 64-bit column)."""
    number = text.decimal_id(value)
    if number is None:
        raise argparse.ArgumentTypeError(f"not a number from 0 to 2^63-1: {value!r}")
    return number
