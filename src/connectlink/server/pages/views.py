"""The Login pages' handlers (decisions.md "Login with Instacart").

``GET /oauth/authorize`` checks the authorization request (``oauth.authorize``, the same decision
as the sandbox's), then shows the login page or, once signed in, the consent page. Its forms
post to ``/oauth/sign_in``, ``/oauth/authorize`` (Allow or Deny) and ``/oauth/sign_out``, each
carrying the authorization request and the session's CSRF token in hidden fields. Errors are
raised, and ``render.page_error_response`` turns them into a page or a redirect.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from connectlink.errors import (
    CsrfRejected,
    IncorrectLogin,
    InvalidAuthorizationRequest,
    MalformedForm,
    NotFound,
)
from connectlink.linking import login
from connectlink.models import InstacartAccount
from connectlink.oauth import authorize as authorization
from connectlink.server.context import Context, context, read_body
from connectlink.server.pages.session import COOKIE, COOKIE_PATH, CSRF_FIELD, Session
from connectlink.server.pages.templates import PAGE_HEADERS, page

AUTHORIZE_PATH = "/oauth/authorize"


@dataclass(frozen=True, slots=True)
class Visit:
    """One page request: its context, its session (new if it had none) and what it asks."""

    ctx: Context
    request: Request
    session: Session
    fresh: bool  # the session cookie must be (re)sent
    authorization: authorization.AuthorizationRequest
    form: dict[str, str]

    def keep(self, response: Response, session: Session | None = None) -> Response:
        """Send the session cookie along when it is new or has changed."""
        if session is not None or self.fresh:
            response.set_cookie(
                COOKIE, self.ctx.pages.dumps(session or self.session),
                max_age=self.ctx.pages.ttl, path=COOKIE_PATH, httponly=True, samesite="lax",
                secure=self.request.url.scheme == "https",
            )
        return response

    def back_to_authorize(self, session: Session | None = None) -> Response:
        """303 to the authorization page, for the same request (sign-in, sign-out)."""
        location = f"{AUTHORIZE_PATH}?{urlencode(self.authorization.params())}"
        return self.keep(RedirectResponse(location, 303, PAGE_HEADERS), session)


async def _visit(request: Request, form: bool) -> Visit:
    ctx = context(request)
    now = ctx.clock.now()
    session = ctx.pages.loads(request.cookies.get(COOKIE), now)
    fields: dict[str, str] = {}
    if form:
        pairs = _form_pairs(await read_body(request))
        fields = dict(pairs)
        if session is None:  # no session, so no page of ours showed this form
            raise CsrfRejected()
        session.check_csrf(fields.get(CSRF_FIELD))
    else:
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
    return Visit(
        ctx=ctx, request=request, session=session or Session.new(now), fresh=session is None,
        authorization=authorization.AuthorizationRequest.from_pairs(pairs), form=fields,
    )


def _form_pairs(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise MalformedForm() from None


async def _signed_in(visit: Visit) -> InstacartAccount | None:
    """The session's account, while the store has the session live: a signed cookie alone is
    not enough once the session was ended (sign-out, a lock)."""
    session, db = visit.session, visit.ctx.db
    if session.account_id is None or session.sid_digest is None:
        return None
    if not await db.login_session_live(session.sid_digest, session.account_id,
                                       visit.ctx.clock.now()):
        return None
    return await db.get_instacart_account(session.account_id)


async def _retailer_name(visit: Visit, consent: authorization.Consent) -> str:
    retailer = await visit.ctx.db.get_retailer(consent.client.retailer_id)
    return retailer.name if retailer is not None else "This store"


def _common(visit: Visit) -> dict[str, Any]:
    return {
        "authorization": visit.authorization.params(),
        "csrf_token": visit.session.csrf,
        "sandbox": visit.ctx.settings.sandbox,
    }


async def _login_page(
    visit: Visit, consent: authorization.Consent, status: int = 200, error: str | None = None,
    email: str = "",
) -> Response:
    return visit.keep(page(
        "login.html", status, retailer=await _retailer_name(visit, consent), error=error,
        email=email, **_common(visit),
    ))


async def authorize(request: Request) -> Response:
    """``GET /oauth/authorize``: the login page, or the consent page once signed in."""
    visit = await _visit(request, form=False)
    consent = await authorization.validate(visit.ctx.db, visit.authorization)
    account = await _signed_in(visit)
    if account is None:
        return await _login_page(visit, consent)
    return visit.keep(page(
        "consent.html", redirect_uri=consent.redirect_uri,
        retailer=await _retailer_name(visit, consent), email=account.email,
        destination=urlsplit(consent.redirect_uri).netloc or consent.redirect_uri,
        **_common(visit),
    ))


async def decide(request: Request) -> Response:
    """``POST /oauth/authorize``: Allow (a code, back to the client) or Deny (access_denied)."""
    visit = await _visit(request, form=True)
    consent = await authorization.validate(visit.ctx.db, visit.authorization)
    account = await _signed_in(visit)
    if account is None:  # the session ended while the page was open: sign in again
        return visit.back_to_authorize()
    # The emulator's deny fault answers as the shopper's Deny would (server/controls.py).
    decision = request.scope.get("decision") or visit.form.get("decision")
    if decision == "deny":
        raise consent.denied()
    if decision != "allow":
        raise InvalidAuthorizationRequest(consent.redirect_uri, consent.state, "decision")
    ctx = visit.ctx
    clock = await ctx.clocks.of(consent.client.retailer_id)  # the code expires by it
    code = await authorization.grant(
        ctx.db, clock.now(), ctx.settings.code_ttl, consent, account.id
    )
    return RedirectResponse(consent.redirect(code=code), 302, PAGE_HEADERS)


async def sign_in(request: Request) -> Response:
    """``POST /oauth/sign_in``: check the email and password, then back to the consent."""
    visit = await _visit(request, form=True)
    consent = await authorization.validate(visit.ctx.db, visit.authorization)
    email = visit.form.get("email", "")
    client = request.client
    try:
        account = await login.sign_in(
            visit.ctx.db, visit.ctx.clock, email, visit.form.get("password", ""),
            client.host if client else "unknown", test_accounts=visit.ctx.settings.emulated,
        )
    except IncorrectLogin as refused:
        return await _login_page(visit, consent, refused.status, refused.title, email)
    now = visit.ctx.clock.now()
    session = Session.new(now, account.id)
    assert session.sid_digest is not None
    await visit.ctx.db.start_login_session(session.sid_digest, account.id, now,
                                           now + visit.ctx.pages.ttl)
    return visit.back_to_authorize(session)


async def sign_out(request: Request) -> Response:
    """``POST /oauth/sign_out`` ("Not you?"): the session ends in the store (a copy of its
    cookie is signed out too), and a new one, signed in as nobody, takes its place."""
    visit = await _visit(request, form=True)
    if visit.session.sid_digest is not None:
        await visit.ctx.db.end_login_session(visit.session.sid_digest)
    return visit.back_to_authorize(Session.new(visit.ctx.clock.now()))


_ASSETS = {"connectlink.css": "text/css; charset=utf-8"}


@cache
def _asset_bytes(name: str) -> bytes:
    return (resources.files("connectlink.server.pages") / "static" / name).read_bytes()


async def asset(request: Request) -> Response:
    """The pages' own stylesheet (CSP ``default-src 'self'``)."""
    name = request.path_params["name"]
    if name not in _ASSETS:
        raise NotFound()
    return Response(_asset_bytes(name), 200, {"Cache-Control": "public, max-age=3600",
                                   "X-Content-Type-Options": "nosniff"}, _ASSETS[name])
