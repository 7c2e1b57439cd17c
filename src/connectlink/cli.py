"""``connectlink``: a thin shell over the same services the HTTP handlers call."""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from connectlink.clock import SystemClock
from connectlink.errors import UserNotFound
from connectlink.linking import links, retailers
from connectlink.models import OAuthClient
from connectlink.settings import DEFAULT_DATABASE_URL, Settings
from connectlink.storage import Schema, Store, migrations, using_store

DEMO_NAME = "Demo Retailer"
DEMO_REDIRECT_URI = "http://localhost:3000/account/instacart/callback"


def _database(args: argparse.Namespace) -> str:
    return str(args.database or os.environ.get("CONNECTLINK_DATABASE_URL", DEFAULT_DATABASE_URL))


async def _create_retailer(
    url: str, name: str, redirect_uris: list[str], require_pkce: bool = False,
    only_if_empty: bool = False, schema: Schema = "check",
) -> retailers.NewRetailer | None:
    async def create(store: Store) -> retailers.NewRetailer | None:
        if only_if_empty and await store.count_retailers() > 0:
            return None
        return await retailers.create(store, SystemClock(), name, redirect_uris, require_pkce)

    result: retailers.NewRetailer | None = await using_store(url, create, schema)
    return result


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    async def upgrade(store: Store) -> list[int]:
        return await migrations.upgrade(store)

    applied = asyncio.run(using_store(_database(args), upgrade, "as-is"))
    print(f"applied {', '.join(map(str, applied))}" if applied else "already up to date")
    return 0


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


def cmd_links_unlink(args: argparse.Namespace) -> int:
    """The operator's unlink, as Instacart customer service would do it (decisions.md)."""
    try:
        unlinked = asyncio.run(using_store(_database(args), lambda store: links.unlink(
            store, SystemClock(), args.retailer_id, args.user_id)))
    except UserNotFound:
        print(f"connectlink: retailer {args.retailer_id} has no user {args.user_id!r}",
              file=sys.stderr)
        return 1
    print("unlinked" if unlinked else "not linked: nothing to do")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    trail = asyncio.run(using_store(
        _database(args), lambda store: store.audit_trail(args.retailer_id)))
    for at, action, user_id, account_id in trail:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
        print(json.dumps({"at": when, "action": action, "user_id": user_id,
                          "instacart_user_id": account_id}))
    return 0


def _log_config() -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["connectlink"] = {"handlers": ["default"], "level": "INFO"}
    return config


async def _nothing(store: Store) -> None:
    return None


async def _first_client(store: Store) -> OAuthClient | None:
    clients = await store.list_clients()
    return clients[0] if clients else None


def authorization_url(host: str, port: int, client: OAuthClient) -> str:
    """The Login URL a retailer sends shoppers to (connect-api.md section 2), ``state`` left
    for the retailer to fill in."""
    shown_host = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
    query = urlencode({
        "response_type": "code", "client_id": client.client_id,
        "redirect_uri": client.redirect_uris[0], "scope": "account_linking",
    })
    return f"http://{shown_host}:{port}/oauth/authorize?{query}&state=STATE"


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings.from_env(
        database_url=args.database, profile=args.profile,
        access_log=False if args.no_access_log else None,
    )
    # Check (or upgrade) the schema here, once, before any worker starts.
    schema: Schema = "upgrade" if args.migrate else "check"
    if settings.profile == "emulator" and not args.no_demo:
        demo = asyncio.run(
            _create_retailer(settings.database_url, DEMO_NAME, [DEMO_REDIRECT_URI],
                             only_if_empty=True, schema=schema)
        )
        if demo is not None:
            print("Created the demo retailer (shown once; only digests are stored):")
            for key, value in demo.credentials().items():
                print(f"  {key}: {value}")
            print(f"  redirect_uri: {DEMO_REDIRECT_URI}")
        else:
            print("The database has retailers already; their secrets were shown when they were "
                  "made. `.venv/bin/connectlink retailers create --name N --redirect-uri U` "
                  "makes another.")
        first = asyncio.run(using_store(settings.database_url, _first_client))
        if first is not None:
            print("Login with Instacart, for the first retailer (put your own state in):\n  "
                  + authorization_url(args.host, args.port, first), flush=True)
    else:
        asyncio.run(using_store(settings.database_url, _nothing, schema))
    os.environ.update(settings.to_env())  # worker processes rebuild the settings from these
    uvicorn.run(
        "connectlink.server.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="connectlink.server.protocol:HeaderDeadlineProtocol",  # 408 on slow headers
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
    serve.add_argument("--migrate", action="store_true",
                       help="upgrade the database schema first if it is behind")
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

    db_commands = commands.add_parser("db", help="the database schema").add_subparsers(
        dest="db_command", required=True
    )
    upgrade = db_commands.add_parser("upgrade", help="apply pending schema migrations")
    upgrade.add_argument("--database", help="database URL")
    upgrade.set_defaults(run=cmd_db_upgrade)

    link_commands = commands.add_parser("links", help="operator actions on links").add_subparsers(
        dest="links_command", required=True
    )
    unlink = link_commands.add_parser("unlink", help="unlink a Connect user (recorded)")
    unlink.add_argument("--retailer-id", type=int, required=True)
    unlink.add_argument("--user-id", required=True)
    unlink.add_argument("--database", help="database URL")
    unlink.set_defaults(run=cmd_links_unlink)

    audit = commands.add_parser("audit", help="a retailer's audit trail, one JSON line an event")
    audit.add_argument("--retailer-id", type=int, required=True)
    audit.add_argument("--database", help="database URL")
    audit.set_defaults(run=cmd_audit)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ValueError, migrations.SchemaOutOfDate) as exc:
        print(f"connectlink: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"connectlink: cannot reach the database: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
