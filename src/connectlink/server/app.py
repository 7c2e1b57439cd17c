"""The app factory and the route table, which reads like the API docs.

The app is Starlette's ``Router`` (routing, path parameters, lifespan) with each endpoint a
plain ASGI callable, not a ``Starlette`` application: its middleware stack wraps every response
message in three layers of closures, a fifth of the link path's time on this project's machines,
for exception handling that ``render.respond`` already does in one place.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import State
from starlette.requests import Request
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectlink.clock import Clock, SystemClock
from connectlink.errors import InternalError, MethodNotAllowed, NotFound
from connectlink.server.context import Context
from connectlink.server.endpoints import links, oauth, sandbox, users
from connectlink.server.pages import views
from connectlink.server.render import (
    Handler,
    Renderer,
    error_response,
    log,
    page_error_response,
    respond,
)
from connectlink.settings import Settings
from connectlink.storage import Store, open_store


class Endpoint:
    """One path: its handler per method; any other method gets 405 with the full ``Allow``.
    ``render`` gives errors their form: JSON envelopes for the API, pages for a browser."""

    def __init__(self, by_method: dict[str, Handler], render: Renderer = error_response) -> None:
        self.by_method = by_method
        self.render = render
        allowed = set(by_method) | ({"HEAD"} if "GET" in by_method else set())
        self.allow = ", ".join(sorted(allowed))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        handler = self.by_method.get("GET" if method == "HEAD" else method)
        if handler is None:
            response = self.render(MethodNotAllowed(self.allow))
        else:
            response = await respond(handler, Request(scope, receive), self.render)
        await response(scope, receive, send)


def route(path: str, **by_method: Handler) -> Route:
    return Route(path, Endpoint(by_method))


def page(path: str, **by_method: Handler) -> Route:
    """A route a browser visits: its errors are pages, or redirects back to the client."""
    return Route(path, Endpoint(by_method, page_error_response))


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await error_response(NotFound())(scope, receive, send)


def routes(settings: Settings) -> list[Route]:
    """Every endpoint, in the order of the public docs."""
    table = [
        route("/v2/oauth/token", POST=oauth.token),
        route("/v2/oauth/token/revoke", POST=oauth.revoke),
        route("/v2/fulfillment/users", POST=users.create),
        route("/v2/fulfillment/users/{user_id}", GET=users.read),
        route("/v2/fulfillment/users/{user_id}/link", POST=links.link, GET=links.membership),
        route("/v2/fulfillment/users/{user_id}/privacy_request", POST=users.privacy_request),
        # "Login with Instacart" (section 2): the shopper's sign-in and consent, in a browser
        page("/oauth/authorize", GET=views.authorize, POST=views.decide),
        page("/oauth/sign_in", POST=views.sign_in),
        page("/oauth/sign_out", POST=views.sign_out),
        page("/oauth/assets/{name}", GET=views.asset),
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


class ConnectLink:
    """The ASGI application: the access log (if on), the route table, and a last resort that
    answers 5000 should anything outside a handler fail."""

    def __init__(self, ctx: Context, router: Router) -> None:
        self.state = State({"context": ctx})
        self.router = router
        self.handle: ASGIApp = AccessLog(router) if ctx.settings.access_log else router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        try:
            await self.handle(scope, receive, send)
        except Exception:
            if scope["type"] != "http":
                raise
            log.exception("unexpected failure on %s %s", scope["method"], scope["path"])
            with contextlib.suppress(RuntimeError):  # too late if the response had begun
                await error_response(InternalError())(scope, receive, send)


def create_app(
    settings: Settings, store: Store | None = None, clock: Clock | None = None
) -> ConnectLink:
    """A ConnectLink server. Without ``store``, the lifespan opens ``settings.database_url``
    in the serving process (and closes it at shutdown)."""
    ctx = Context(settings=settings, clock=clock or SystemClock(), store=store)

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        opened = ctx.store is None
        if opened:
            ctx.store = await open_store(settings.database_url, pool_size=settings.pool_size)
        try:
            await ctx.start()
            yield
        finally:
            if opened and ctx.store is not None:
                await ctx.store.close()
                ctx.store = None

    router = Router(routes(settings), redirect_slashes=False, default=not_found,
                    lifespan=lifespan)
    return ConnectLink(ctx, router)


def app_from_env() -> Any:
    """The uvicorn factory (``connectlink.server.app:app_from_env``) for worker processes."""
    return create_app(Settings.from_env())
