"""The operators' endpoints: ``/healthz`` (the process answers), ``/readyz`` (it can serve: the
database answers and holds the schema this ConnectLink needs) and ``/metrics`` (Prometheus).

A server that is not ready answers ``/readyz`` as it answers any request it cannot serve: the
Connect 503 envelope with ``Retry-After``. What is wrong goes to the log, tied to the probe by
its request id, not into the body: a probe may be reachable from anywhere, and the database's
whereabouts are nobody's business there.
"""

from __future__ import annotations

import asyncio
import logging
import os

from starlette.requests import Request
from starlette.responses import Response

from connectlink import text, wire
from connectlink.errors import ServiceUnavailable
from connectlink.server.context import Context, context
from connectlink.server.render import json_response
from connectlink.storage import DatabaseUnreachable, migrations
from connectlink.storage.sqlite import path_from_url

READY_TIMEOUT = 2.0  # seconds the readiness check waits on the database
log = logging.getLogger("connectlink.health")


async def healthz(request: Request) -> Response:
    return json_response(wire.HEALTHY)


async def readyz(request: Request) -> Response:
    problem = await not_ready(context(request))
    if problem is not None:
        log.warning("not ready: %s", problem)
        raise ServiceUnavailable()
    return json_response(wire.HEALTHY)


async def not_ready(ctx: Context) -> str | None:
    """Why this server cannot serve requests now; None when it can."""
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await migrations.ensure_current(ctx.db)
    except migrations.SchemaOutOfDate as exc:
        return exc.explain()
    except (ServiceUnavailable, DatabaseUnreachable, TimeoutError):
        return "the database does not answer"
    except Exception as exc:  # whatever else the driver raises: not ready either
        return f"the database failed ({type(exc).__name__})"
    if ctx.db.engine == "sqlite":
        # SQLite keeps using a file deleted under it (the open inode): the next process to
        # open the path would find a new, empty database.
        path = path_from_url(ctx.settings.database_url)
        if path != ":memory:" and not os.path.exists(path):
            return f"the SQLite database file {text.for_log(path)} is gone"
    return None


async def metrics(request: Request) -> Response:
    """Prometheus's text format: this process's metrics, or every worker's."""
    ctx = context(request)
    body, media_type = ctx.metrics.exposition(ctx.store, ctx.limiter)
    return Response(body, 200, media_type=media_type)
