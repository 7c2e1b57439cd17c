"""The wire vocabulary: every error ConnectLink can answer with.

Class attributes *are* the contract (connect-api.md section 9, decisions.md). Three families:

- ``ConnectError``: the Connect envelope ``{"error": {"message", "code"}, "meta": {...}}``.
- ``OAuthError``: the token endpoints' ``{"error": slug, "error_description": text}``
  (RFC 6749 section 5.2, connect-api.md sections 1 and 1b).
- ``BearerError``: resource-endpoint token failures, RFC 6750 shape plus ``WWW-Authenticate``.

Each class carries its whole wire form: status, ``body()`` and ``headers()``. Nothing here
knows HTTP frameworks; ``server/render.py`` turns these into responses, and ``from_response``
turns a response back into the class the server raised (the SDK raises what it returns).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit, urlunsplit


class ConnectLinkError(Exception):
    """Base of every error that has a wire form."""

    status: ClassVar[int] = 400
    # Facts of one response, not of the vocabulary: the SDK sets them on what it raises.
    request_id: str | None = None  # the response's X-Request-Id, if it had one
    response_headers: Mapping[str, str] = MappingProxyType({})

    def body(self) -> dict[str, Any]:
        raise NotImplementedError

    def headers(self) -> dict[str, str]:
        """The headers its wire form carries besides the body's content type."""
        return {}


class RetryLater:
    """A refusal that says when to come back (``Retry-After``, whole seconds)."""

    retry_after: int

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


# --------------------------------------------------------------------------------------------
# Connect envelope


class ConnectError(ConnectLinkError):
    """A single Connect error; ``key`` is ``meta.key`` (None: ``meta`` is ``{}``)."""

    message: ClassVar[str] = ""
    code: ClassVar[int | None] = 1001
    key: str | None = None

    def __init__(self, key: str | None = None) -> None:
        if key is not None:
            self.key = key
        super().__init__(self.message)

    def error(self) -> dict[str, Any]:
        return {"message": self.message, "code": self.code}

    def meta(self) -> dict[str, str]:
        return {"key": self.key} if self.key is not None else {}

    def body(self) -> dict[str, Any]:
        return {"error": self.error(), "meta": self.meta()}


class UserNotFound(ConnectError):
    message = "User Not Found"
    key = "user_id"


class UserNotActive(ConnectError):
    status = 403
    message = "User Not Active"
    code = None


class UserNotLinked(ConnectError):
    message = "User Not Linked"
    key = "user_id"


class LinkingTokenInvalid(ConnectError):
    message = "Linking token is invalid"
    key = "linking_token"


class AlreadyLinked(ConnectError):
    """An Instacart account may back one Connect user per isolation context (the retailer)."""

    message = "Validation failed: Common identities can only have one user per isolation context"
    key = "linking_token"


class Blank(ConnectError):
    """A required field is missing or empty; ``key`` names it."""

    message = "can't be blank"


class Invalid(ConnectError):
    """A field has a value the server cannot accept; ``key`` names it."""

    message = "is invalid"


class EmailTaken(ConnectError):
    message = "An account already exists with this email"
    key = "email"


class InvalidSandboxUserId(ConnectError):
    message = "Invalid user_id"
    key = "user_id"


class MalformedJSON(ConnectError):
    message = "Malformed JSON body"
    code = 4001


class NotFound(ConnectError):
    status = 404
    message = "Not Found"
    code = 4000


class MethodNotAllowed(ConnectError):
    status = 405
    message = "Method Not Allowed"
    code = 4001

    def __init__(self, allow: str = "") -> None:
        super().__init__()
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allow} if self.allow else {}


class RequestTooLarge(ConnectError):
    status = 413
    message = "Request Entity Too Large"
    code = 4001


class HeaderFieldsTooLarge(ConnectError):
    """Request headers past the server's caps (decisions.md: 8 KiB a line, 32 KiB in all, 100
    fields); answered by the HTTP protocol, before any route (``server/protocol.py``)."""

    status = 431
    message = "Request Header Fields Too Large"
    code = 4001

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}  # the rest of such a request is not read


class BadRequest(ConnectError):
    """A request HTTP itself forbids (RFC 9112 section 3.2: no ``Host`` in HTTP/1.1, more than
    one, or an invalid one); answered by the HTTP protocol, before any route."""

    status = 400
    message = "Bad Request"
    code = 4001

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class RequestTimeout(ConnectError):
    """A client too slow with its headers or body (decisions.md has no row; 4001, like 413)."""

    status = 408
    message = "Request Timeout"
    code = 4001

    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}  # what is left of a slow request is not read


class RateLimited(RetryLater, ConnectError):
    status = 429
    message = "Too many requests. Please retry later."
    code = 2003

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__()
        self.retry_after = retry_after


class ServiceUnavailable(RetryLater, ConnectError):
    status = 503
    message = "Service temporarily unavailable. Please try again later."
    code = 2003

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__()
        self.retry_after = retry_after


class InternalError(ConnectError):
    status = 500
    message = (
        "Sorry, an unexpected error occurred. Our team has been notified. Please try again later."
    )
    code = 5000


class MultipleErrors(ConnectError):
    """The 9999 wrapper: several errors in one response, in field order."""

    message = "There were issues with your request"
    code = 9999

    def __init__(self, errors: list[ConnectError]) -> None:
        super().__init__()
        self.errors = errors

    def error(self) -> dict[str, Any]:
        return {**super().error(), "errors": [e.body() for e in self.errors]}


# The emulator's admin plane (docs/emulator.md; decisions.md "The admin plane").


class AdminForbidden(ConnectError):
    status = 403
    message = "The admin plane is for the loopback interface or the admin token"
    code = 4001


class AdminJsonOnly(ConnectError):
    status = 403
    message = "Writes to the admin plane take application/json"
    code = 4001


class RetailerNotFound(ConnectError):
    status = 404
    message = "Retailer Not Found"
    key = "retailer_id"


class FaultNotFound(ConnectError):
    status = 404
    message = "Fault Not Found"
    key = "id"


class SecretNotFound(ConnectError):
    status = 404
    message = "Token Not Found"
    key = "fingerprint"


class InstacartUserNotFound(ConnectError):
    status = 404
    message = "Instacart User Not Found"
    key = "instacart_user_id"


class SnapshotMismatch(ConnectError):
    """A snapshot this server cannot restore; the message says which it is and which fits."""

    status = 409
    message = "This snapshot does not fit this server"
    code = 4001

    def __init__(self, detail: str | None = None) -> None:
        super().__init__()
        self.detail = detail

    def error(self) -> dict[str, Any]:
        return {"message": self.detail or self.message, "code": self.code}


def combine(errors: list[ConnectError]) -> ConnectError | None:
    """One error as itself, several as the 9999 wrapper, none as None."""
    if not errors:
        return None
    return errors[0] if len(errors) == 1 else MultipleErrors(errors)


# --------------------------------------------------------------------------------------------
# OAuth 2.0 token endpoints


# RFC 6749 section 5.1: token responses, and their errors, must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(ConnectLinkError):
    """An RFC 6749 section 5.2 error as the token endpoints send it."""

    error: ClassVar[str]
    description: ClassVar[str]

    def __init__(self) -> None:
        super().__init__(self.description)

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}

    def headers(self) -> dict[str, str]:
        return dict(NO_STORE)


class InvalidRequest(OAuthError):
    error = "invalid_request"
    description = (
        "The request is missing a required parameter, includes an unsupported parameter value, "
        "or is otherwise malformed."
    )


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"
    description = "The authorization grant type is not supported by the authorization server."


class InvalidScope(OAuthError):
    error = "invalid_scope"
    description = "The requested scope is invalid, unknown, or malformed."


class InvalidGrant(OAuthError):
    error = "invalid_grant"
    description = "Assertion is not provided or invalid assertion provided for the grant_type."


class UnauthorizedGrant(OAuthError):
    """The client is known but not allowed this grant type (RFC 6749 section 5.2)."""

    error = "unauthorized_client"
    description = "The client is not authorized to perform this request using this method."


class InvalidClient(OAuthError):
    status = 401
    error = "invalid_client"
    description = (
        "Client authentication failed due to unknown client, no client authentication included, "
        "or unsupported authentication method."
    )

    def __init__(self, basic_challenge: bool = False) -> None:
        super().__init__()
        # RFC 6749 section 5.2: answer a failed HTTP Basic attempt with a Basic challenge.
        self.basic_challenge = basic_challenge

    def headers(self) -> dict[str, str]:
        if not self.basic_challenge:
            return super().headers()
        return {**super().headers(), "WWW-Authenticate": f'Basic realm="{REALM}"'}


class QueryParamsForbidden(OAuthError):
    status = 403
    error = "query_params_forbidden"
    description = (
        "Providing OAuth credentials as query parameters may cause them to be compromised. "
        "Please reach out to Instacart's security team and have the credentials rotated."
    )


class UnauthorizedRevoke(OAuthError):
    status = 403
    error = "unauthorized_client"
    description = "You are not authorized to revoke this token"


# --------------------------------------------------------------------------------------------
# RFC 6749 section 4.1.2.1: the authorization endpoint (the Login pages and the sandbox's consent)


class AuthorizationError(ConnectLinkError):
    """An authorization request refused. ``parameter`` names the request parameter at fault
    and ``blank`` says it was missing, so the sandbox can answer in Connect field errors."""

    error: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, parameter: str | None = None, blank: bool = False) -> None:
        super().__init__(self.description)
        self.parameter = parameter
        self.blank = blank

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}


class FatalAuthorizationError(AuthorizationError):
    """Shown to the shopper and never redirected: without a trusted client and a registered
    redirect URI there is nowhere safe to send the error (RFC 6749 section 4.1.2.1, RFC 6819
    section 4.2.4). ``title`` and ``advice`` are what the error page says."""

    title: ClassVar[str]
    advice: ClassVar[str]


class UnknownClient(FatalAuthorizationError):
    error = "invalid_client"
    description = InvalidClient.description
    title = "This link is not valid"
    advice = (
        "The store that sent you here is not registered with Instacart. Go back to the store "
        "and try again, or contact its customer service."
    )


class InvalidRedirectUri(FatalAuthorizationError):
    error = "invalid_redirect_uri"
    description = "The requested redirect uri is malformed or doesn't match client redirect URI."
    title = "This link is not valid"
    advice = (
        "The store asked Instacart to send you back to an address it has not registered, so "
        "Instacart will not send you there. Go back to the store and try again."
    )


class RedirectableAuthorizationError(AuthorizationError):
    """Sent back to the client's registered redirect URI with ``state`` (section 4.1.2.1)."""

    def __init__(
        self, redirect_uri: str, state: str | None, parameter: str | None = None,
        blank: bool = False,
    ) -> None:
        super().__init__(parameter, blank)
        self.redirect_uri = redirect_uri
        self.state = state

    def location(self) -> str:
        params = {"error": self.error, "error_description": self.description}
        if self.state is not None:
            params["state"] = self.state
        return with_query(self.redirect_uri, params)


class UnsupportedResponseType(RedirectableAuthorizationError):
    error = "unsupported_response_type"
    description = "The authorization server does not support this response type."


class InvalidAuthorizationScope(RedirectableAuthorizationError):
    error = "invalid_scope"
    description = InvalidScope.description


class InvalidAuthorizationRequest(RedirectableAuthorizationError):
    error = "invalid_request"
    description = InvalidRequest.description


class AccessDenied(RedirectableAuthorizationError):
    error = "access_denied"
    description = "The resource owner or authorization server denied the request."


def with_query(uri: str, params: dict[str, str]) -> str:
    """``uri`` with ``params`` added to its query; the query it has is kept (section 3.1.2)."""
    parts = urlsplit(uri)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


# --------------------------------------------------------------------------------------------
# The Login pages' own refusals (decisions.md "Login with Instacart")


class PageError(ConnectLinkError):
    """A refusal that only a browser sees; ``title`` and ``advice`` are the page's words."""

    error: ClassVar[str]
    title: ClassVar[str]
    advice: ClassVar[str]

    def __init__(self) -> None:
        super().__init__(self.title)

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.title}


class CsrfRejected(PageError):
    """A form posted without its session's CSRF token, or with another one."""

    status = 403
    error = "csrf_rejected"
    title = "This form has expired"
    advice = (
        "For your security, Instacart only accepts this form from the page that showed it. "
        "Go back to the store and start again."
    )


class MalformedForm(PageError):
    status = 400
    error = "malformed_form"
    title = "This form could not be read"
    advice = "Go back to the store and start again."


class IncorrectLogin(PageError):
    """Decisions.md: the same words whether the email or the password was wrong."""

    status = 422
    error = "incorrect_login"
    title = "Incorrect email or password."
    advice = "Check your email and password and try again."


class LoginLocked(RetryLater, PageError):
    """Too many failed sign-ins for this account or from this address; ``until`` is when the
    lock ends (epoch seconds)."""

    status = 429
    error = "login_locked"
    title = "Too many sign-in attempts"
    advice = "For your security, signing in is paused for a while."

    def __init__(self, until: float, now: float) -> None:
        super().__init__()
        self.until = until
        self.retry_after = max(1, math.ceil(until - now))


# --------------------------------------------------------------------------------------------
# RFC 6750 bearer token failures on resource endpoints

REALM = "connect"


class BearerError(ConnectLinkError):
    error: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, token_sent: bool = True) -> None:
        super().__init__(self.description)
        self.token_sent = token_sent

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}

    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value; no error attributes when no token was sent (3.1)."""
        if not self.token_sent:
            return f'Bearer realm="{REALM}"'
        return (
            f'Bearer realm="{REALM}", error="{self.error}", '
            f'error_description="{self.description}"'
        )

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.challenge()}


class InvalidToken(BearerError):
    status = 401
    error = "invalid_token"
    description = "The access token is invalid"


class ExpiredToken(InvalidToken):
    description = "The access token expired"


class RevokedToken(InvalidToken):
    description = "The access token was revoked"


class InsufficientScope(BearerError):
    status = 403
    error = "insufficient_scope"
    description = "The request requires higher privileges than provided by the access token."


# --------------------------------------------------------------------------------------------
# Wire code -> class tables, and back from a response to the class the server raised.

CONNECT_ERRORS: dict[tuple[int | None, str], type[ConnectError]] = {
    (cls.code, cls.message): cls
    for cls in (
        UserNotFound, UserNotActive, UserNotLinked, LinkingTokenInvalid, AlreadyLinked, Blank,
        Invalid, EmailTaken, InvalidSandboxUserId, MalformedJSON, NotFound, MethodNotAllowed,
        RequestTooLarge, RequestTimeout, RateLimited, ServiceUnavailable, InternalError,
        MultipleErrors, AdminForbidden, AdminJsonOnly, RetailerNotFound, FaultNotFound,
        SecretNotFound, InstacartUserNotFound, SnapshotMismatch, HeaderFieldsTooLarge,
        BadRequest,
    )
}
# The emulator's admin plane's own (tests/test_emulator_controls.py has a case of each).
ADMIN_ERRORS = (AdminForbidden, AdminJsonOnly, RetailerNotFound, FaultNotFound, SecretNotFound,
                InstacartUserNotFound, SnapshotMismatch)

# By status, slug and description: ExpiredToken and RevokedToken share InvalidToken's slug.
OAUTH_ERRORS: dict[tuple[int, str, str], type[OAuthError | BearerError]] = {
    (cls.status, cls.error, cls.description): cls
    for cls in (
        InvalidRequest, UnsupportedGrantType, InvalidScope, InvalidGrant, UnauthorizedGrant,
        InvalidClient, QueryParamsForbidden, UnauthorizedRevoke, InvalidToken, ExpiredToken,
        RevokedToken, InsufficientScope,
    )
}


# Secondary look-ups for wording that differs from ours (another server's, a future one's):
# Connect errors by code and message without case, OAuth errors by status and slug alone.
_CONNECT_BY_WORDS = {(cls.code, cls.message.casefold()): cls for cls in CONNECT_ERRORS.values()}
# ... and by code and status, where only one class has them (2003 and 429: RateLimited).
_CONNECT_BY_STATUS: dict[tuple[int | None, int], type[ConnectError] | None] = {}
for _connect in CONNECT_ERRORS.values():
    _pair = (_connect.code, _connect.status)
    _CONNECT_BY_STATUS[_pair] = None if _pair in _CONNECT_BY_STATUS else _connect
_OAUTH_BY_SLUG: dict[tuple[int, str], type[OAuthError | BearerError]] = {}
for _cls in OAUTH_ERRORS.values():
    _OAUTH_BY_SLUG.setdefault((_cls.status, _cls.error), _cls)  # the base class comes first


def _header(headers: Mapping[str, str], name: str) -> str:
    return headers.get(name.lower(), headers.get(name, ""))


def _retry_after(headers: Mapping[str, str]) -> int:
    value = _header(headers, "Retry-After")
    return int(value) if value.isascii() and value.isdigit() and len(value) < 10 else 1


def _connect_class(status: int, error: Mapping[str, Any]) -> type[ConnectError]:
    code, message = error.get("code"), str(error.get("message", ""))
    if not isinstance(code, int | None) or isinstance(code, bool):
        raise TypeError("not a Connect error code")
    cls = (CONNECT_ERRORS.get((code, message))
           or _CONNECT_BY_WORDS.get((code, " ".join(message.split()).casefold()))
           or _CONNECT_BY_STATUS.get((code, status)))
    if cls is None or cls.status != status:
        # A refusal this vocabulary does not know: kept whole, as a class of its own.
        return type("UnknownConnectError", (ConnectError,), {
            "status": status, "message": message, "code": code})
    return cls


def _connect_error(status: int, body: Mapping[str, Any], headers: Mapping[str, str]
                   ) -> ConnectError:
    error, meta = body["error"], body.get("meta") or {}
    cls = _connect_class(status, error)
    key = meta.get("key") if isinstance(meta, Mapping) else None
    if cls is MultipleErrors:
        return MultipleErrors([_connect_error(status, e, headers)
                               for e in error.get("errors") or []])
    if cls is RateLimited or cls is ServiceUnavailable:
        return cls(_retry_after(headers))
    if cls is MethodNotAllowed:
        return MethodNotAllowed(_header(headers, "Allow"))
    if cls is SnapshotMismatch:  # its message is its own: it names both versions
        return SnapshotMismatch(str(error.get("message") or "") or None)
    return cls(str(key)) if key is not None and key != cls.key else cls()


def _oauth_error(status: int, body: Mapping[str, Any], headers: Mapping[str, str]
                 ) -> OAuthError | BearerError:
    slug, description = str(body.get("error")), str(body.get("error_description", ""))
    cls = OAUTH_ERRORS.get((status, slug, description)) or _OAUTH_BY_SLUG.get((status, slug))
    if cls is None:
        base: type[OAuthError] = type("UnknownOAuthError", (OAuthError,), {
            "status": status, "error": slug, "description": description})
        return base()
    challenge = _header(headers, "WWW-Authenticate")
    if issubclass(cls, BearerError):
        return cls(token_sent="error=" in challenge)
    if cls is InvalidClient:
        return InvalidClient(basic_challenge=challenge.startswith("Basic"))
    return cls()


def from_response(
    status: int, body: Any, headers: Mapping[str, str] | None = None
) -> ConnectLinkError | None:
    """The error a response carries, as the class the server raised (with its key, its
    ``Retry-After``, its challenge), or None if the body is no error envelope of this API.
    Wording that differs only in case or spacing still finds its class; an envelope whose
    parts have the wrong types is no envelope."""
    headers = headers or {}
    if not isinstance(body, Mapping) or "error" not in body:
        return None
    try:
        if isinstance(body["error"], Mapping):
            return _connect_error(status, body, headers)
        if isinstance(body["error"], str):
            return _oauth_error(status, body, headers)
    except (TypeError, AttributeError):  # e.g. a 9999 whose errors are not objects
        return None
    return None
