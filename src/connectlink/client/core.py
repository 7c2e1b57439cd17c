"""The SDK's one implementation, with no I/O: how a call becomes requests and its responses a
result or an error (the sans-IO shape of h11 and httpx's models).

A call runs as a generator, its *flow*, which yields steps and is sent their outcomes:

- ``Send(request)``: send it; the reply is the ``httpx.Response`` (body read) or the
  ``httpx.TransportError`` that stopped it;
- ``Sleep(seconds)``: wait before the next attempt (``retry.RetryPolicy``);
- ``Bearer(refused)``: the access token to present, taken under the client's lock (a new one
  when ``refused`` is the current one).

The sync and async clients differ only in how they perform those three steps, so retries, the
one renewal of a refused token and the parsing of every body are written once, here.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import msgspec

from connectlink import __version__, errors
from connectlink.client.errors import (
    ConnectionFailed,
    ResponseLost,
    UnexpectedResponse,
    error_from,
)
from connectlink.client.retry import DEFAULT_RETRY, MAYBE_SENT, RetryPolicy

T = TypeVar("T")
PRODUCTION_URL = "https://connect.instacart.com"  # connect-api.md section 0 "Hosts"
USER_AGENT = f"connectlink-python/{__version__}"


@dataclass(frozen=True, slots=True)
class Config:
    """What every request of one client shares."""

    client_id: str
    client_secret: str = field(repr=False)
    base_url: str = PRODUCTION_URL
    retry: RetryPolicy = DEFAULT_RETRY
    banner: str | None = None  # X-Retailer-Id, for multi-banner retailers (section 0)
    scope: str | None = "connect:fulfillment"  # asked of the client-credentials token
    # The emulator's admin plane (docs/emulator.md): sent only on its calls; None: nothing
    # is sent, and only a loopback caller naming a loopback host is admitted.
    admin_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One API operation, named as in the server's operation table: its request, the Struct of
    its 200 body, whether it presents the access token, and whether it may be sent again after
    a request whose answer was lost (``replay_safe``: repeating it cannot change the outcome).
    ``admin``: a call of the emulator's admin plane, which presents the admin token, if the
    client has one, instead of the access token (``client.emulator``)."""

    operation: str
    method: str
    path: str
    into: type[T]
    body: msgspec.Struct | dict[str, Any] | None = None
    bearer: bool = True
    replay_safe: bool = True
    admin: bool = False


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None


@dataclass(frozen=True, slots=True)
class Send:
    request: HttpRequest


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Bearer:
    refused: str | None = None


Step = Send | Sleep | Bearer
Flow = Generator[Step, Any, T]


def request_for(config: Config, call: Call[Any], token: str | None) -> HttpRequest:
    """The request's wire form: JSON bodies and ``Accept`` as the docs show (section 0)."""
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    content = None
    if call.body is not None:
        headers["Content-Type"] = "application/json"
        content = msgspec.json.encode(call.body)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    elif call.admin and config.admin_token:
        headers["Authorization"] = f"Bearer {config.admin_token}"
    if config.banner is not None and not call.admin:
        headers["X-Retailer-Id"] = config.banner
    return HttpRequest(call.method, config.base_url + call.path, headers, content)


def parse(response: httpx.Response, into: type[T]) -> T:
    """A 2xx body as the Struct the server encoded, else the error the response carries, as
    the class the server raised (``client.errors.error_from``). Both clients call this."""
    if not 200 <= response.status_code < 300:
        raise error_from(response)
    try:
        return msgspec.json.decode(response.content, type=into)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise UnexpectedResponse(response.status_code, response.content,
                                 response.headers) from exc


def token_refused(response: httpx.Response) -> bool:
    """A 401 ``invalid_token`` (unknown, expired or revoked): worth one new token. The server
    checks the bearer before anything else (decisions.md "Check order"), so the refused call
    was not acted on and is safe to send again, single-use linking token or not."""
    return response.status_code == 401 and isinstance(error_from(response), errors.InvalidToken)


def transport_failure(exc: httpx.TransportError) -> ConnectionFailed:
    """The SDK's error for a request that got no response (``client.errors``)."""
    kind = ResponseLost if isinstance(exc, MAYBE_SENT) else ConnectionFailed
    return kind(f"{type(exc).__name__}: {exc}")


def perform(config: Config, call: Call[T]) -> Flow[T]:
    """The flow of one call: its attempts, waits and at most one new token."""
    token: str | None = (yield Bearer()) if call.bearer else None
    attempt, renewed = 0, False
    while True:
        outcome = yield Send(request_for(config, call, token))
        wait = config.retry.wait(attempt, outcome, call.replay_safe)
        if wait is not None:
            attempt += 1
            yield Sleep(wait)
            continue
        if isinstance(outcome, httpx.TransportError):
            raise transport_failure(outcome) from outcome
        if call.bearer and not renewed and token_refused(outcome):
            renewed = True
            token = yield Bearer(refused=token)
            continue
        return parse(outcome, call.into)
