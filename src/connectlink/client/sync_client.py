"""``ConnectClient``: the SDK over a blocking ``httpx.Client``.

It only performs the steps of ``core.perform``: sends, sleeps, and the access token under a
``threading.Lock``, so that any number of threads starting at once make one token request. The
resource methods are one line each over ``calls`` (``emulator``'s, for the emulator's admin
plane); they are repeated in ``async_client`` only
because Python's types cannot say "T, or an awaitable of T" of one method (httpx's
``Client``/``AsyncClient`` pair is written the same way).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Protocol, TypeVar

import httpx

from connectlink import wire
from connectlink.client import calls, emulator
from connectlink.client.base import DEFAULT_TIMEOUT, ClientBase
from connectlink.client.calls import ChallengeMethod
from connectlink.client.core import Bearer, Call, Config, HttpRequest, Send, Sleep, Step, perform
from connectlink.client.emulator import When
from connectlink.client.tokens import Instant
from connectlink.emulator import wire as ew

T = TypeVar("T")
FaultRules = list[ew.FaultRule]  # (a method named ``list`` would shadow the builtin)


class Runner(Protocol):
    def __call__(self, call: Call[T]) -> T: ...


class Users:
    """Connect users and their links (connect-api.md sections 4, 5, 7)."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    def create(self, user_id: str, first_name: str, last_name: str | None = None,
               phone_number: str | None = None, locale: str | None = None) -> wire.ConnectUser:
        """Create a Connect user, or update the fields sent if it exists (section 7.1)."""
        return self._run(calls.create_user(user_id, first_name, last_name, phone_number, locale))

    def get(self, user_id: str) -> wire.ConnectUser:
        """Read a Connect user (an extension: decisions.md "Connect users")."""
        return self._run(calls.get_user(user_id))

    def link(self, user_id: str, linking_token: str | wire.Token) -> None:
        """Link the user's Instacart account with a single-use linking token (section 4)."""
        token = linking_token.access_token if isinstance(linking_token, wire.Token) else (
            linking_token)
        self._run(calls.link(user_id, token))

    def get_link(self, user_id: str) -> wire.Membership:
        """The linked account's Instacart+ membership, by the server's clock (section 5)."""
        return self._run(calls.get_link(user_id))

    def privacy_request(self, user_id: str) -> None:
        """File a data deletion request: the user stops being active (section 7.3)."""
        self._run(calls.privacy_request(user_id))


class OAuth:
    """The token endpoints beyond the client's own access token (sections 1b, 3)."""

    def __init__(self, run: Runner, config: Config) -> None:
        self._run, self._config = run, config

    def exchange_code(self, code: str, redirect_uri: str,
                      code_verifier: str | None = None) -> wire.Token:
        """Exchange an authorization code for the linking token (``access_token``)."""
        return self._run(calls.exchange_code(self._config, code, redirect_uri, code_verifier))

    def revoke(self, token: str | wire.Token) -> None:
        """Revoke a token this client was issued (RFC 7009)."""
        value = token.access_token if isinstance(token, wire.Token) else token
        self._run(calls.revoke(self._config, value))


class Sandbox:
    """Test Instacart accounts and consent without a browser (section 8; emulator only)."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    def create_instacart_user(self, email: str, phone: str, password: str,
                              instacartplus_member: bool = False) -> int:
        """A test Instacart account; its id."""
        return self._run(calls.create_instacart_user(
            email, phone, password, instacartplus_member)).id

    def authorize(self, instacart_user_id: int, redirect_uri: str,
                  scope: str = "openid account_linking", code_challenge: str | None = None,
                  code_challenge_method: ChallengeMethod | None = None) -> str:
        """The account's consent to this client: an authorization code (10 minutes)."""
        return self._run(calls.authorize_instacart_user(
            instacart_user_id, redirect_uri, scope, code_challenge, code_challenge_method)).code


class EmulatorClock:
    """A retailer's virtual clock (docs/emulator.md): what its tokens, codes, memberships and
    retention expire by. Each call answers the clock's state (``now``, ``offset_seconds``,
    ``frozen``)."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    def get(self, retailer_id: int) -> ew.Clock:
        return self._run(emulator.read_clock(retailer_id))

    def advance(self, retailer_id: int, seconds: float) -> ew.Clock:
        """Move it ``seconds`` on (back, if negative); a frozen clock stays frozen."""
        return self._run(emulator.advance_clock(retailer_id, seconds))

    def set(self, retailer_id: int, when: When) -> ew.Clock:
        """Make it read ``when`` (a datetime, naive ones as UTC, or an ISO 8601 string)."""
        return self._run(emulator.set_clock(retailer_id, when))

    def freeze(self, retailer_id: int) -> ew.Clock:
        """Stop it at the current virtual time."""
        return self._run(emulator.freeze_clock(retailer_id))

    def unfreeze(self, retailer_id: int) -> ew.Clock:
        """Run on from where it stood."""
        return self._run(emulator.freeze_clock(retailer_id, False))

    def reset(self, retailer_id: int) -> ew.Clock:
        """The wall clock again, running."""
        return self._run(emulator.reset_clock(retailer_id))


class EmulatorFaults:
    """Rules that make chosen requests fail as the real service can (docs/emulator.md)."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    def add(self, endpoint: str, fault: ew.Fault | int, *, retailer_id: int | None = None,
            client_id: str | None = None, times: int | None = None, every: int | None = None,
            probability: float | None = None, seed: int | None = None,
            retry_after: int | None = None, latency_ms: int | None = None) -> int:
        """A rule for ``endpoint`` (``"POST /v2/oauth/token"``...) and the requests of
        ``retailer_id`` or ``client_id``; its id. Options not given take the server's
        defaults."""
        return self._run(emulator.add_fault(
            endpoint, fault, retailer_id=retailer_id, client_id=client_id, times=times,
            every=every, probability=probability, seed=seed, retry_after=retry_after,
            latency_ms=latency_ms)).id

    def list(self) -> FaultRules:
        """Every rule, oldest first, with how many requests it ``matched`` and ``fired`` on."""
        return self._run(emulator.list_faults()).faults

    def delete(self, fault_id: int) -> None:
        """Delete one rule (``FaultNotFound`` if there is none)."""
        self._run(emulator.delete_fault(fault_id))

    def clear(self) -> int:
        """Delete every rule; how many there were."""
        return self._run(emulator.clear_faults()).deleted


class EmulatorTokens:
    """What happened to a token, linking token or authorization code."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    def get(self, secret: str | wire.Token) -> ew.TokenLifecycle:
        """Its lifecycle, by its fingerprint or by the secret itself (fingerprinted here)."""
        return self._run(emulator.token_lifecycle(secret))


class EmulatorMemberships:
    """Sandbox accounts' Instacart+ memberships, by a retailer's clock or the server's."""

    def __init__(self, run: Runner) -> None:
        self._run = run

    def get(self, instacart_user_id: int, retailer_id: int | None = None) -> ew.Membership:
        return self._run(emulator.read_membership(instacart_user_id, retailer_id))

    def start(self, instacart_user_id: int, days: float, retailer_id: int | None = None
              ) -> ew.Membership:
        """A member for ``days`` from now."""
        return self._run(emulator.start_membership(instacart_user_id, days, retailer_id))

    def extend(self, instacart_user_id: int, days: float, retailer_id: int | None = None
               ) -> ew.Membership:
        """``days`` more, from the current expiry (or from now, if it has lapsed)."""
        return self._run(emulator.extend_membership(instacart_user_id, days, retailer_id))

    def lapse(self, instacart_user_id: int, retailer_id: int | None = None) -> ew.Membership:
        """Not a member from now on."""
        return self._run(emulator.lapse_membership(instacart_user_id, retailer_id))


class Emulator:
    """ConnectLink's control plane, ``/_connectlink/`` (docs/emulator.md; the emulator
    profile only): ``clock``, ``faults``, ``tokens``, ``memberships``, the request journal and
    snapshots. It presents the client's ``admin_token`` if it has one, never its access token."""

    def __init__(self, run: Runner) -> None:
        self._run = run
        self.clock = EmulatorClock(run)
        self.faults = EmulatorFaults(run)
        self.tokens = EmulatorTokens(run)
        self.memberships = EmulatorMemberships(run)

    def journal(self, retailer_id: int, path: str | None = None, operation: str | None = None,
                status: int | None = None, since: When | None = None, until: When | None = None,
                limit: int | None = None) -> list[ew.JournalEntry]:
        """The retailer's requests, newest first; ``path`` as requested (not the template)."""
        return self._run(emulator.read_journal(retailer_id, path, operation, status, since,
                                               until, limit)).entries

    def snapshot(self) -> ew.Snapshot:
        """The whole state (secrets only as the server stores them)."""
        return self._run(emulator.snapshot())

    def restore(self, snapshot: ew.Snapshot | Mapping[str, Any]) -> None:
        """Replace the whole state with a snapshot (``SnapshotMismatch`` if it does not fit)."""
        self._run(emulator.restore(snapshot))

    def reset(self) -> None:
        """Empty every table, retailers included."""
        self._run(emulator.reset())


class ConnectClient(ClientBase[httpx.Client]):
    """The Connect account-linking API, blocking; safe to share between threads."""

    users: Users
    oauth: OAuth
    sandbox: Sandbox
    emulator: Emulator

    def _bind(self) -> None:
        self._lock = threading.Lock()
        self.users = Users(self._call)
        self.oauth = OAuth(self._call, self.config)
        self.sandbox = Sandbox(self._call)
        self.emulator = Emulator(self._call)

    def _new_http(self) -> httpx.Client:
        return httpx.Client(timeout=DEFAULT_TIMEOUT)

    def _call(self, call: Call[T]) -> T:
        flow = perform(self.config, call)
        reply: Any = None
        try:
            while True:
                try:
                    step = flow.send(reply)
                except StopIteration as done:
                    result: T = done.value
                    return result
                reply = self._perform(step)
        finally:
            flow.close()

    def _perform(self, step: Step) -> Any:
        if isinstance(step, Send):
            return self._send(step.request)
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        return self._bearer(step)

    def _send(self, request: HttpRequest) -> httpx.Response | httpx.TransportError:
        built = self._http.build_request(request.method, request.url, headers=request.headers,
                                         content=request.content, timeout=self._timeout)
        try:
            return self._http.send(built)
        except httpx.TransportError as exc:
            return exc

    def _bearer(self, step: Bearer) -> str:
        with self._lock:  # one token request, however many threads need one
            token = self._tokens.current(time.monotonic(), step.refused)
            if token is None:
                asked = Instant.now()
                token = self._tokens.keep(self._call(calls.issue_token(self.config)), asked)
            return token

    def close(self) -> None:
        """Close the HTTP client, if the SDK made it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> ConnectClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
