"""The SDK's exception tree: the server's own vocabulary, plus what only a client can meet.

Every refusal the server can send is raised as the very class the server raised
(``connectlink.errors``, rebuilt from the response by ``errors.from_response``), so the SDK and
the server cannot drift apart: the class attributes *are* the wire contract. The tree::

    ConnectLinkError                  catches everything the SDK raises
    |-- ConnectError                  the Connect envelope (connect-api.md section 9)
    |   |-- UserNotFound              400, meta.key "user_id"
    |   |-- UserNotActive             403, code null (after a privacy request)
    |   |-- UserNotLinked             400, GET .../link of a user with no link
    |   |-- LinkingTokenInvalid       400, unknown, expired, used or revoked linking token
    |   |-- IdentityAlreadyLinked     400, the Instacart account backs another user here
    |   |-- Blank, Invalid            400, a field; ``key`` names it
    |   |-- MultipleErrors            400, code 9999; ``errors`` holds the others
    |   |-- EmailTaken, InvalidSandboxUserId, MalformedJSON, NotFound, MethodNotAllowed,
    |   |   RequestTooLarge, RequestTimeout, HeaderFieldsTooLarge (431), BadRequest (400: no
    |   |   valid Host), InternalError
    |   |-- the emulator's admin plane (docs/emulator.md): AdminForbidden, AdminJsonOnly (403),
    |   |   RetailerNotFound, FaultNotFound, SecretNotFound, InstacartUserNotFound (404),
    |   |   SnapshotMismatch (409; its ``detail`` is the server's message)
    |   `-- RetryLater: RateLimited (429), ServiceUnavailable (503); ``retry_after`` seconds
    |-- OAuthError                    the token endpoints (RFC 6749 section 5.2)
    |   `-- InvalidClient, InvalidGrant, InvalidRequest, InvalidScope, UnsupportedGrantType,
    |       UnauthorizedGrant, QueryParamsForbidden, UnauthorizedRevoke
    |-- BearerError                   resource endpoints' token failures (RFC 6750)
    |   |-- InvalidToken              401; ExpiredToken, RevokedToken are its subclasses
    |   `-- InsufficientScope         403
    |-- ConnectionFailed              SDK only: no response (refused, DNS, timeout)
    |   `-- ResponseLost              SDK only: sent, but no answer came: it may have acted
    `-- UnexpectedResponse            SDK only: an answer that is not this API's (a proxy's
                                      HTML error page, a 200 without the documented body)

A raised error carries ``status`` and its wire fields (``message``, ``code``, ``key`` and
``meta()`` for Connect errors; ``error`` and ``description`` for OAuth and bearer ones), and the
SDK sets ``response_headers`` (the response's headers; ``headers()`` is the class's own wire
form) and ``request_id`` (an ``X-Request-Id`` response header, else None).
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from connectlink import errors, jsonio
from connectlink.errors import (
    AdminForbidden,
    AdminJsonOnly,
    AlreadyLinked,
    BadRequest,
    BearerError,
    Blank,
    ConnectError,
    ConnectLinkError,
    EmailTaken,
    ExpiredToken,
    FaultNotFound,
    HeaderFieldsTooLarge,
    InstacartUserNotFound,
    InsufficientScope,
    InternalError,
    Invalid,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidSandboxUserId,
    InvalidScope,
    InvalidToken,
    LinkingTokenInvalid,
    MalformedJSON,
    MethodNotAllowed,
    MultipleErrors,
    NotFound,
    OAuthError,
    QueryParamsForbidden,
    RateLimited,
    RequestTimeout,
    RequestTooLarge,
    RetailerNotFound,
    RetryLater,
    RevokedToken,
    SecretNotFound,
    ServiceUnavailable,
    SnapshotMismatch,
    UnauthorizedGrant,
    UnauthorizedRevoke,
    UnsupportedGrantType,
    UserNotActive,
    UserNotFound,
    UserNotLinked,
)

IdentityAlreadyLinked = AlreadyLinked  # the name a retailer looks for; the server's class

REQUEST_ID = "x-request-id"


class ConnectionFailed(ConnectLinkError):
    """No response came back: the connection was refused, the name did not resolve, or a
    timeout ran out. Nothing came over the wire, so there is no status (0, as browsers say)."""

    status: ClassVar[int] = 0

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def body(self) -> dict[str, Any]:
        return {}


class ResponseLost(ConnectionFailed):
    """The request went out but no answer arrived (a read timeout, a dropped connection): the
    server may have acted on it. Only calls that are safe to repeat are retried after this."""


class UnexpectedResponse(ConnectLinkError):
    """A response this API would not send: an error body that is no envelope of its
    vocabulary (a proxy's HTML page), or a success body that is not the documented Struct."""

    def __init__(self, status: int, content: bytes, headers: httpx.Headers) -> None:
        # A 2xx body may hold a token or a code: it stays in ``content``, out of the message
        # (and so out of every log line and traceback).
        shown = f"{len(content)} bytes" if 200 <= status < 300 else repr(content[:200])
        super().__init__(f"unexpected {status} response: {shown}")
        # ``status`` is a class attribute of the server's classes (their wire contract); this
        # one's is whatever came back, so it lives on the instance.
        setattr(self, "status", status)  # noqa: B010
        self.content = content
        self.request_id = headers.get(REQUEST_ID)
        self.response_headers = headers

    def body(self) -> dict[str, Any]:
        return {}


def error_from(response: httpx.Response) -> ConnectLinkError:
    """The error a non-2xx response carries: the server's class, as ``errors.from_response``
    rebuilds it, with the response's headers and request id set on it."""
    try:
        body = jsonio.decode(response.content)
    except jsonio.UnreadableJSON:
        body = None
    error = errors.from_response(response.status_code, body, response.headers)
    if error is None:
        return UnexpectedResponse(response.status_code, response.content, response.headers)
    error.response_headers = response.headers
    error.request_id = response.headers.get(REQUEST_ID)
    return error


__all__ = [
    "AdminForbidden",
    "AdminJsonOnly",
    "AlreadyLinked",
    "BadRequest",
    "BearerError",
    "Blank",
    "ConnectError",
    "ConnectLinkError",
    "ConnectionFailed",
    "EmailTaken",
    "ExpiredToken",
    "FaultNotFound",
    "HeaderFieldsTooLarge",
    "IdentityAlreadyLinked",
    "InstacartUserNotFound",
    "InsufficientScope",
    "InternalError",
    "Invalid",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidSandboxUserId",
    "InvalidScope",
    "InvalidToken",
    "LinkingTokenInvalid",
    "MalformedJSON",
    "MethodNotAllowed",
    "MultipleErrors",
    "NotFound",
    "OAuthError",
    "QueryParamsForbidden",
    "RateLimited",
    "RequestTimeout",
    "RequestTooLarge",
    "ResponseLost",
    "RetailerNotFound",
    "RetryLater",
    "RevokedToken",
    "SecretNotFound",
    "ServiceUnavailable",
    "SnapshotMismatch",
    "UnauthorizedGrant",
    "UnauthorizedRevoke",
    "UnexpectedResponse",
    "UnsupportedGrantType",
    "UserNotActive",
    "UserNotFound",
    "UserNotLinked",
    "error_from",
]
