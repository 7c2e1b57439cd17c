"""The storefront's calls to the Connect API (or to ConnectLink standing in for it)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx


class ConnectFailure(Exception):
    """A Connect call refused; ``error`` is the OAuth slug or the Connect message."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(f"{status} {error}")
        self.status = status
        self.error = error


def _failure(response: httpx.Response) -> ConnectFailure:
    try:
        body = response.json()
    except ValueError:
        return ConnectFailure(response.status_code, "unreadable response")
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):  # the Connect envelope
        return ConnectFailure(response.status_code, str(error.get("message")))
    return ConnectFailure(response.status_code, str(error))


def pkce_pair() -> tuple[str, str]:
    """An RFC 7636 verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class ConnectAPI:
    base_url: str
    client_id: str
    client_secret: str
    redirect_uri: str
    http: httpx.AsyncClient
    _token: str | None = None
    _token_expires: float = 0.0

    def authorize_url(self, state: str, code_challenge: str) -> str:
        query = urlencode({
            "response_type": "code", "client_id": self.client_id,
            "redirect_uri": self.redirect_uri, "scope": "account_linking", "state": state,
            "code_challenge": code_challenge, "code_challenge_method": "S256",
        })
        return f"{self.base_url}/oauth/authorize?{query}"

    async def _token_request(self, **params: str) -> dict[str, Any]:
        response = await self.http.post(f"{self.base_url}/v2/oauth/token", json={
            "client_id": self.client_id, "client_secret": self.client_secret, **params})
        if response.status_code != 200:
            raise _failure(response)
        body: dict[str, Any] = response.json()
        return body

    async def _bearer(self) -> str:
        if self._token is None or time.monotonic() > self._token_expires:
            issued = await self._token_request(grant_type="client_credentials",
                                               scope="connect:fulfillment")
            self._token = str(issued["access_token"])
            self._token_expires = time.monotonic() + int(issued["expires_in"]) - 60
        return self._token

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        for attempt in range(2):
            headers = {"Authorization": f"Bearer {await self._bearer()}"}
            response = await self.http.request(method, f"{self.base_url}{path}", json=body,
                                               headers=headers)
            if response.status_code == 401 and attempt == 0:
                self._token = None  # expired or revoked: take a new one, once
                continue
            if response.status_code != 200:
                raise _failure(response)
            return response.json()
        raise AssertionError("unreachable")

    async def exchange(self, code: str, verifier: str) -> str:
        """The code for a single-use linking token (section 3)."""
        issued = await self._token_request(
            grant_type="authorization_code", code=code, redirect_uri=self.redirect_uri,
            code_verifier=verifier)
        return str(issued["access_token"])

    async def create_user(self, user_id: str, first_name: str, last_name: str) -> None:
        await self._call("POST", "/v2/fulfillment/users",
                         {"user_id": user_id, "first_name": first_name, "last_name": last_name})

    async def link(self, user_id: str, linking_token: str) -> None:
        await self._call("POST", f"/v2/fulfillment/users/{user_id}/link",
                         {"linking_token": linking_token})

    async def membership(self, user_id: str) -> dict[str, Any] | None:
        """The Instacart+ status, or None while the user is not linked."""
        try:
            found: dict[str, Any] = await self._call(
                "GET", f"/v2/fulfillment/users/{user_id}/link")
        except ConnectFailure as failure:
            if failure.error == "User Not Linked":
                return None
            raise
        return found
