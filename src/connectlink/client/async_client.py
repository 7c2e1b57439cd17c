"""``AsyncConnectClient``: the SDK over an ``httpx.AsyncClient``.

The same flow as ``ConnectClient`` (``core.perform``), its steps awaited; the access token is
taken under an ``asyncio.Lock``, so that any number of tasks starting at once make one token
request. The resources mirror ``sync_client``'s, one awaited line each.
"""

from __future__ import annotations

import asyncio
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


class AsyncRunner(Protocol):
    async def __call__(self, call: Call[T]) -> T: ...


class AsyncUsers:
    """Connect users and their links (connect-api.md sections 4, 5, 7)."""

    def __init__(self, run: AsyncRunner) -> None:
        self._run = run

    async def create(self, user_id: str, first_name: str, last_name: str | None = None,
                     phone_number: str | None = None, locale: str | None = None
                     ) -> wire.ConnectUser:
        """Create a Connect user, or update the fields sent if it exists (section 7.1)."""
        return await self._run(calls.create_user(user_id, first_name, last_name, phone_number,
                                                 locale))

    async def get(self, user_id: str) -> wire.ConnectUser:
        """Read a Connect user (an extension: decisions.md "Connect users")."""
        return await self._run(calls.get_user(user_id))

    async def link(self, user_id: str, linking_token: str | wire.Token) -> None:
        """Link the user's Instacart account with a single-use linking token (section 4)."""
        token = linking_token.access_token if isinstance(linking_token, wire.Token) else (
            linking_token)
        await self._run(calls.link(user_id, token))

    async def get_link(self, user_id: str) -> wire.Membership:
        """The linked account's Instacart+ membership, by the server's clock (section 5)."""
        return await self._run(calls.get_link(user_id))

    async def privacy_request(self, user_id: str) -> None:
        """File a data deletion request: the user stops being active (section 7.3)."""
        await self._run(calls.privacy_request(user_id))


class AsyncOAuth:
    """The token endpoints beyond the client's own access token (sections 1b, 3)."""

    def __init__(self, run: AsyncRunner, config: Config) -> None:
        self._run, self._config = run, config

    async def exchange_code(self, code: str, redirect_uri: str,
                            code_verifier: str | None = None) -> wire.Token:
        """Exchange an authorization code for the linking token (``access_token``)."""
        return await self._run(calls.exchange_code(self._config, code, redirect_uri,
                                                   code_verifier))

    async def revoke(self, token: str | wire.Token) -> None:
        """Revoke a token this client was issued (RFC 7009)."""
        value = token.access_token if isinstance(token, wire.Token) else token
        await self._run(calls.revoke(self._config, value))


class AsyncSandbox:
    """Test Instacart accounts and consent without a browser (section 8; emulator only)."""

    def __init__(self, run: AsyncRunner) -> None:
        self._run = run

    async def create_instacart_user(self, email: str, phone: str, password: str,
                                    instacartplus_member: bool = False) -> int:
        """A test Instacart account; its id."""
        created = await self._run(calls.create_instacart_user(
            email, phone, password, instacartplus_member))
        return created.id

    async def authorize(self, instacart_user_id: int, redirect_uri: str,
                        scope: str = "openid account_linking", code_challenge: str | None = None,
                        code_challenge_method: ChallengeMethod | None = None) -> str:
        """The account's consent to this client: an authorization code (10 minutes)."""
        granted = await self._run(calls.authorize_instacart_user(
            instacart_user_id, redirect_uri, scope, code_challenge, code_challenge_method))
        return granted.code


class AsyncEmulatorClock:
    """A retailer's virtual clock (docs/emulator.md); each call answers its state."""

    def __init__(self, run: AsyncRunner) -> None:
        self._run = run

    async def get(self, retailer_id: int) -> ew.Clock:
        return await self._run(emulator.read_clock(retailer_id))

    async def advance(self, retailer_id: int, seconds: float) -> ew.Clock:
        """Move it ``seconds`` on (back, if negative); a frozen clock stays frozen."""
        return await self._run(emulator.advance_clock(retailer_id, seconds))

    async def set(self, retailer_id: int, when: When) -> ew.Clock:
        """Make it read ``when`` (a datetime, naive ones as UTC, or an ISO 8601 string)."""
        return await self._run(emulator.set_clock(retailer_id, when))

    async def freeze(self, retailer_id: int) -> ew.Clock:
        """Stop it at the current virtual time."""
        return await self._run(emulator.freeze_clock(retailer_id))

    async def unfreeze(self, retailer_id: int) -> ew.Clock:
        """Run on from where it stood."""
        return await self._run(emulator.freeze_clock(retailer_id, False))

    async def reset(self, retailer_id: int) -> ew.Clock:
        """The wall clock again, running."""
        return await self._run(emulator.reset_clock(retailer_id))


class AsyncEmulatorFaults:
    """Rules that make chosen requests fail as the real service can (docs/emulator.md)."""

    def __init__(self, run: AsyncRunner) -> None:
        self._run = run

    async def add(self, endpoint: str, fault: ew.Fault | int, *, retailer_id: int | None = None,
                  client_id: str | None = None, times: int | None = None,
                  every: int | None = None, probability: float | None = None,
                  seed: int | None = None, retry_after: int | None = None,
                  latency_ms: int | None = None) -> int:
        """A rule for ``endpoint`` and the requests of ``retailer_id`` or ``client_id``; its
        id. Options not given take the server's defaults."""
        created = await self._run(emulator.add_fault(
            endpoint, fault, retailer_id=retailer_id, client_id=client_id, times=times,
            every=every, probability=probability, seed=seed, retry_after=retry_after,
            latency_ms=latency_ms))
        return created.id

    async def list(self) -> FaultRules:
        """Every rule, oldest first, with how many requests it ``matched`` and ``fired`` on."""
        return (await self._run(emulator.list_faults())).faults

    async def delete(self, fault_id: int) -> None:
        """Delete one rule (``FaultNotFound`` if there is none)."""
        await self._run(emulator.delete_fault(fault_id))

    async def clear(self) -> int:
        """Delete every rule; how many there were."""
        return (await self._run(emulator.clear_faults())).deleted


class AsyncEmulatorTokens:
    """What happened to a token, linking token or authorization code."""

    def __init__(self, run: AsyncRunner) -> None:
        self._run = run

    async def get(self, secret: str | wire.Token) -> ew.TokenLifecycle:
        """Its lifecycle, by its fingerprint or by the secret itself (fingerprinted here)."""
        return await self._run(emulator.token_lifecycle(secret))


class AsyncEmulatorMemberships:
    """Sandbox accounts' Instacart+ memberships, by a retailer's clock or the server's."""

    def __init__(self, run: AsyncRunner) -> None:
        self._run = run

    async def get(self, instacart_user_id: int, retailer_id: int | None = None
                  ) -> ew.Membership:
        return await self._run(emulator.read_membership(instacart_user_id, retailer_id))

    async def start(self, instacart_user_id: int, days: float, retailer_id: int | None = None
                    ) -> ew.Membership:
        """A member for ``days`` from now."""
        return await self._run(emulator.start_membership(instacart_user_id, days, retailer_id))

    async def extend(self, instacart_user_id: int, days: float, retailer_id: int | None = None
                     ) -> ew.Membership:
        """``days`` more, from the current expiry (or from now, if it has lapsed)."""
        return await self._run(emulator.extend_membership(instacart_user_id, days,
                                                          retailer_id))

    async def lapse(self, instacart_user_id: int, retailer_id: int | None = None
                    ) -> ew.Membership:
        """Not a member from now on."""
        return await self._run(emulator.lapse_membership(instacart_user_id, retailer_id))


class AsyncEmulator:
    """ConnectLink's control plane, ``/_connectlink/`` (docs/emulator.md), as ``Emulator``:
    ``clock``, ``faults``, ``tokens``, ``memberships``, the journal and snapshots."""

    def __init__(self, run: AsyncRunner) -> None:
        self._run = run
        self.clock = AsyncEmulatorClock(run)
        self.faults = AsyncEmulatorFaults(run)
        self.tokens = AsyncEmulatorTokens(run)
        self.memberships = AsyncEmulatorMemberships(run)

    async def journal(self, retailer_id: int, path: str | None = None,
                      operation: str | None = None, status: int | None = None,
                      since: When | None = None, until: When | None = None,
                      limit: int | None = None) -> list[ew.JournalEntry]:
        """The retailer's requests, newest first; ``path`` as requested (not the template)."""
        journal = await self._run(emulator.read_journal(retailer_id, path, operation, status,
                                                        since, until, limit))
        return journal.entries

    async def snapshot(self) -> ew.Snapshot:
        """The whole state (secrets only as the server stores them)."""
        return await self._run(emulator.snapshot())

    async def restore(self, snapshot: ew.Snapshot | Mapping[str, Any]) -> None:
        """Replace the whole state with a snapshot (``SnapshotMismatch`` if it does not fit)."""
        await self._run(emulator.restore(snapshot))

    async def reset(self) -> None:
        """Empty every table, retailers included."""
        await self._run(emulator.reset())


class AsyncConnectClient(ClientBase[httpx.AsyncClient]):
    """The Connect account-linking API for asyncio; safe to share between tasks of a loop."""

    users: AsyncUsers
    oauth: AsyncOAuth
    sandbox: AsyncSandbox
    emulator: AsyncEmulator

    def _bind(self) -> None:
        self._lock = asyncio.Lock()
        self.users = AsyncUsers(self._call)
        self.oauth = AsyncOAuth(self._call, self.config)
        self.sandbox = AsyncSandbox(self._call)
        self.emulator = AsyncEmulator(self._call)

    def _new_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=DEFAULT_TIMEOUT)

    async def _call(self, call: Call[T]) -> T:
        flow = perform(self.config, call)
        reply: Any = None
        try:
            while True:
                try:
                    step = flow.send(reply)
                except StopIteration as done:
                    result: T = done.value
                    return result
                reply = await self._perform(step)
        finally:
            flow.close()

    async def _perform(self, step: Step) -> Any:
        if isinstance(step, Send):
            return await self._send(step.request)
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        return await self._bearer(step)

    async def _send(self, request: HttpRequest) -> httpx.Response | httpx.TransportError:
        built = self._http.build_request(request.method, request.url, headers=request.headers,
                                         content=request.content, timeout=self._timeout)
        try:
            return await self._http.send(built)
        except httpx.TransportError as exc:
            return exc

    async def _bearer(self, step: Bearer) -> str:
        async with self._lock:  # one token request, however many tasks need one
            token = self._tokens.current(time.monotonic(), step.refused)
            if token is None:
                asked = Instant.now()
                token = self._tokens.keep(await self._call(calls.issue_token(self.config)),
                                          asked)
            return token

    async def aclose(self) -> None:
        """Close the HTTP client, if the SDK made it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncConnectClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.aclose()
