"""The operation table: every operation of the server, one entry each, in the order of the
public docs. It is the one list that the router, the OpenAPI document, the access log, the
rate limiter and the metrics' labels read: each entry says its name, method and path, its
family (which decides the profiles that have it and the rate-limit bucket), what the caller
must present, its summary, its request and response bodies and the refusals it documents.

Authentication happens here, once, before a handler runs: a ``BEARER`` operation's handler is
called with the caller's access token, already checked for the operation's scope, and a
``CLIENT`` operation's with its parsed token request and its client, authenticated once. The
rate limit of the operation's bucket (decisions.md "Rate limits") is checked right after, keyed
by the client that was proven: a request that proves none spends its address's bucket.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from connectlink import errors, wire
from connectlink.emulator import wire as ew
from connectlink.errors import BearerError, ConnectLinkError
from connectlink.models import FULFILLMENT, AccessToken, OAuthClient
from connectlink.oauth import grants
from connectlink.oauth.authorize import AuthorizationRequest
from connectlink.oauth.requests import TokenRequest
from connectlink.server import limits
from connectlink.server.context import authorize, context, read_body, token_request
from connectlink.server.controls import Controls
from connectlink.server.endpoints import admin, docs, health, links, oauth, sandbox, users
from connectlink.server.pages import views
from connectlink.settings import Settings

Handler = Callable[[Request], Awaitable[Response]]
BearerHandler = Callable[[Request, AccessToken], Awaitable[Response]]
ClientHandler = Callable[[Request, TokenRequest, OAuthClient], Awaitable[Response]]
Precheck = Callable[[TokenRequest], object]  # raises what the request lacks, before its client


class Family(enum.Enum):
    OAUTH = "oauth"  # the token endpoints (connect-api.md sections 1, 1b, 3)
    CONNECT = "connect"  # /v2/fulfillment (sections 4, 5, 7)
    PAGES = "pages"  # "Login with Instacart", in a browser (section 2)
    SANDBOX = "sandbox"  # /v2/fulfillment_sandbox (section 8): only with the sandbox on
    DOCS = "docs"  # this document and its reference page
    OPS = "ops"  # for operators: health, readiness and metrics (no auth, no rate limit)
    ADMIN = "admin"  # the emulator's control plane, /_connectlink/ (docs/emulator.md)


class Caller(enum.Enum):
    """What a request must present."""

    NONE = "none"  # anyone (pages, documentation)
    CLIENT = "client"  # OAuth client credentials, in the body or HTTP Basic
    BEARER = "bearer"  # a client-credentials access token, holding ``scope`` if one is set
    ADMIN = "admin"  # the admin token, or loopback with a loopback Host (decisions.md)


# The rate-limit bucket of each family; the pages and the documentation have none.
_BUCKETS = {Family.OAUTH: limits.TOKEN, Family.CONNECT: limits.API, Family.SANDBOX: limits.API}

# Refusals every operation of a kind may answer with, documented once here.
_ANY = (errors.InternalError(), errors.ServiceUnavailable())
_BODY = (errors.RequestTooLarge(), errors.RequestTimeout())
_BEARER = (
    errors.InvalidToken(token_sent=False), errors.InvalidToken(), errors.ExpiredToken(),
    errors.RevokedToken(), errors.InsufficientScope(),
)
_CLIENT = (errors.InvalidRequest(), errors.InvalidClient(), errors.QueryParamsForbidden())
# The Login pages: a request whose client or redirect URI cannot be trusted is shown, never
# redirected; a form must come from the page that showed it.
_UNTRUSTED = (errors.UnknownClient(), errors.InvalidRedirectUri())
_FORM = (errors.CsrfRejected(), errors.MalformedForm(), *_BODY)


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    method: str
    path: str
    family: Family
    caller: Caller
    handler: Any  # a Handler; a BearerHandler for BEARER, a ClientHandler for CLIENT
    summary: str
    scope: str | None = None
    request: type[Any] | None = None  # the documented body
    query: type[Any] | None = None  # the documented query parameters, as a Struct's fields
    response: type[Any] | None = None  # the success's body (None: a page or a redirect)
    success: int = 200  # the success's status
    errors: tuple[ConnectLinkError, ...] = ()
    precheck: Precheck | None = None  # CLIENT: what is checked before the client is

    @property
    def page(self) -> bool:
        """Does a browser call it? Then its errors are pages, or redirects to the client."""
        return self.family is Family.PAGES

    @property
    def bucket(self) -> str | None:
        """Its rate-limit bucket (decisions.md "Rate limits"), None for none."""
        return _BUCKETS.get(self.family)

    def refusals(self) -> tuple[ConnectLinkError, ...]:
        """Every refusal it documents: its own, then those of its caller and body kind."""
        common = {Caller.BEARER: _BEARER, Caller.CLIENT: _CLIENT}.get(self.caller, ())
        body: tuple[ConnectLinkError, ...] = ()
        if self.request is not None and not self.page:  # the pages' are in their _FORM
            # the token endpoints answer an unreadable body with invalid_request
            body = _BODY if self.caller is Caller.CLIENT else (*_BODY, errors.MalformedJSON())
        limited = (errors.RateLimited(),) if self.bucket is not None else ()
        return (*self.errors, *common, *body, *limited, *_ANY)

    @property
    def faultable(self) -> bool:
        """Does the emulator's seam see it (so that a fault rule may name it)?"""
        return self.caller in (Caller.BEARER, Caller.CLIENT) or self.name in _NAMED_BY_CLIENT

    @property
    def endpoint(self) -> str:
        """How the API docs, and the emulator's fault rules, name it: ``POST /v2/oauth/token``."""
        return f"{self.method} {self.path}"

    def bound(self, limiter: limits.Limiter | None = None,
              controls: Controls | None = None) -> Handler:
        """The handler as the router calls it: authentication first, where there is any, then
        the limit of its bucket, where that is on (off: not a single check more), then the
        emulator's fault rules (``controls.py``), where it has them."""
        gate = limiter.gate(self.bucket) if limiter is not None else None
        seam = _Seam(controls, self.endpoint) if controls is not None else None
        if self.caller is Caller.ADMIN:
            return admin.guarded(self.handler, self.method != "GET")
        if self.caller is Caller.BEARER:
            return _bearer(self.handler, self.scope, gate, seam)
        if self.caller is Caller.CLIENT:
            return _client(self.handler, self.precheck, gate, seam)
        if seam is not None and self.name in _NAMED_BY_CLIENT:
            return _page(self.handler, gate, seam)
        return self.handler if gate is None else _anonymous(self.handler, gate)


def _address(request: Request) -> str:
    return limits.address_key(request.client.host if request.client else None)


class _Seam:
    """Where an operation meets the emulator's controls: journal the caller, then apply the
    fault rules for this endpoint."""

    def __init__(self, controls: Controls, endpoint: str) -> None:
        self.controls = controls
        self.endpoint = endpoint

    async def bearer(self, request: Request, token: AccessToken) -> Response | None:
        client_id = await self.controls.client_id(token.client_pk)
        self.controls.journal_as(request, token.retailer_id, client_id, token)
        return await self.controls.fault(request, self.endpoint, token.retailer_id, client_id)

    async def refused(self, request: Request) -> None:
        """A bearer token refused as expired or revoked is still its retailer's: journaled."""
        await self.controls.refused_bearer(request)

    async def named(self, request: Request, client_id: str | None) -> Response | None:
        """A page that names a client by its id (not proven: pages have no secret)."""
        client = await grants.find_client(self.controls.ctx.db, client_id)
        return await self.client(request, client)

    async def client(self, request: Request, client: OAuthClient | None,
                     grant_type: str | None = None) -> Response | None:
        """A request that names ``client`` (before its secret is checked: the journal shows a
        wrong secret too)."""
        if client is None:
            return None
        self.controls.journal_as(request, client.retailer_id, client.client_id)
        return await self.controls.fault(request, self.endpoint, client.retailer_id,
                                         client.client_id, grant_type=grant_type)


def _bearer(handler: BearerHandler, scope: str | None, gate: limits.Gate | None,
            seam: _Seam | None) -> Handler:
    """The bearer's client is the key; a request without a valid token, its address."""
    if gate is None and seam is None:
        async def authenticated(request: Request) -> Response:
            return await handler(request, await authorize(request, scope))

        return authenticated

    async def limited(request: Request) -> Response:
        try:
            token = await authorize(request, scope)
        except BearerError:
            if seam is not None:
                await seam.refused(request)
            if gate is not None:
                await gate(_address(request))
            raise
        # The emulator's seam first: a request the limit refuses is journaled all the same.
        if seam is not None and (faulted := await seam.bearer(request, token)) is not None:
            return faulted
        if gate is not None:
            await gate(limits.client_key(token.client_pk))
        return await handler(request, token)

    return limited


def _client(handler: ClientHandler, precheck: Precheck | None, gate: limits.Gate | None,
            seam: _Seam | None) -> Handler:
    """The client is authenticated once, here, and only a client whose secret is proven spends
    its own bucket: a request that names one it cannot prove (or none, or is unreadable)
    spends its address's, so nobody exhausts a retailer's budget by knowing its client id."""

    async def identified(request: Request) -> Response:
        try:
            parsed = await token_request(request)
        except ConnectLinkError:
            if gate is not None:
                await gate(_address(request))
            raise
        named = await grants.named_client(context(request).db, parsed)
        if seam is not None:  # first, as for a bearer
            faulted = await seam.client(request, named, parsed.get("grant_type"))
            if faulted is not None:
                return faulted
        try:
            if precheck is not None:
                precheck(parsed)
            client = grants.authenticate(parsed, named)
        except ConnectLinkError:
            if gate is not None:
                await gate(_address(request))
            raise
        if gate is not None:
            await gate(limits.client_key(client.pk))
        return await handler(request, parsed, client)

    return identified


# The Login pages that name a client (its client_id in the query, or the form that carries
# the authorization request): the emulator journals and faults them as that client's.
_NAMED_BY_CLIENT = {"authorize", "decide", "sign_in", "sign_out"}


def _page(handler: Handler, gate: limits.Gate | None, seam: _Seam) -> Handler:
    async def named(request: Request) -> Response:
        if request.method == "GET":
            pairs = parse_qsl(request.url.query, keep_blank_values=True)
        else:  # read once: the page reads the same bytes again (context.read_body)
            try:
                pairs = parse_qsl((await read_body(request)).decode("utf-8"),
                                  keep_blank_values=True)
            except (UnicodeDecodeError, ValueError):
                pairs = []  # the page itself refuses it, as it always does
        named = AuthorizationRequest.from_pairs(pairs).client_id  # as the page will read it
        faulted = await seam.named(request, named)
        if faulted is not None:
            return faulted
        if gate is not None:
            await gate(_address(request))
        return await handler(request)

    return named


def _anonymous(handler: Handler, gate: limits.Gate) -> Handler:
    async def limited(request: Request) -> Response:
        await gate(_address(request))
        return await handler(request)

    return limited


_USER = "/v2/fulfillment/users/{user_id}"
_ADMIN_RETAILER = "/_connectlink/retailers/{retailer_id}"
_ADMIN = (errors.AdminForbidden(),)
_ADMIN_WRITE = (errors.AdminForbidden(), errors.AdminJsonOnly(), errors.MalformedJSON(), *_BODY)
_SANDBOX_USERS = "/v2/fulfillment_sandbox/instacart_users"

OPERATIONS = (
    Operation(
        "issue_token", "POST", "/v2/oauth/token", Family.OAUTH, Caller.CLIENT, oauth.token,
        "Issue an access token (client_credentials) or a linking token (authorization_code)",
        request=wire.TokenRequestBody, response=wire.Token,
        errors=(errors.UnsupportedGrantType(), errors.InvalidScope(), errors.InvalidGrant(),
                errors.UnauthorizedGrant()),
        precheck=grants.check_grant_type,
    ),
    Operation(
        "revoke_token", "POST", "/v2/oauth/token/revoke", Family.OAUTH, Caller.CLIENT,
        oauth.revoke, "Revoke a token issued to this client (RFC 7009)",
        request=wire.RevokeRequestBody, response=wire.Revoked,
        errors=(errors.UnauthorizedRevoke(),),
    ),
    Operation(
        "authorize", "GET", "/oauth/authorize", Family.PAGES, Caller.NONE, views.authorize,
        "Login with Instacart: the login page, or the consent page once signed in",
        query=wire.AuthorizationQuery, errors=_UNTRUSTED,
    ),
    Operation(
        "decide", "POST", "/oauth/authorize", Family.PAGES, Caller.NONE, views.decide,
        "Allow (a code, back to the redirect URI) or Deny", request=wire.ConsentForm,
        errors=(*_FORM, *_UNTRUSTED),
    ),
    Operation(
        "sign_in", "POST", "/oauth/sign_in", Family.PAGES, Caller.NONE, views.sign_in,
        "Sign in to an Instacart account", request=wire.SignInForm,
        errors=(*_FORM, *_UNTRUSTED, errors.IncorrectLogin(), errors.LoginLocked(0, 0)),
    ),
    Operation("sign_out", "POST", "/oauth/sign_out", Family.PAGES, Caller.NONE,
              views.sign_out, "Sign out (\"Not you?\")", request=wire.SignOutForm,
              errors=(*_FORM, *_UNTRUSTED)),
    Operation("page_asset", "GET", "/oauth/assets/{name}", Family.PAGES, Caller.NONE,
              views.asset, "The Login pages' stylesheet", errors=(errors.NotFound(),)),
    Operation(
        "link", "POST", f"{_USER}/link", Family.CONNECT, Caller.BEARER, links.link,
        "Link an Instacart account to a Connect user with a single-use linking token",
        scope=FULFILLMENT, request=wire.LinkBody, response=wire.Success,
        errors=(errors.UserNotFound(), errors.UserNotActive(), errors.Blank("linking_token"),
                errors.LinkingTokenInvalid(), errors.AlreadyLinked()),
    ),
    Operation(
        "get_link", "GET", f"{_USER}/link", Family.CONNECT, Caller.BEARER, links.membership,
        "Whether the linked Instacart account is an Instacart+ member, and until when",
        scope=FULFILLMENT, response=wire.Membership,
        errors=(errors.UserNotFound(), errors.UserNotActive(), errors.UserNotLinked()),
    ),
    Operation(
        "create_user", "POST", "/v2/fulfillment/users", Family.CONNECT, Caller.BEARER,
        users.create, "Create a Connect user, or update the fields sent if it exists",
        scope=FULFILLMENT, request=wire.CreateUserBody, response=wire.ConnectUser,
        errors=(errors.Blank("first_name"), errors.Invalid("phone_number"),
                errors.MultipleErrors([errors.Blank("user_id"), errors.Blank("first_name")])),
    ),
    Operation(
        "get_user", "GET", _USER, Family.CONNECT, Caller.BEARER, users.read,
        "Read a Connect user", scope=FULFILLMENT, response=wire.ConnectUser,
        errors=(errors.UserNotFound(),),
    ),
    Operation(
        "privacy_request", "POST", f"{_USER}/privacy_request", Family.CONNECT, Caller.BEARER,
        users.privacy_request,
        "File a data deletion request: the user stops being active and is purged later",
        scope=FULFILLMENT, request=wire.PrivacyRequestBody, response=wire.Success,
        errors=(errors.UserNotFound(),),
    ),
    Operation(
        "create_instacart_user", "POST", _SANDBOX_USERS, Family.SANDBOX, Caller.BEARER,
        sandbox.create_instacart_user, "Create a test Instacart user",
        request=wire.CreateInstacartUserBody, response=wire.SandboxUser,
        errors=(errors.EmailTaken(), errors.Blank("email"), errors.Invalid("email")),
    ),
    Operation(
        "authorize_instacart_user", "POST", f"{_SANDBOX_USERS}/{{user_id}}/authorize",
        Family.SANDBOX, Caller.BEARER, sandbox.authorize_instacart_user,
        "Consent for a test Instacart user without a browser: an authorization code",
        request=wire.AuthorizeBody, response=wire.SandboxCode,
        errors=(errors.InvalidSandboxUserId(), errors.Invalid("redirect_uri"),
                errors.Blank("scope"), errors.Invalid("scope")),
    ),
    # The emulator's admin plane (docs/emulator.md): the emulator profile only.
    Operation("read_clock", "GET", f"{_ADMIN_RETAILER}/clock", Family.ADMIN, Caller.ADMIN,
              admin.read_clock, "A retailer's virtual clock", response=ew.Clock,
              errors=(*_ADMIN, errors.RetailerNotFound())),
    Operation("move_clock", "POST", f"{_ADMIN_RETAILER}/clock", Family.ADMIN, Caller.ADMIN,
              admin.move_clock, "Advance, set, freeze or reset a retailer's virtual clock",
              request=ew.ClockChange, response=ew.Clock,
              errors=(*_ADMIN_WRITE, errors.RetailerNotFound(), errors.Invalid("advance_seconds"))),
    Operation("add_fault", "POST", "/_connectlink/faults", Family.ADMIN, Caller.ADMIN,
              admin.add_fault, "Add a fault rule", request=ew.FaultBody,
              response=ew.Created, success=201,
              errors=(*_ADMIN_WRITE, errors.RetailerNotFound(), errors.Invalid("endpoint"),
                      errors.Blank("retailer_id"))),
    Operation("list_faults", "GET", "/_connectlink/faults", Family.ADMIN, Caller.ADMIN,
              admin.list_faults, "Every fault rule, with how often it matched and fired",
              response=ew.Faults, errors=_ADMIN),
    Operation("clear_faults", "DELETE", "/_connectlink/faults", Family.ADMIN, Caller.ADMIN,
              admin.clear_faults, "Delete every fault rule", response=ew.Deleted,
              errors=_ADMIN),
    Operation("delete_fault", "DELETE", "/_connectlink/faults/{fault_id}", Family.ADMIN,
              Caller.ADMIN, admin.delete_fault, "Delete one fault rule", response=ew.Success,
              errors=(*_ADMIN, errors.FaultNotFound())),
    Operation("read_journal", "GET", f"{_ADMIN_RETAILER}/journal", Family.ADMIN, Caller.ADMIN,
              admin.read_journal, "A retailer's requests, newest first",
              query=ew.JournalQuery, response=ew.Journal,
              errors=(*_ADMIN, errors.RetailerNotFound(), errors.Invalid("status"))),
    Operation("token_lifecycle", "GET", "/_connectlink/tokens/{fingerprint}", Family.ADMIN,
              Caller.ADMIN, admin.token_lifecycle,
              "A token's, linking token's or code's life: issued, used, revoked, expired",
              response=ew.TokenLifecycle, errors=(*_ADMIN, errors.SecretNotFound())),
    Operation("read_membership", "GET", "/_connectlink/instacart_users/{account_id}/membership",
              Family.ADMIN, Caller.ADMIN, admin.read_membership,
              "A sandbox account's Instacart+ membership", response=ew.Membership,
              errors=(*_ADMIN, errors.InstacartUserNotFound())),
    Operation("change_membership", "POST",
              "/_connectlink/instacart_users/{account_id}/membership", Family.ADMIN,
              Caller.ADMIN, admin.change_membership,
              "Start, extend or lapse a sandbox account's Instacart+ membership",
              request=ew.MembershipChange, response=ew.Membership,
              errors=(*_ADMIN_WRITE, errors.InstacartUserNotFound(), errors.Invalid(None))),
    Operation("snapshot", "GET", "/_connectlink/snapshot", Family.ADMIN, Caller.ADMIN,
              admin.snapshot, "The whole state, as versioned JSON (secrets as digests)",
              response=ew.Snapshot, errors=_ADMIN),
    Operation("restore", "POST", "/_connectlink/restore", Family.ADMIN, Caller.ADMIN,
              admin.restore, "Replace the whole state with a snapshot", request=ew.Snapshot,
              response=ew.Success, errors=(*_ADMIN_WRITE, errors.SnapshotMismatch())),
    Operation("reset", "POST", "/_connectlink/reset", Family.ADMIN, Caller.ADMIN, admin.reset,
              "Empty every table, retailers included", response=ew.Success,
              errors=_ADMIN_WRITE),
    Operation("openapi", "GET", "/openapi.json", Family.DOCS, Caller.NONE, docs.openapi,
              "This server's OpenAPI 3.1 document"),
    Operation("reference", "GET", "/docs", Family.DOCS, Caller.NONE, docs.reference,
              "The API reference, rendered from the OpenAPI document"),
    Operation("healthz", "GET", "/healthz", Family.OPS, Caller.NONE, health.healthz,
              "Liveness: the process answers", response=wire.Health),
    Operation("readyz", "GET", "/readyz", Family.OPS, Caller.NONE, health.readyz,
              "Readiness: the database answers and its schema is current (else 503)",
              response=wire.Health),
    Operation("metrics", "GET", "/metrics", Family.OPS, Caller.NONE, health.metrics,
              "Prometheus metrics, in its text format (every worker's under --workers N)"),
)


def for_settings(settings: Settings) -> tuple[Operation, ...]:
    """The operations a server with these settings has: the sandbox family only when on, the
    admin plane only in the emulator profile, ``/metrics`` only with the metrics on."""
    return tuple(op for op in OPERATIONS
                 if (op.family is not Family.SANDBOX or settings.sandbox)
                 and (op.family is not Family.ADMIN or settings.emulated)
                 and (op.name != "metrics" or settings.metrics))
