"""``connectlink``: a thin shell over the same services the HTTP handlers call."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from connectlink.clock import SystemClock
from connectlink.linking import retailers
from connectlink.settings import DEFAULT_DATABASE_URL, Settings
from connectlink.storage import open_store

DEMO_NAME = "Demo Retailer"
DEMO_REDIRECT_URI = "http://localhost:3000/account/instacart/callback"


def _database(args: argparse.Namespace) -> str:
    return str(args.database or os.environ.get("CONNECTLINK_DATABASE_URL", DEFAULT_DATABASE_URL))


async def _create_retailer(
    url: str, name: str, redirect_uris: list[str], require_pkce: bool = False,
    only_if_empty: bool = False,
) -> retailers.NewRetailer | None:
    store = open_store(url)
    try:
        if only_if_empty and await store.count_retailers() > 0:
            return None
        return await retailers.create(store, SystemClock(), name, redirect_uris, require_pkce)
    finally:
        await store.close()


def cmd_retailers_create(args: argparse.Namespace) -> int:
    created = asyncio.run(
        _create_retailer(_database(args), args.name, args.redirect_uri, args.require_pkce)
    )
    assert created is not None
    credentials = created.credentials()
    if args.json:
        print(json.dumps(credentials))
    else:
        for key, value in credentials.items():
            print(f"{key}: {value}")
        print("redirect_uris:", " ".join(created.client.redirect_uris))
        print("Keep the client secret now: only its digest is stored.")
    return 0


def _log_config() -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["connectlink"] = {"handlers": ["default"], "level": "INFO"}
    return config


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings.from_env(
        database_url=args.database, profile=args.profile,
        access_log=False if args.no_access_log else None,
    )
    if settings.profile == "emulator" and not args.no_demo:
        demo = asyncio.run(
            _create_retailer(settings.database_url, DEMO_NAME, [DEMO_REDIRECT_URI],
                             only_if_empty=True)
        )
        if demo is not None:
            print("Created the demo retailer (shown once; only digests are stored):")
            for key, value in demo.credentials().items():
                print(f"  {key}: {value}")
            print(f"  redirect_uri: {DEMO_REDIRECT_URI}", flush=True)
    os.environ.update(settings.to_env())  # worker processes rebuild the settings from these
    uvicorn.run(
        "connectlink.server.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,  # ours leaves out query strings, which may hold credentials
        log_config=_log_config(),
        server_header=False,
    )
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="connectlink", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the Connect API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--database", help=f"database URL (default {DEFAULT_DATABASE_URL})")
    serve.add_argument("--profile", choices=["emulator", "production"])
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--no-access-log", action="store_true")
    serve.add_argument("--no-demo", action="store_true",
                       help="do not create the demo retailer on an empty database")
    serve.set_defaults(run=cmd_serve)

    retailer_commands = commands.add_parser("retailers", help="manage retailers").add_subparsers(
        dest="retailers_command", required=True
    )
    create = retailer_commands.add_parser("create", help="create a retailer and its OAuth client")
    create.add_argument("--name", required=True)
    create.add_argument("--redirect-uri", action="append", required=True)
    create.add_argument("--require-pkce", action="store_true")
    create.add_argument("--database", help="database URL")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(run=cmd_retailers_create)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ValueError as exc:
        print(f"connectlink: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
