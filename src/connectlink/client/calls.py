"""Every API operation as a ``Call``: its request, the Struct its 200 body decodes into (the
ones in ``connectlink.wire`` that the server encodes), and whether it is safe to send again.

Safe to repeat (``replay_safe``), so retried even after an answer was lost:
``issue_token`` (another token is harmless), ``create_user`` (create-or-update: the same fields
give the same user, decisions.md "Connect users"), ``get_user``, ``get_link``,
``privacy_request`` ("filing it again changes nothing"), ``revoke`` (RFC 7009: an unknown or
revoked token still answers ``{}``) and the sandbox's ``authorize`` (a second code is harmless;
the first expires unused in 10 minutes).

Not safe, so retried only when the server surely did not act (a connection that never opened,
429, 503): ``link`` (its linking token is single use: a retry after a lost answer could only
answer "Linking token is invalid", though the link was made), ``exchange_code`` (codes are single
use, and a reused code also revokes the token its first use made, decisions.md) and the
sandbox's ``create_instacart_user`` (a retry would find its own account: "An account already
exists with this email").
"""

from __future__ import annotations

import secrets
from typing import Literal
from urllib.parse import quote, urlencode

from connectlink import wire
from connectlink.client.core import Call, Config
from connectlink.oauth.pkce import s256

_USERS = "/v2/fulfillment/users"
_SANDBOX_USERS = "/v2/fulfillment_sandbox/instacart_users"
ChallengeMethod = Literal["S256", "plain"]


def _user(user_id: str, tail: str = "") -> str:
    return f"{_USERS}/{quote(user_id, safe='')}{tail}"


def issue_token(config: Config) -> Call[wire.Token]:
    """``client_credentials`` (connect-api.md section 1): credentials in the JSON body."""
    body = wire.TokenRequestBody(grant_type="client_credentials", client_id=config.client_id,
                                 client_secret=config.client_secret, scope=config.scope)
    return Call("issue_token", "POST", "/v2/oauth/token", wire.Token, body, bearer=False)


def exchange_code(config: Config, code: str, redirect_uri: str,
                  code_verifier: str | None = None) -> Call[wire.Token]:
    """``authorization_code`` (section 3): the token's ``access_token`` is the linking token."""
    body = wire.TokenRequestBody(
        grant_type="authorization_code", client_id=config.client_id,
        client_secret=config.client_secret, code=code, redirect_uri=redirect_uri,
        code_verifier=code_verifier)
    return Call("issue_token", "POST", "/v2/oauth/token", wire.Token, body, bearer=False,
                replay_safe=False)


def revoke(config: Config, token: str) -> Call[wire.Revoked]:
    """RFC 7009 revocation, by the client that was issued the token (section 1b)."""
    body = wire.RevokeRequestBody(token=token, client_id=config.client_id,
                                  client_secret=config.client_secret)
    return Call("revoke_token", "POST", "/v2/oauth/token/revoke", wire.Revoked, body,
                bearer=False)


def create_user(user_id: str, first_name: str, last_name: str | None = None,
                phone_number: str | None = None, locale: str | None = None
                ) -> Call[wire.ConnectUser]:
    """Create a Connect user, or update the fields sent (section 7.1)."""
    body = wire.CreateUserBody(user_id=user_id, first_name=first_name, last_name=last_name,
                               phone_number=phone_number, locale=locale)
    return Call("create_user", "POST", _USERS, wire.ConnectUser, body)


def get_user(user_id: str) -> Call[wire.ConnectUser]:
    return Call("get_user", "GET", _user(user_id), wire.ConnectUser)


def link(user_id: str, linking_token: str) -> Call[wire.Success]:
    """Link with a single-use linking token (section 4)."""
    return Call("link", "POST", _user(user_id, "/link"), wire.Success,
                wire.LinkBody(linking_token), replay_safe=False)


def get_link(user_id: str) -> Call[wire.Membership]:
    """The linked account's Instacart+ membership (section 5)."""
    return Call("get_link", "GET", _user(user_id, "/link"), wire.Membership)


def privacy_request(user_id: str) -> Call[wire.Success]:
    """A data deletion request (section 7.3): no body."""
    return Call("privacy_request", "POST", _user(user_id, "/privacy_request"), wire.Success)


def create_instacart_user(email: str, phone: str, password: str,
                          instacartplus_member: bool = False) -> Call[wire.SandboxUser]:
    """A test Instacart account (section 8.1)."""
    body = wire.CreateInstacartUserBody(email=email, phone=phone, password=password,
                                        instacartplus_member=instacartplus_member)
    return Call("create_instacart_user", "POST", _SANDBOX_USERS, wire.SandboxUser, body,
                replay_safe=False)


def authorize_instacart_user(
    instacart_user_id: int, redirect_uri: str, scope: str = "openid account_linking",
    code_challenge: str | None = None, code_challenge_method: ChallengeMethod | None = None,
) -> Call[wire.SandboxCode]:
    """A test shopper's consent without a browser (section 8.2): an authorization code."""
    body = wire.AuthorizeBody(redirect_uri=redirect_uri, scope=scope,
                              code_challenge=code_challenge,
                              code_challenge_method=_method(code_challenge,
                                                            code_challenge_method))
    return Call("authorize_instacart_user", "POST",
                f"{_SANDBOX_USERS}/{int(instacart_user_id)}/authorize", wire.SandboxCode, body)


def _method(challenge: str | None, method: ChallengeMethod | None) -> ChallengeMethod | None:
    """S256 when a challenge comes without a method: the server's default is ``plain`` (RFC
    7636 section 4.3), and ``pkce_pair`` makes S256 challenges, so leaving it out would fail
    every exchange."""
    if challenge is None:
        return method
    return method or "S256"


def authorize_url(config: Config, redirect_uri: str, state: str,
                  scope: str = "account_linking", code_challenge: str | None = None,
                  code_challenge_method: ChallengeMethod | None = None) -> str:
    """The "Login with Instacart" URL (section 2; decisions.md "Login with Instacart")."""
    params = {"response_type": "code", "client_id": config.client_id,
              "redirect_uri": redirect_uri, "scope": scope, "state": state}
    if code_challenge is not None:
        params["code_challenge"] = code_challenge
        params["code_challenge_method"] = code_challenge_method or "S256"
    return f"{config.base_url}/oauth/authorize?{urlencode(params, quote_via=quote)}"


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE ``(code_verifier, code_challenge)``, S256 (RFC 7636 sections 4.1, 4.2):
    64 unreserved characters from 48 random bytes, and their SHA-256 in base64url."""
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)
