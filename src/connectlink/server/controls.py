"""The emulator's controls where the operation table applies them (docs/emulator.md): fault
rules once the caller is identified and before the handler runs, and the journal entry once
the answer is known. Only the emulator profile has a ``Controls``; without one, not a
statement more runs.

The journal is written in batches: a request only appends its entry, before its answer is
sent, and each worker writes what it holds in one transaction every few milliseconds (a
write a request cost GET link half its throughput on SQLite). Whoever reads the journal
(``settle``) first raises a barrier in the database and waits until every live worker has
written out everything it held when it saw the barrier: so a reader finds every request that
was answered before it asked, whichever worker or host answered it. A worker's entries not
yet written when it is killed are lost (a few milliseconds' worth).

Who the caller is, each kind of operation says (``operations.py``): the bearer token's
retailer, the client a token request or a Login page names. A fault acts in one of three ways:
it answers in the request's place (an error, or ``Dropped``: no answer at all), it delays the
request, or it changes what the request asks (``deny``: the shopper's Deny; ``expired_token``:
a token with no lifetime), leaving the handler to do the rest as it always does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from connectlink import errors, jsonio, security, text
from connectlink.emulator import faults
from connectlink.emulator.clocks import KnownClocks
from connectlink.emulator.records import FaultRule, JournalEntry
from connectlink.errors import ConnectError, ConnectLinkError
from connectlink.models import AccessToken
from connectlink.oauth import headers
from connectlink.oauth.grants import TokenLifetimes
from connectlink.server.context import Context, json_object
from connectlink.server.observe.logs import REQUEST_ID
from connectlink.server.observe.metrics import error_code
from connectlink.server.protocol import DROP

log = logging.getLogger("connectlink.emulator")
BUSY_TICK, IDLE_TICK = 0.005, 0.05  # seconds between a worker's writes of its journal entries
HEARTBEAT = 0.5  # seconds between a worker's "still here" when it has nothing else to say
ALIVE = 2.0  # a worker not heard from for this long is gone: no reader waits for it
SETTLE_TIMEOUT = 3.0  # how long a reader waits for the workers at most
MAX_PENDING = 50_000  # entries a worker holds while the database does not take them
NO_LIFETIME = TokenLifetimes(0, 0)
# Body fields that carry a secret, journaled as fingerprints; the operations whose answers do.
_SECRET_FIELDS = ("linking_token", "code", "token")
_ISSUING = frozenset({"issue_token", "authorize_instacart_user"})


class Dropped(Response):
    """The ``drop`` fault's answer: none. The connection is closed by the extension that
    ``connectlink serve``'s protocol (``protocol.DROP``) and the in-process emulator's
    transport (``testing.py``) put in the scope; a server without it has no way to drop a
    connection, and the request fails as unexpected (a 500)."""

    def __init__(self) -> None:
        super().__init__(status_code=0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        drop: Callable[[], None] | None = scope.get("extensions", {}).get(DROP)
        if drop is None:
            raise ConnectionResetError("dropped by the emulator's drop fault")
        drop()


class Controls:
    """One worker's side of the emulator's controls: the seam's fault rules and clocks as it
    last read them, and the journal entries it holds until its next batch."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        # client pk -> client_id: a client's id never changes, so every worker may keep them.
        self._client_ids: dict[int, str | None] = {}
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.pending: list[JournalEntry] = []  # answered, not yet written
        self.dropped = 0  # entries the database refused for what they held: lost, and counted
        self._writing = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        self._seen, self._beat, self._warned = -1, 0.0, 0.0
        self.rules: dict[str, list[FaultRule]] = {}  # live rules by endpoint, as last read

    # the journal's writer ---------------------------------------------------------------------
    async def start(self) -> None:
        """Read the controls and say so before the first request: a reader that raises the
        barrier from now on waits for this worker too."""
        await self._tick()
        self._writer = asyncio.create_task(self._write_on(), name="connectlink-journal")

    async def _reload(self) -> None:
        """Read every retailer's clock and every live fault rule again (see ``_tick``)."""
        clocks = self.ctx.clocks
        assert isinstance(clocks, KnownClocks)
        clocks.settings = await self.ctx.db.all_clocks()
        self._client_ids = {}  # a reset or a restore may have given a pk to another client
        rules: dict[str, list[FaultRule]] = {}
        for rule in await self.ctx.db.live_faults():
            rules.setdefault(rule.endpoint, []).append(rule)
        self.rules = rules

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        try:
            await self._write()
            await self.ctx.db.worker_gone(self.worker)
        except Exception:
            log.warning("%d journal entries not written at shutdown", len(self.pending))

    async def _write_on(self) -> None:
        while True:
            await asyncio.sleep(BUSY_TICK if self.pending else IDLE_TICK)
            try:
                await self._tick()
            except Exception:  # the database is away: hold on to the entries, say so
                del self.pending[:-MAX_PENDING]
                if time.monotonic() - self._warned > 60:
                    self._warned = time.monotonic()
                    log.warning("journal entries not written (the database did not take "
                                "them); %d held", len(self.pending), exc_info=True)

    async def _tick(self) -> None:
        """Look at the barrier, then write what is held: so that everything held when the
        barrier was seen is written before the worker says it has reached it. A barrier that
        moved may follow a change of the controls (``settle`` after a clock is moved or a rule
        added): the clocks and rules are read again before the worker says it has seen it."""
        barrier = await self.ctx.db.barrier()
        if barrier != self._seen:
            await self._reload()
        await self._write()
        now = time.time()  # the real time: heartbeats are no retailer's
        if barrier != self._seen or now - self._beat >= HEARTBEAT:
            await self.ctx.db.worker_seen(self.worker, barrier, now)
            self._seen, self._beat = barrier, now

    async def _write(self) -> None:
        # One write at a time (the writer task's and a reader's ``settle``), so that entries
        # are stored in the order they were answered, a refused batch's included.
        async with self._writing:
            await self._write_held()

    async def _write_held(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        try:
            await self.ctx.db.journal(batch, self.ctx.settings.journal_size)
        except Exception as exc:
            if not self.ctx.db.refuses_values(exc):  # away, or busy: the batch waits for it
                self.pending[:0] = batch
                raise
            await self._write_one_by_one(batch)  # something in it the database never takes
        except BaseException:  # cancelled (the writer stopped): kept for stop()'s last write
            self.pending[:0] = batch
            raise

    async def _write_one_by_one(self, batch: list[JournalEntry]) -> None:
        """Write a refused batch's entries one at a time: those the database takes are
        stored, and only one it refuses again for what it holds is lost, counted
        (``dropped``) and logged; never the journal after it. Any other failure (the
        database gone meanwhile, the writer cancelled) gives the rest back, to wait."""
        for n, entry in enumerate(batch):
            try:
                await self.ctx.db.journal([entry], self.ctx.settings.journal_size)
            except Exception as exc:
                if not self.ctx.db.refuses_values(exc):
                    self.pending[:0] = batch[n:]
                    raise
                self.dropped += 1
                self.ctx.metrics.journal_dropped.inc()
                log.error("journal entry dropped: the database refused it (%s %s, request "
                          "%s); %d dropped so far", entry.method, text.for_log(entry.path),
                          entry.request_id, self.dropped, exc_info=True)
            except BaseException:  # cancelled: the rest waits for stop()'s last write
                self.pending[:0] = batch[n:]
                raise

    async def settle(self) -> None:
        """Return once every request answered before the call, by any live worker, is in the
        journal, and every live worker has read the clocks and rules as they stand (or after
        ``SETTLE_TIMEOUT``, should a worker be too slow to say so)."""
        await self._write()
        barrier = await self.ctx.db.raise_barrier()
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while await self.ctx.db.workers_behind(barrier, time.time() - ALIVE):
            if time.monotonic() > deadline:
                log.warning("a worker has not written out its journal entries in %gs",
                            SETTLE_TIMEOUT)
                return
            await asyncio.sleep(BUSY_TICK)

    # who ------------------------------------------------------------------------------------
    @staticmethod
    def journal_as(request: Request, retailer_id: int, client_id: str | None,
                   bearer: AccessToken | None = None) -> None:
        """Journal this request under the retailer (and client) it was identified as, and the
        bearer token it bore (its stored digest is the SHA-256 the fingerprint is cut from)."""
        credential = bearer.digest[:8].hex() if bearer is not None else None
        request.scope["journal"] = (retailer_id, client_id, credential)

    async def client_id(self, client_pk: int) -> str | None:
        """The id of the client a bearer token was issued to (None if it is gone)."""
        if client_pk not in self._client_ids:
            client = await self.ctx.db.get_client_by_pk(client_pk)
            self._client_ids[client_pk] = client.client_id if client is not None else None
        return self._client_ids[client_pk]

    async def refused_bearer(self, request: Request) -> None:
        """A bearer token that exists but was refused (expired, revoked, the wrong scope):
        the request is journaled under its retailer all the same."""
        value = headers.credentials(request.headers.get("authorization"), "bearer")
        token = await self.ctx.db.get_token(security.digest(value)) if value else None
        if token is not None:
            self.journal_as(request, token.retailer_id, await self.client_id(token.client_pk),
                            token)

    # faults -----------------------------------------------------------------------------------
    async def fault(self, request: Request, endpoint: str, retailer_id: int | None,
                    client_id: str | None, grant_type: str | None = None) -> Response | None:
        """Apply the first rule for this request that fires: its answer in the request's
        place, or None for the request to go on (delayed or changed, if a rule said so)."""
        if retailer_id is None:
            return None
        for rule in self.rules.get(endpoint, ()):
            if not faults.concerns(rule, retailer_id, client_id, grant_type):
                continue
            counted = await self.ctx.db.match_fault(rule.id)
            if counted is None or not faults.fires(counted):
                continue
            if not await self.ctx.db.fire_fault(rule.id):
                continue  # spent by a request in another worker meanwhile
            request.scope["fault"] = rule.fault
            return await self._inflict(request, rule)
        return None

    async def _inflict(self, request: Request, rule: FaultRule) -> Response | None:
        fault = rule.fault
        if fault == "latency":
            await asyncio.sleep(rule.latency_ms / 1000)
        elif fault == "drop":
            return Dropped()
        elif fault == "deny":
            request.scope["decision"] = "deny"
        elif fault == "expired_token":
            request.scope["lifetimes"] = NO_LIFETIME
        else:
            raise _REFUSALS[fault](rule)
        return None

    # the journal ------------------------------------------------------------------------------
    async def journal(self, request: Request, response: Response, started: float) -> None:
        """The request's entry in its retailer's journal, if it was identified as one's: held
        until the writer's next batch (see the module's docstring)."""
        who = request.scope.get("journal")
        if who is None or self.ctx.settings.journal_size == 0:
            return
        retailer_id, client_id, credential = who
        if "fault" in request.scope and "fields" not in request.scope:
            with contextlib.suppress(Exception):  # a fault answered before the body was read:
                await json_object(request)  # its secrets are journaled all the same
        clock = request.scope.get("clock") or await self.ctx.clocks.of(retailer_id)
        error = request.scope.get("error")
        # Every text a request could choose: its path, the client id and field it named.
        path, replaced = text.storable(request.scope["path"])
        error_key = error.key if isinstance(error, ConnectError) else None
        if error_key is not None:
            error_key, changed = text.storable(error_key)
            replaced = replaced or changed
        if client_id is not None:
            client_id, changed = text.storable(client_id)
            replaced = replaced or changed
        self.pending.append(JournalEntry(
            retailer_id=retailer_id, at=clock.now(), method=request.method,
            path=path, operation=request.scope.get("operation"),
            status=response.status_code,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            request_id=REQUEST_ID.get() or "",
            error_code=error_code(error) if isinstance(error, ConnectLinkError) else None,
            error_key=error_key, client_id=client_id, credential=credential,
            secrets=_secrets(request, response), fault=request.scope.get("fault"),
            replaced=replaced,
        ))


def _refusal(cls: type[ConnectLinkError]) -> Callable[[FaultRule], ConnectLinkError]:
    return lambda rule: cls()


_REFUSALS: dict[str, Callable[[FaultRule], ConnectLinkError]] = {
    "429": lambda rule: errors.RateLimited(rule.retry_after),
    "503": lambda rule: errors.ServiceUnavailable(rule.retry_after),
    "500": _refusal(errors.InternalError),
    "invalid_grant": _refusal(errors.InvalidGrant),
    "linking_token_invalid": _refusal(errors.LinkingTokenInvalid),
}


def _secrets(request: Request, response: Response) -> dict[str, str]:
    """Fingerprints of the secrets the request carried (its body's ``linking_token``, ``code``
    or ``token``, as the endpoint read them: ``fields``) and of those its answer gave (a token
    issued, a sandbox consent's code, a code in a redirect)."""
    found: dict[str, str] = {}
    sent = request.scope.get("fields")
    if sent is not None:
        for name in _SECRET_FIELDS:
            value = sent.get(name)
            if isinstance(value, str) and value:
                found[name] = security.fingerprint(value)
    if response.status_code == 200 and request.scope.get("operation") in _ISSUING:
        answered = _json_fields(getattr(response, "body", b""))
        for name in ("access_token", "code"):
            if isinstance(answered.get(name), str):
                found[name] = security.fingerprint(answered[name])
    location = response.headers.get("location")
    if location:
        code = parse_qs(urlsplit(location).query).get("code")
        if code:
            found["code"] = security.fingerprint(code[0])
    return found


def _json_fields(body: Any) -> dict[str, Any]:
    """An answer's top-level fields; nothing if it is no JSON object."""
    if not isinstance(body, bytes) or not body.startswith(b"{"):
        return {}
    try:
        decoded = jsonio.decode(body)
    except jsonio.UnreadableJSON:
        return {}
    return decoded if isinstance(decoded, dict) else {}
