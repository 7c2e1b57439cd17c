"""What the sync and async clients share besides the flow: their constructor, their
configuration, their token cache and the Login URL, which needs no I/O."""

from __future__ import annotations

import os
from typing import Generic, TypeVar

import httpx

from connectlink.client import calls
from connectlink.client.calls import ChallengeMethod
from connectlink.client.core import PRODUCTION_URL, Config
from connectlink.client.retry import DEFAULT_RETRY, RetryPolicy
from connectlink.client.tokens import TokenCache

DEFAULT_TIMEOUT = 30.0  # seconds, for a client the SDK makes itself
ADMIN_TOKEN_VARIABLE = "CONNECTLINK_ADMIN_TOKEN"  # the admin token's default, as serve's
Http = TypeVar("Http", httpx.Client, httpx.AsyncClient)


class ClientBase(Generic[Http]):
    """A retailer's OAuth client against one ConnectLink or Instacart Connect host.

    ``base_url`` defaults to Instacart's production host; ``http_client`` is an httpx client of
    the caller's (its transport, proxies, limits), which the SDK then never closes;
    ``timeout`` (seconds) applies to each request, by default 30 s, or the given client's own;
    ``retry`` says how often and how long to retry (``RetryPolicy(max_retries=0)``: never);
    ``banner`` is sent as ``X-Retailer-Id`` (multi-banner retailers, connect-api.md section
    0); ``scope`` is asked of the client-credentials token; ``admin_token`` is presented to
    the emulator's admin plane (``emulator``, docs/emulator.md) and on no other call, by
    default ``$CONNECTLINK_ADMIN_TOKEN`` (none: only a loopback caller is admitted).
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        base_url: str = PRODUCTION_URL,
        *,
        http_client: Http | None = None,
        timeout: float | httpx.Timeout | None = None,
        retry: RetryPolicy | None = None,
        banner: str | None = None,
        scope: str | None = "connect:fulfillment",
        admin_token: str | None = None,
    ) -> None:
        if admin_token is None:
            admin_token = os.environ.get(ADMIN_TOKEN_VARIABLE) or None
        self.config = Config(client_id, client_secret, base_url.rstrip("/"),
                             retry or DEFAULT_RETRY, banner, scope, admin_token)
        self._owns_http = http_client is None
        self._http: Http = http_client if http_client is not None else self._new_http()
        self._timeout = self._http.timeout if timeout is None else httpx.Timeout(timeout)
        self._tokens = TokenCache()
        self._bind()

    def _new_http(self) -> Http:
        """The HTTP client the SDK makes (and closes) when none is given."""
        raise NotImplementedError

    def _bind(self) -> None:
        """Make the lock and the resources, which differ between sync and async."""
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return self.config.base_url

    @property
    def client_id(self) -> str:
        return self.config.client_id

    def authorize_url(
        self, redirect_uri: str, state: str, scope: str = "account_linking",
        code_challenge: str | None = None, code_challenge_method: ChallengeMethod | None = None,
    ) -> str:
        """The "Login with Instacart" URL to send a shopper to (connect-api.md section 2):
        ``{base_url}/oauth/authorize?response_type=code&...``. Pure: no request is made. With
        a ``code_challenge`` and no method, the method is S256 (what ``pkce_pair`` makes)."""
        return calls.authorize_url(self.config, redirect_uri, state, scope, code_challenge,
                                   code_challenge_method)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client_id={self.client_id!r}, base_url={self.base_url!r})"
