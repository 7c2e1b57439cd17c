"""The authorization endpoint's decision (RFC 6749 sections 4.1.1 and 4.1.2, RFC 7636 section
4.3): one for both ways a shopper consents, the Login pages and the sandbox's authorize call.

``problems`` examines a request against its client; ``consent`` turns a sound request into what
the shopper is asked to allow; ``grant`` issues the code once they allow it. Errors come in
RFC 6749's two families (``connectlink.errors``): fatal ones, shown and never redirected (an
unknown client, a redirect URI that is missing or not registered), and redirectable ones, sent
back to the registered redirect URI with ``state``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from connectlink.errors import (
    AccessDenied,
    AuthorizationError,
    InvalidAuthorizationRequest,
    InvalidAuthorizationScope,
    InvalidRedirectUri,
    UnknownClient,
    UnsupportedResponseType,
    with_query,
)
from connectlink.models import ACCOUNT_LINKING, AUTHORIZATION_CODE, OAuthClient
from connectlink.oauth import codes, grants, pkce, redirects, scopes
from connectlink.storage.base import Store

# decisions.md: a Login URL without ``scope`` asks for account linking.
DEFAULT_SCOPE = ACCOUNT_LINKING
PARAMETERS = (
    "response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
    "code_challenge_method",
)


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """The parameters of section 4.1.1 (and RFC 7636 section 4.3); None when absent."""

    client_id: str | None
    redirect_uri: str | None
    response_type: str | None = "code"
    scope: str | None = None
    state: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None

    # Section 3.1: parameters must not be included more than once; these were.
    repeated: frozenset[str] = frozenset()

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> AuthorizationRequest:
        """From a query string's or a form's pairs (others, such as a form's ``email``, are
        left out). An empty value counts as absent, except ``state``: it goes back byte for
        byte."""
        values: dict[str, str] = {}
        repeated = set()
        for name, value in pairs:
            if name in PARAMETERS:
                if name in values:
                    repeated.add(name)
                values.setdefault(name, value)

        def given(name: str) -> str | None:
            return values.get(name) or None

        return cls(
            client_id=given("client_id"),
            redirect_uri=given("redirect_uri"),
            response_type=values.get("response_type"),
            scope=given("scope"),
            state=values.get("state"),
            code_challenge=given("code_challenge"),
            code_challenge_method=given("code_challenge_method"),
            repeated=frozenset(repeated),
        )

    def params(self) -> dict[str, str]:
        """The parameters that were given, to carry through a form or a URL."""
        return {name: getattr(self, name) for name in PARAMETERS
                if getattr(self, name) is not None}


@dataclass(frozen=True, slots=True)
class Consent:
    """A sound request: what the shopper is asked to allow, and where the answer goes."""

    client: OAuthClient
    redirect_uri: str
    scopes: frozenset[str]
    state: str | None
    challenge: tuple[str, str] | None  # PKCE (code_challenge, method)

    def redirect(self, **params: str) -> str:
        """The redirect URI carrying ``params`` and ``state`` (section 4.1.2)."""
        if self.state is not None:
            params["state"] = self.state
        return with_query(self.redirect_uri, params)

    def denied(self) -> AccessDenied:
        return AccessDenied(self.redirect_uri, self.state)


def _granted(client: OAuthClient, request: AuthorizationRequest) -> frozenset[str] | None:
    requested = scopes.parse(request.scope) or frozenset({DEFAULT_SCOPE})
    return scopes.consented(requested, client.scopes_for(AUTHORIZATION_CODE) or frozenset())


def problems(
    client: OAuthClient | None, request: AuthorizationRequest
) -> list[AuthorizationError]:
    """Everything wrong with ``request``: the fatal problem alone if there is one (nothing can
    be redirected then), else the redirectable ones in parameter order."""
    repeated = request.repeated
    if client is None or "client_id" in repeated:
        return [UnknownClient("client_id", blank=request.client_id is None)]
    uri = request.redirect_uri
    # An exact match with a registered URI (decisions.md), never a prefix or a pattern; and
    # never one the rules refuse, however it came to be stored (an older version, a snapshot).
    if (uri is None or uri not in client.redirect_uris or "redirect_uri" in repeated
            or redirects.problem(uri) is not None):
        return [InvalidRedirectUri("redirect_uri", blank=uri is None)]
    state = request.state
    found: list[AuthorizationError] = [
        InvalidAuthorizationRequest(uri, state, name) for name in PARAMETERS if name in repeated
    ]
    if request.response_type != "code":
        found.append(UnsupportedResponseType(uri, state, "response_type",
                                             blank=not request.response_type))
    if _granted(client, request) is None:
        found.append(InvalidAuthorizationScope(uri, state, "scope"))
    challenge, method = request.code_challenge, request.code_challenge_method
    if challenge is not None and not pkce.well_formed(challenge):
        found.append(InvalidAuthorizationRequest(uri, state, "code_challenge"))
    elif challenge is None and (client.require_pkce or method is not None):
        found.append(InvalidAuthorizationRequest(uri, state, "code_challenge", blank=True))
    if method is not None and method not in pkce.METHODS:
        found.append(InvalidAuthorizationRequest(uri, state, "code_challenge_method"))
    return found


def consent(client: OAuthClient | None, request: AuthorizationRequest) -> Consent:
    """The consent ``request`` asks for, or the first of its problems, raised."""
    found = problems(client, request)
    if found:
        raise found[0]
    assert client is not None and request.redirect_uri is not None
    granted = _granted(client, request)
    assert granted is not None
    challenge = request.code_challenge
    return Consent(
        client=client,
        redirect_uri=request.redirect_uri,
        scopes=granted,
        state=request.state,
        # RFC 7636 section 4.3: the method defaults to "plain".
        challenge=(challenge, request.code_challenge_method or "plain") if challenge else None,
    )


async def validate(store: Store, request: AuthorizationRequest) -> Consent:
    """``consent`` for a request that names its client by ``client_id``."""
    return consent(await grants.find_client(store, request.client_id), request)


async def grant(store: Store, now: float, ttl: int, allowed: Consent, account_id: int) -> str:
    """The shopper allowed it: a code bound to everything the consent names."""
    return await codes.issue(
        store, now, ttl, allowed.client, account_id, allowed.redirect_uri, allowed.scopes,
        allowed.challenge,
    )
