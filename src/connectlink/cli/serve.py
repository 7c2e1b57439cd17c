"""``connectlink serve``: check the schema once, make the demo retailer on an empty emulator
database, say what is being served, then hand over to uvicorn (its workers rebuild the
settings from the environment)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from typing import Any
from urllib.parse import urlencode

from connectlink import __version__
from connectlink.cli import shell
from connectlink.clock import SystemClock
from connectlink.linking import retailers
from connectlink.models import OAuthClient
from connectlink.server.observe import logs, metrics_dir
from connectlink.settings import MIN_SECRET_KEY, Settings
from connectlink.storage import Schema, Store, masked_url, using_store

DEMO_NAME = "Demo Retailer"
DEMO_REDIRECT_URI = "http://localhost:3000/account/instacart/callback"


def register(commands: Any) -> None:
    serve = shell.command(commands, "serve", "serve the Connect API and the Login pages")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=_port, default=8080, help="port to listen on (1-65535)")
    serve.add_argument("--profile", choices=["emulator", "production"],
                       help="emulator: sandbox on, a demo retailer on an empty database; "
                            "production: sandbox off, needs CONNECTLINK_SECRET_KEY "
                            "(default: $CONNECTLINK_PROFILE, else emulator)")
    serve.add_argument("--workers", type=_at_least_one, default=1,
                       help="worker processes (they share the database)")
    serve.add_argument("--migrate", action="store_true",
                       help="upgrade the database schema first if it is behind (an empty "
                            "database always gets the schema)")
    serve.add_argument("--no-access-log", action="store_true",
                       help="do not log requests (the log never holds query strings or bodies)")
    serve.add_argument("--no-metrics", action="store_true",
                       help="count nothing for Prometheus and serve no /metrics")
    serve.add_argument("--log-format", choices=["text", "json"],
                       help="log lines as text for people, or one JSON object a line (default: "
                            "$CONNECTLINK_LOG_FORMAT, else text when stderr is a terminal and "
                            "json when it is not)")
    serve.add_argument("--no-demo", action="store_true",
                       help="do not create the demo retailer on an empty emulator database")
    serve.add_argument("--redis", metavar="URL",
                       help="keep the rate-limit buckets in this Redis, so that one limit "
                            "holds across every worker and host (default: "
                            "$CONNECTLINK_REDIS_URL, else each worker keeps its own)")
    serve.add_argument("--forwarded-allow-ips", metavar="IPS",
                       help="believe X-Forwarded-For and X-Forwarded-Proto only from these "
                            "proxy addresses or networks, separated by commas (* for any) "
                            "(default: $CONNECTLINK_FORWARDED_ALLOW_IPS, else 127.0.0.1,::1 in "
                            "the emulator profile and none in production)")
    serve.add_argument("--shutdown-timeout", metavar="SECONDS", type=int,
                       help="on SIGTERM or SIGINT, stop accepting connections and give the "
                            "requests in flight this long to finish (default: "
                            "$CONNECTLINK_SHUTDOWN_TIMEOUT, else 10)")
    serve.set_defaults(run=serve_api)

    document = shell.command(commands, "openapi",
                             "print the OpenAPI 3.1 document that serve serves at /openapi.json")
    document.add_argument("--profile", choices=["emulator", "production"], default="emulator",
                          help="the profile whose operations it lists (default: emulator)")
    document.set_defaults(run=print_openapi)


def print_openapi(args: argparse.Namespace) -> int:
    """The document as served (``GET /openapi.json``), without a server or a database: for a
    client generator or a linter."""
    # Imported here: every handler comes with the operation table, which no other command
    # needs at start.
    from connectlink.server import openapi
    from connectlink.server.operations import for_settings

    # A placeholder key: the document does not depend on it, and production needs one.
    settings = Settings.for_profile(args.profile, secret_key="-" * MIN_SECRET_KEY)
    sys.stdout.buffer.write(openapi.served(for_settings(settings)).encoded + b"\n")
    return 0


def _port(value: str) -> int:
    port = int(value) if value.isdigit() else 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {value!r} (1-65535)")
    return port


def _at_least_one(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"not a number of workers: {value!r} (1 or more)")
    return int(value)


def _check_address(host: str, port: int) -> None:
    """Refuse a taken address before anything is created or announced (uvicorn would say so
    only after the banner, with a traceback-like line and exit code 3)."""
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
    except OSError as exc:
        raise shell.Failed(shell.REFUSED, f"cannot listen on {host}:{port}: "
                           f"{exc.strerror or exc} (is another server running there?)") from exc


def authorization_url(host: str, port: int, client: OAuthClient) -> str:
    """The Login URL a retailer sends shoppers to (connect-api.md section 2), ``state`` left
    for the retailer to fill in."""
    query = urlencode({
        "response_type": "code", "client_id": client.client_id,
        "redirect_uri": client.redirect_uris[0], "scope": "account_linking",
    })
    return f"{_base_url(host, port)}/oauth/authorize?{query}&state=STATE"


def _base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


async def _demo(store: Store) -> tuple[retailers.NewRetailer | None, OAuthClient | None]:
    """The demo retailer if the database has none yet, and the first client either way."""
    created = None
    if await store.count_retailers() == 0:
        created = await retailers.create(store, SystemClock(), DEMO_NAME, [DEMO_REDIRECT_URI])
    first = await store.list_clients()
    return created, first[0] if first else None


def _announce_demo(args: argparse.Namespace, database: str, schema: Schema) -> None:
    created, first = asyncio.run(using_store(database, _demo, schema))
    if created is not None:
        print("Created the demo retailer (shown once; only digests are stored):")
        for key, value in created.credentials().items():
            print(f"  {key}: {value}")
        print(f"  redirect_uri: {DEMO_REDIRECT_URI}")
    else:
        url = shell.database_hint(args)
        print("The database has retailers already; their secrets were shown when they were "
              f"made. `{shell.hint('retailers list', url)}` shows their client ids, "
              f"`{shell.hint('clients rotate-secret --client-id CLIENT_ID', url)}` gives one "
              f"a new secret, `{shell.hint('retailers create --name N --redirect-uri U', url)}`"
              " makes another.")
    if first is not None:
        print("Login with Instacart, for the first retailer (put your own state in):\n  "
              + authorization_url(args.host, args.port, first))


def serve_api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings.from_env(
        database_url=args.database, profile=args.profile,
        access_log=False if args.no_access_log else None,
        metrics=False if args.no_metrics else None, redis_url=args.redis,
        forwarded_allow_ips=args.forwarded_allow_ips, shutdown_timeout=args.shutdown_timeout,
    )
    _check_address(args.host, args.port)
    # Check the schema here, once, before any worker starts: an empty database gets it,
    # one that is behind is refused unless --migrate.
    schema: Schema = "upgrade" if args.migrate else "create"
    if settings.profile == "emulator" and not args.no_demo:
        _announce_demo(args, settings.database_url, schema)
    else:
        asyncio.run(using_store(settings.database_url, _nothing, schema))
    workers = f"{args.workers} worker{'s' if args.workers != 1 else ''}"
    print(f"ConnectLink {__version__}: {settings.profile} profile, sandbox "
          f"{'on' if settings.sandbox else 'off'}, database {masked_url(settings.database_url)}, "
          f"serving {_base_url(args.host, args.port)} ({workers})", flush=True)
    _announce_limits(settings, args.workers)
    if settings.emulated:
        print(f"Emulator controls (clocks, faults, journal, snapshots): "
              f"{_base_url(args.host, args.port)}/_connectlink/, from this machine"
              + (" or with CONNECTLINK_ADMIN_TOKEN" if settings.admin_token else ""),
              flush=True)
    log_format = args.log_format or settings.log_format or logs.default_format()
    # Before anything that serves imports prometheus_client: its mode is fixed at that import.
    metrics_dir.prepare_directory(args.workers)
    os.environ.update(settings.to_env())  # worker processes rebuild the settings from these
    # SIGTERM stops the server as Ctrl+C does. uvicorn shuts down gracefully on either, then
    # raises the signal again under the handler found here: SIGTERM's default would end the
    # process with -15, this one raises KeyboardInterrupt, which uvicorn.run takes as done.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    proxies = settings.forwarded_allow_ips
    uvicorn.run(
        "connectlink.server.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="connectlink.server.protocol:HeaderDeadlineProtocol",  # 408 on slow headers
        access_log=False,  # ours leaves out query strings, which may hold credentials
        log_config=logs.log_config(log_format),  # every worker: a queue, a line a record
        server_header=False,
        # X-Forwarded-For/-Proto set the client's address and scheme only from these peers;
        # trusting nobody needs no middleware at all (uvicorn's FORWARDED_ALLOW_IPS is unread).
        proxy_headers=bool(proxies.strip()),
        forwarded_allow_ips=proxies,
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    return shell.OK


def _announce_limits(settings: Settings, workers: int) -> None:
    """The rate limits in force (decisions.md "Rate limits"), when any is."""
    rates = {"token endpoints": settings.rate_limit_token, "API": settings.rate_limit_api}
    on = [f"{name} {rate:g}/s" for name, rate in rates.items() if rate > 0]
    if not on:
        return
    where = (f"buckets in Redis at {masked_url(settings.redis_url)}" if settings.redis_url
             else "buckets in each worker" + (f": {workers} workers admit up to {workers} "
                                              "times as much (--redis shares them)"
                                              if workers > 1 else ""))
    print(f"Rate limits per client: {', '.join(on)}, burst twice that; {where}", flush=True)


async def _nothing(store: Store) -> None:
    return None
