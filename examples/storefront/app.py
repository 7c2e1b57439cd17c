"""The storefront's pages: a shopper's profile and the two ends of "Link Instacart Account"."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from storefront.connect import ConnectAPI, ConnectFailure, pkce_pair

COOKIE = "storefront_session"
ATTEMPT_TTL = 600  # a link attempt (its state and verifier) lasts as long as a code does

# What the shopper reads; never a traceback or a raw error.
DENIED = "You chose not to link your Instacart account. You can link it whenever you like."
STALE = ("This link attempt is no longer valid: it was already used or has expired. "
         "Please try linking again.")
EXPIRED = ("That Instacart authorization has expired or was already used. "
           "Please try linking again.")
TAKEN = "That Instacart account is already linked to another account at this store."
TROUBLE = "We could not reach Instacart just now. Please try again in a few minutes."
REFUSED = "Instacart did not link your account ({error}). Please try again."


@dataclass(frozen=True)
class StorefrontConfig:
    connect_url: str  # ConnectLink's address, as the shopper's browser and this server reach it
    client_id: str
    client_secret: str
    redirect_uri: str  # registered on the client; this site's /account/instacart/callback


@dataclass
class Shopper:
    """A signed-in customer of the store (one per browser, for the demo)."""

    user_id: str
    first_name: str = "Jane"
    last_name: str = "Shopper"
    attempts: dict[str, tuple[str, float]] = field(default_factory=dict)  # state -> verifier
    notice: tuple[str, str] | None = None  # (kind, message) shown once on the profile
    registered: bool = False


class Storefront:
    def __init__(self, config: StorefrontConfig, http: httpx.AsyncClient) -> None:
        self.api = ConnectAPI(config.connect_url.rstrip("/"), config.client_id,
                              config.client_secret, config.redirect_uri, http)
        self.shoppers: dict[str, Shopper] = {}
        self.templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

    def shopper(self, request: Request) -> tuple[Shopper, str | None]:
        """The browser's shopper, and a cookie to set if it is new."""
        key = request.cookies.get(COOKIE)
        if key in self.shoppers:
            return self.shoppers[key], None
        key = secrets.token_urlsafe(24)
        self.shoppers[key] = Shopper(user_id=f"customer-{secrets.token_hex(6)}")
        return self.shoppers[key], key

    def to_profile(self, shopper: Shopper, kind: str, message: str) -> Response:
        shopper.notice = (kind, message)
        return RedirectResponse("/profile", 303)


def _with_cookie(response: Response, new_key: str | None) -> Response:
    if new_key is not None:
        response.set_cookie(COOKIE, new_key, httponly=True, samesite="lax")
    return response


async def profile(request: Request) -> Response:
    store: Storefront = request.app.state.store
    shopper, new_key = store.shopper(request)
    notice, shopper.notice = shopper.notice, None
    membership, trouble = None, None
    try:
        if not shopper.registered:
            await store.api.create_user(shopper.user_id, shopper.first_name, shopper.last_name)
            shopper.registered = True
        membership = await store.api.membership(shopper.user_id)
    except (ConnectFailure, httpx.HTTPError):
        trouble = TROUBLE
    response = store.templates.TemplateResponse(request, "profile.html", {
        "shopper": shopper, "membership": membership, "notice": notice, "trouble": trouble,
        "expires": _date(membership.get("expired_at")) if membership else None,
    })
    return _with_cookie(response, new_key)


def _date(iso: str | None) -> str | None:
    if not iso:
        return None
    return time.strftime("%-d %B %Y", time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


async def start_link(request: Request) -> Response:
    """The "Link Instacart Account" button: a state and a PKCE pair for this attempt only."""
    store: Storefront = request.app.state.store
    shopper, new_key = store.shopper(request)
    state = secrets.token_urlsafe(24)
    verifier, challenge = pkce_pair()
    now = time.monotonic()
    shopper.attempts = {s: a for s, a in shopper.attempts.items() if a[1] > now}
    shopper.attempts[state] = (verifier, now + ATTEMPT_TTL)
    return _with_cookie(RedirectResponse(store.api.authorize_url(state, challenge), 303), new_key)


async def callback(request: Request) -> Response:
    """Where Instacart sends the shopper back: check ``state``, exchange, link."""
    store: Storefront = request.app.state.store
    shopper, new_key = store.shopper(request)
    if new_key is not None:  # a browser we have never seen started no attempt
        return _with_cookie(store.to_profile(shopper, "error", STALE), new_key)
    params = request.query_params
    attempt = shopper.attempts.pop(params.get("state", ""), None)  # single use
    if attempt is None or attempt[1] <= time.monotonic():
        return store.to_profile(shopper, "error", STALE)
    if "error" in params:
        message = DENIED if params["error"] == "access_denied" else REFUSED.format(
            error=params["error"])
        return store.to_profile(shopper, "info" if params["error"] == "access_denied" else
                                "error", message)
    try:
        token = await store.api.exchange(params.get("code", ""), attempt[0])
        await store.api.link(shopper.user_id, token)
    except ConnectFailure as failure:
        if failure.error == "invalid_grant":
            return store.to_profile(shopper, "error", EXPIRED)
        if failure.error.startswith("Validation failed: Common identities"):
            return store.to_profile(shopper, "error", TAKEN)
        if failure.status >= 500:
            return store.to_profile(shopper, "error", TROUBLE)
        return store.to_profile(shopper, "error", REFUSED.format(error=failure.error))
    except httpx.HTTPError:
        return store.to_profile(shopper, "error", TROUBLE)
    return store.to_profile(shopper, "success", "Your Instacart account is now linked.")


async def home(request: Request) -> Response:
    return RedirectResponse("/profile", 303)


def create_app(config: StorefrontConfig, transport: httpx.AsyncBaseTransport | None = None
               ) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=10, transport=transport) as http:
            app.state.store = Storefront(config, http)
            yield

    return Starlette(routes=[
        Route("/", home),
        Route("/profile", profile),
        Route("/account/instacart/link", start_link, methods=["POST"]),
        Route("/account/instacart/callback", callback),
    ], lifespan=lifespan)
