"""Token-endpoint requests: reading parameters and client credentials (RFC 6749 sections 2.3,
3.2), framework-free."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_plus

from connectlink import jsonio
from connectlink.errors import InvalidClient, InvalidRequest, QueryParamsForbidden
from connectlink.oauth import headers

CREDENTIAL_PARAMS = frozenset({"client_id", "client_secret"})


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    client_id: str
    client_secret: str
    via_basic: bool


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """The parameters of one token or revocation request, already checked for shape."""

    params: Mapping[str, str]
    credentials: ClientCredentials | None

    def get(self, name: str) -> str | None:
        value = self.params.get(name)
        return value if value else None


def parse(
    query_keys: Iterable[str], content_type: str, body: bytes, authorization: str | None
) -> TokenRequest:
    """Build a ``TokenRequest`` or raise the OAuth error its shape deserves."""
    if CREDENTIAL_PARAMS.intersection(query_keys):
        raise QueryParamsForbidden()
    params = _body_params(content_type, body)
    basic = _basic_credentials(authorization)
    if basic is not None:
        # Section 2.3: a client must not use more than one authentication method per request,
        # and a body naming another client than the header's is not one client at all.
        if "client_secret" in params or params.get("client_id", basic.client_id) != basic.client_id:
            raise InvalidRequest()
        return TokenRequest(params, basic)
    client_id, client_secret = params.get("client_id"), params.get("client_secret")
    credentials = (
        ClientCredentials(client_id, client_secret, via_basic=False)
        if client_id and client_secret
        else None
    )
    return TokenRequest(params, credentials)


def _body_params(content_type: str, body: bytes) -> dict[str, str]:
    if not body.strip():
        return {}
    is_form = "x-www-form-urlencoded" in content_type
    if "json" in content_type or (not is_form and body.lstrip().startswith(b"{")):
        return _json_params(body)
    return _form_params(body)


def _json_params(body: bytes) -> dict[str, str]:
    try:
        decoded = jsonio.decode_strict(body)  # section 3.2: no parameter twice
    except jsonio.UnreadableJSON:
        raise InvalidRequest() from None
    if not isinstance(decoded, dict):
        raise InvalidRequest()
    params: dict[str, str] = {}
    for name, value in decoded.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidRequest()
        params[name] = value
    return params


def _form_params(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest() from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:  # section 3.2: parameters must not be included more than once
            raise InvalidRequest()
        params[name] = value
    return params


def _basic_credentials(authorization: str | None) -> ClientCredentials | None:
    encoded = headers.credentials(authorization, "basic")
    if encoded is None:
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    # binascii.Error, UnicodeDecodeError, and base64's refusal of a str with non-ASCII
    # characters (a header is read as latin-1) are all ValueErrors.
    except ValueError:
        raise InvalidClient(basic_challenge=True) from None
    client_id, sep, client_secret = decoded.partition(":")
    if not sep or not client_id or not client_secret:
        raise InvalidClient(basic_challenge=True)
    # Section 2.3.1: both halves are form-urlencoded before being joined.
    return ClientCredentials(unquote_plus(client_id), unquote_plus(client_secret), via_basic=True)
