"""Every body on the wire as a msgspec Struct: what the server encodes, what the OpenAPI
document describes (msgspec's JSON Schema of these very types), and what the SDK decodes.

Field order is wire order. Optional fields are left out when they have no value, never null
(decisions.md "Connect users", "Membership"). Request bodies are described here for the document
only: the server reads them field by field (``linking.fields``), so that each bad field gets its
own documented error rather than a generic decoding failure.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

# --------------------------------------------------------------------------------------------
# Responses


class Token(Struct, kw_only=True, omit_defaults=True):
    """An access token or a linking token (connect-api.md sections 1 and 3)."""

    access_token: Annotated[str, Meta(description="The bearer token, or the linking token.")]
    token_type: Annotated[str, Meta(examples=["Bearer"])]  # RFC 6749 7.1: case-insensitive
    expires_in: Annotated[int, Meta(description="Seconds until the token expires.")]
    scope: str | None = None
    created_at: Annotated[int, Meta(description="When it was issued, in Unix epoch seconds.")]


class Revoked(Struct):
    """The revocation endpoint's answer: an empty object (connect-api.md section 1b)."""


class Success(Struct):
    success: bool = True


class ConnectUser(Struct, omit_defaults=True):
    """A Connect user (connect-api.md section 7); optional fields absent when unset."""

    user_id: str
    first_name: str
    last_name: str | None = None
    phone_number: str | None = None
    locale: str | None = None


class Membership(Struct, omit_defaults=True):
    """The body of ``GET .../link``; ``expired_at`` only when a membership exists."""

    express_member: bool
    instacartplus_member: bool
    expired_at: Annotated[
        str, Meta(description="When the Instacart+ membership ends (UTC).",
                  examples=["2027-09-21T00:00:00Z"])
    ] | None = None


class SandboxUser(Struct):
    id: int


class SandboxCode(Struct):
    code: str


class Health(Struct):
    """``/healthz``: the process answers; ``/readyz``: and it can serve."""

    status: Literal["ok"] = "ok"


SUCCESS = Success()
REVOKED = Revoked()
HEALTHY = Health()

# --------------------------------------------------------------------------------------------
# Error envelopes (connect-api.md section 9; RFC 6749 section 5.2; RFC 6750 section 3)


class ConnectErrorMeta(Struct, omit_defaults=True):
    key: str | None = None


class ConnectErrorDetail(Struct, omit_defaults=True):
    message: str
    code: int | None
    errors: list[ConnectErrorEnvelope] | None = None


class ConnectErrorEnvelope(Struct):
    """``{"error": {"message", "code"}, "meta": {"key"?}}``; the 9999 wrapper nests others."""

    error: ConnectErrorDetail
    meta: ConnectErrorMeta


class OAuthErrorBody(Struct):
    """The token endpoints' and bearer failures' shape: ``{"error", "error_description"}``."""

    error: str
    error_description: str


# --------------------------------------------------------------------------------------------
# Request bodies, as documented


class TokenRequestBody(Struct, kw_only=True, omit_defaults=True):
    """``POST /v2/oauth/token`` (JSON or form-encoded; HTTP Basic may carry the client)."""

    grant_type: Literal["client_credentials", "authorization_code"]
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = None
    code: str | None = None
    redirect_uri: str | None = None
    code_verifier: str | None = None


class RevokeRequestBody(Struct, kw_only=True, omit_defaults=True):
    token: str
    client_id: str | None = None
    client_secret: str | None = None


_Name = Annotated[str, Meta(max_length=255, pattern="^[^/:<>$%?\\x00-\\x1f\\x7f]*$")]


class CreateUserBody(Struct, kw_only=True, omit_defaults=True):
    user_id: Annotated[str, Meta(min_length=1, max_length=255,
                                 pattern="^[^/\\x00-\\x1f\\x7f]+$")]
    first_name: _Name
    last_name: _Name | None = None
    # E.164; blank counts as no value, as for every optional field (decisions.md).
    phone_number: Annotated[str, Meta(pattern="^(\\+[1-9][0-9]{1,14}|\\s*)$")] | None = None
    locale: Annotated[str, Meta(examples=["en-US"])] | None = None


class LinkBody(Struct):
    linking_token: str


class CreateInstacartUserBody(Struct, kw_only=True, omit_defaults=True):
    email: str
    phone: str
    password: str
    express_member: bool = False
    instacartplus_member: bool = False


class AuthorizeBody(Struct, kw_only=True, omit_defaults=True):
    redirect_uri: str
    scope: Annotated[str, Meta(examples=["openid account_linking"])]
    code_challenge: str | None = None
    code_challenge_method: Literal["S256", "plain"] | None = None
    # Instacart's sandbox tutorial sends the Login URL's parameters too (connect-api.md 8.2);
    # they are accepted and ignored.
    response_type: Annotated[Literal["code"], Meta(
        description="Accepted and ignored, as Instacart's tutorial sends it")] | None = None
    client_id: Annotated[str, Meta(
        description="Accepted and ignored: the bearer token names the client")] | None = None
    state: Annotated[str, Meta(
        description="Accepted and ignored: no redirect follows")] | None = None


class PrivacyRequestBody(Struct):
    """No field (connect-api.md 7.3): a body may be left out; one that is sent must be JSON, and
    any JSON value will do (one that is no object counts as an empty object)."""


# --------------------------------------------------------------------------------------------
# The Login pages' inputs (decisions.md "Login with Instacart"): a query string, then forms


class AuthorizationQuery(Struct, kw_only=True, omit_defaults=True):
    """``GET /oauth/authorize`` (RFC 6749 section 4.1.1, RFC 7636 section 4.3)."""

    response_type: Literal["code"]
    client_id: str
    redirect_uri: str
    scope: Annotated[str, Meta(examples=["account_linking"])] | None = None
    state: str | None = None
    code_challenge: str | None = None
    code_challenge_method: Literal["S256", "plain"] | None = None


class SignOutForm(AuthorizationQuery, kw_only=True):
    """Every form carries the authorization request and the session's CSRF token."""

    csrf_token: str


class SignInForm(SignOutForm, kw_only=True):
    email: str
    password: str


class ConsentForm(SignOutForm, kw_only=True):
    decision: Literal["allow", "deny"]
