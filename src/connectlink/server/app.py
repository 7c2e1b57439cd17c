"""The app factory and the route table, which reads like the API docs."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectlink.clock import Clock, SystemClock
from connectlink.server.context import Context
from connectlink.server.endpoints import links, oauth, sandbox, users
from connectlink.server.render import EXCEPTION_HANDLERS, Handler, respond
from connectlink.settings import Settings
from connectlink.storage import Store, open_store


def route(path: str, **by_method: Handler) -> Route:
    """One path, its handler per method; other methods get 405 with the full ``Allow``."""

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await respond(by_method[method], request)

    return Route(path, dispatch, methods=list(by_method))


def routes(settings: Settings) -> list[Route]:
    """Every endpoint, in the order of the public docs."""
    table = [
        route("/v2/oauth/token", POST=oauth.token),
        route("/v2/oauth/token/revoke", POST=oauth.revoke),
        route("/v2/fulfillment/users", POST=users.create),
        route("/v2/fulfillment/users/{user_id}", GET=users.read),
        route("/v2/fulfillment/users/{user_id}/link", POST=links.link, GET=links.membership),
        route("/v2/fulfillment/users/{user_id}/privacy_request", POST=users.privacy_request),
    ]
    if settings.sandbox:
        table += [
            route("/v2/fulfillment_sandbox/instacart_users", POST=sandbox.create_instacart_user),
            route(
                "/v2/fulfillment_sandbox/instacart_users/{user_id}/authorize",
                POST=sandbox.authorize_instacart_user,
            ),
        ]
    return table


class AccessLog:
    """Method, path and status of each request. Never the query string or the body: either
    may carry a credential."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logging.getLogger("connectlink.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.log.info(
                '%s "%s %s" %d %.1fms', scope["client"][0] if scope.get("client") else "-",
                scope["method"], scope["path"], status, (time.perf_counter() - started) * 1000,
            )


def create_app(
    settings: Settings, store: Store | None = None, clock: Clock | None = None
) -> Starlette:
    """A ConnectLink server. Without ``store``, the lifespan opens ``settings.database_url``
    in the serving process (and closes it at shutdown)."""
    ctx = Context(settings=settings, clock=clock or SystemClock(), store=store)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        opened = ctx.store is None
        if opened:
            ctx.store = await open_store(settings.database_url, pool_size=settings.pool_size)
        try:
            yield
        finally:
            if opened and ctx.store is not None:
                await ctx.store.close()
                ctx.store = None

    middleware = [Middleware(AccessLog)] if settings.access_log else []
    app = Starlette(
        routes=routes(settings),
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.context = ctx
    return app


def app_from_env() -> Any:
    """The uvicorn factory (``connectlink.server.app:app_from_env``) for worker processes."""
    return create_app(Settings.from_env())
