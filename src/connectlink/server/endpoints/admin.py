"""The emulator's admin plane, ``/_connectlink/`` (docs/emulator.md), guarded as decisions.md
"The admin plane" says. Each handler reads its body into the Struct ``emulator/wire.py``
describes and answers another; the state is the store's, so every worker serves the same."""

from __future__ import annotations

import calendar
import hmac
import ipaddress
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response

from connectlink import errors, jsonio, text
from connectlink.emulator import clocks, faults, lifecycle
from connectlink.emulator import records as er
from connectlink.emulator import wire as ew
from connectlink.errors import Invalid
from connectlink.linking.links import iso_utc as iso
from connectlink.models import InstacartAccount
from connectlink.oauth import grants, headers
from connectlink.server.context import Context, context, json_object, read_body
from connectlink.server.render import json_response

Handler = Callable[[Request], Awaitable[Response]]
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]"}
SNAPSHOT_FORMAT: Literal["connectlink-snapshot"] = "connectlink-snapshot"
SNAPSHOT_VERSION = 1
MAX_SNAPSHOT_BYTES = 256 * 1024 * 1024  # a restore's body; every other body has the usual limit
DAY = 86_400


# the guard ------------------------------------------------------------------------------------
def guarded(handler: Handler, write: bool) -> Handler:
    """The admin token, or a loopback peer naming a loopback ``Host`` (no DNS rebinding);
    writes in JSON only (no cross-site form can send one without a preflight). A client
    address whose wrong tokens fill ``Context.admin_failures`` (10 a minute) is answered 429,
    without its token compared, until the oldest leaves the minute."""

    async def admitted(request: Request) -> Response:
        ctx = context(request)
        presented = headers.credentials(request.headers.get("authorization"), "bearer")
        address = request.client.host if request.client else "-"
        if presented is not None:
            wait = ctx.admin_failures.locked_for(address)
            if wait > 0:  # guessing: refused, and the token not even compared
                raise errors.RateLimited(max(1, math.ceil(wait)))
        if not _admitted(request, ctx.settings.admin_token, presented):
            if presented is not None:
                ctx.admin_failures.failed(address)
            raise errors.AdminForbidden()
        if write and request.method == "POST" and _media_type(request) != "application/json":
            raise errors.AdminJsonOnly()
        return await handler(request)

    return admitted


# A request a proxy forwarded: its peer address is the proxy's, or one a header claimed.
_FORWARDED = ("x-forwarded-for", "forwarded", "x-real-ip")


def _admitted(request: Request, admin_token: str | None, presented: str | None) -> bool:
    """The admin token; else the loopback interface, asked for by a loopback name, and not
    through a proxy (whose forwarded address may be anyone's word: uvicorn believes
    ``X-Forwarded-For`` from the proxies ``--forwarded-allow-ips`` names)."""
    if admin_token and presented and hmac.compare_digest(presented.encode(),
                                                         admin_token.encode()):
        return True
    if any(name in request.headers for name in _FORWARDED):
        return False
    peer = request.client.host if request.client else ""
    try:
        loopback = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False
    return loopback and _host_name(request.headers.get("host", "")) in _LOOPBACK_HOSTS


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.partition(":")[0]


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


# times ----------------------------------------------------------------------------------------
LATEST = 253_402_300_799.0  # 9999-12-31T23:59:59Z: the last instant the wire's times can say


def bounded(at: float, key: str) -> float:
    """An instant the wire can write (1970 to 9999), or the key's refusal, before anything
    is stored."""
    if not 0 <= at <= LATEST:
        raise Invalid(key)
    return at


def parse_time(value: str, key: str) -> float:
    try:
        return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        raise Invalid(key) from None


def _int(value: str, key: str) -> int:
    number = text.decimal_id(value)
    if number is None:
        raise Invalid(key)
    return number


async def _retailer_id(ctx: Context, request: Request) -> int:
    retailer_id = text.decimal_id(request.path_params["retailer_id"])
    if retailer_id is not None and await ctx.db.get_retailer(retailer_id) is not None:
        return retailer_id
    raise errors.RetailerNotFound()


def _one_of(change: Any, names: tuple[str, ...]) -> str:
    given = [name for name in names if getattr(change, name) is not None]
    if len(given) != 1:
        raise Invalid(given[1] if len(given) > 1 else None)
    return given[0]


# the clock ------------------------------------------------------------------------------------
def _clock_body(setting: er.ClockSetting, wall: float) -> ew.Clock:
    now = setting.now(wall)
    return ew.Clock(now=iso(now), offset_seconds=round(now - wall, 3),
                    frozen=setting.frozen_at is not None)


async def read_clock(request: Request) -> Response:
    ctx = context(request)
    setting = await ctx.db.get_clock(await _retailer_id(ctx, request))
    return json_response(_clock_body(setting, ctx.clock.now()))


async def move_clock(request: Request) -> Response:
    ctx = context(request)
    retailer_id = await _retailer_id(ctx, request)
    change = ew.read(await json_object(request), ew.ClockChange)
    how = _one_of(change, ("advance_seconds", "set", "freeze", "reset"))
    wall = ctx.clock.now()

    def changed(setting: er.ClockSetting) -> er.ClockSetting:
        if how == "advance_seconds":
            setting = clocks.advanced(setting, change.advance_seconds or 0.0)
        elif how == "set":
            setting = clocks.set_to(setting, wall, parse_time(change.set or "", "set"))
        elif how == "freeze":
            setting = clocks.frozen(setting, wall, bool(change.freeze))
        else:
            setting = er.ClockSetting()
        bounded(setting.now(wall), how)  # refused: the transaction is rolled back
        return setting

    setting = await ctx.db.change_clock(retailer_id, changed)
    if setting is None:
        raise errors.RetailerNotFound()  # gone since
    await _settled(ctx)  # every worker reads it before this answer goes
    return json_response(_clock_body(setting, wall))


# faults ---------------------------------------------------------------------------------------
def _rule_body(rule: er.FaultRule) -> ew.FaultRule:
    return ew.FaultRule(
        id=rule.id, retailer_id=rule.retailer_id, client_id=rule.client_id,
        endpoint=rule.endpoint, fault=rule.fault,
        times=rule.times, every=rule.every, probability=rule.probability, seed=rule.seed,
        retry_after=rule.retry_after, latency_ms=rule.latency_ms, matched=rule.matched,
        fired=rule.fired, created_at=iso(rule.created_at))


async def add_fault(request: Request) -> Response:
    ctx = context(request)
    body = ew.read(await json_object(request), ew.FaultBody)
    if body.retailer_id is None and body.client_id is None:
        raise errors.Blank("retailer_id")
    if body.retailer_id is not None and await ctx.db.get_retailer(body.retailer_id) is None:
        raise errors.RetailerNotFound()
    if body.client_id is not None:
        client = await grants.find_client(ctx.db, body.client_id)
        if client is None or body.retailer_id not in (None, client.retailer_id):
            raise Invalid("client_id")  # no such client, or another retailer's
    if body.endpoint not in ctx.faultable:
        raise Invalid("endpoint")
    if faults.misplaced(body.fault, body.endpoint):
        raise Invalid("fault")
    rule = er.FaultRule(0, body.retailer_id, body.client_id, body.endpoint, body.fault,
                        body.times, body.every, body.probability, body.seed, body.retry_after,
                        body.latency_ms)
    created = await ctx.db.add_fault(rule, ctx.clock.now())
    await _settled(ctx)  # every worker knows the rule before this answer goes
    return json_response(ew.Created(created), 201)


async def list_faults(request: Request) -> Response:
    rules = await context(request).db.list_faults()
    return json_response(ew.Faults([_rule_body(rule) for rule in rules]))


async def delete_fault(request: Request) -> Response:
    ctx = context(request)
    fault_id = text.decimal_id(request.path_params["fault_id"])
    if fault_id is None or not await ctx.db.delete_fault(fault_id):
        raise errors.FaultNotFound()
    await _settled(ctx)
    return json_response(ew.Success())


async def clear_faults(request: Request) -> Response:
    ctx = context(request)
    deleted = await ctx.db.clear_faults()
    await _settled(ctx)
    return json_response(ew.Deleted(deleted=deleted))


# the journal ------------------------------------------------------------------------------------
def _entry_body(entry: er.JournalEntry) -> ew.JournalEntry:
    return ew.JournalEntry(
        id=entry.id, at=iso(entry.at), method=entry.method, path=entry.path,
        operation=entry.operation, status=entry.status, error_code=entry.error_code,
        error_key=entry.error_key, latency_ms=entry.latency_ms, request_id=entry.request_id,
        client_id=entry.client_id, credential=entry.credential, secrets=entry.secrets,
        fault=entry.fault, replaced=entry.replaced)


async def read_journal(request: Request) -> Response:
    ctx = context(request)
    retailer_id = await _retailer_id(ctx, request)
    q = request.query_params
    unknown = set(q) - _JOURNAL_FILTERS
    if unknown:
        raise Invalid(min(unknown))
    for name in ("path", "operation"):
        if name in q and not text.clean(q[name]):
            raise Invalid(name)
    if "limit" in q and _int(q["limit"], "limit") == 0:
        raise Invalid("limit")
    size = ctx.settings.journal_size
    query = er.JournalQuery(
        limit=min(_int(q["limit"], "limit"), size) if "limit" in q else size, keep=size,
        path=q.get("path"), operation=q.get("operation"),
        status=_status(q["status"]) if "status" in q else None,
        since=parse_time(q["since"], "since") if "since" in q else None,
        until=parse_time(q["until"], "until") if "until" in q else None)
    await _settled(ctx)
    entries = await ctx.db.read_journal(retailer_id, query)
    return json_response(ew.Journal([_entry_body(entry) for entry in entries]))


_JOURNAL_FILTERS = frozenset(ew.JournalQuery.__struct_fields__)


def _status(value: str) -> int:
    status = _int(value, "status")
    if not 0 <= status <= 999:
        raise Invalid("status")
    return status


# token lifecycles -------------------------------------------------------------------------------
_USED_BY = {er.LINKING_TOKEN: "link", er.AUTHORIZATION_CODE: "issue_token"}


async def token_lifecycle(request: Request) -> Response:
    ctx = context(request)
    fingerprint = request.path_params["fingerprint"].lower()
    if len(fingerprint) != 16 or not all(c in "0123456789abcdef" for c in fingerprint):
        raise errors.SecretNotFound()
    secret = await ctx.db.find_secret(bytes.fromhex(fingerprint))
    if secret is None:
        raise errors.SecretNotFound()
    limit = ctx.settings.journal_size
    await _settled(ctx)
    if secret.kind == er.ACCESS_TOKEN:
        query = er.JournalQuery(limit=limit, keep=limit, credential=fingerprint)
    else:
        query = er.JournalQuery(limit=limit, keep=limit, secret=fingerprint,
                                operation=_USED_BY[secret.kind])
    uses = await ctx.db.read_journal(secret.retailer_id, query)
    now = (await ctx.clocks.of(secret.retailer_id)).now()
    return json_response(ew.TokenLifecycle(
        fingerprint=fingerprint, kind=secret.kind,
        retailer_id=secret.retailer_id,
        events=[ew.TokenEvent(e.event, iso(e.at), e.request_id)
                for e in lifecycle.events(secret, uses, now)]))


# memberships ------------------------------------------------------------------------------------
async def _account(ctx: Context, request: Request) -> InstacartAccount:
    account_id = text.decimal_id(request.path_params["account_id"])
    account = await ctx.db.get_instacart_account(account_id) if account_id is not None else None
    if account is None:
        raise errors.InstacartUserNotFound()
    return account


async def _now_for(ctx: Context, retailer_id: int | None) -> float:
    if retailer_id is None:
        return ctx.clock.now()
    if await ctx.db.get_retailer(retailer_id) is None:
        raise errors.RetailerNotFound()
    return (await ctx.clocks.of(retailer_id)).now()


def _membership_body(account_id: int, expires_at: float | None, now: float) -> ew.Membership:
    return ew.Membership(account_id, expires_at is not None and expires_at > now,
                         iso(expires_at) if expires_at is not None else None)


async def read_membership(request: Request) -> Response:
    ctx = context(request)
    account = await _account(ctx, request)
    raw = request.query_params.get("retailer_id")
    now = await _now_for(ctx, _int(raw, "retailer_id") if raw is not None else None)
    return json_response(_membership_body(account.id, account.membership_expires_at, now))


async def change_membership(request: Request) -> Response:
    ctx = context(request)
    account = await _account(ctx, request)
    change = ew.read(await json_object(request), ew.MembershipChange)
    how = _one_of(change, ("start_days", "extend_days", "lapse"))
    now = await _now_for(ctx, change.retailer_id)

    def changed(current: float | None) -> float | None:
        if how == "start_days":
            ends = now + (change.start_days or 0) * DAY
        elif how == "extend_days":
            ends = max(current if current is not None else now, now) + (
                change.extend_days or 0) * DAY
        else:
            ends = now  # not a member from this instant on
        return bounded(ends, how)  # refused: the transaction is rolled back

    updated = await ctx.db.change_membership(account.id, changed)
    if updated is None:
        raise errors.InstacartUserNotFound()
    return json_response(_membership_body(account.id, updated.membership_expires_at, now))


# snapshots --------------------------------------------------------------------------------------
async def _settled(ctx: Context) -> None:
    """Every request answered so far in the journal, and every worker reading the clocks and
    rules as they stand (``controls.settle``): before the journal is read or the state taken,
    replaced or emptied, and after a clock or the rules change."""
    if ctx.controls is not None:
        await ctx.controls.settle()


async def snapshot(request: Request) -> Response:
    ctx = context(request)
    await _settled(ctx)
    schema, tables = await ctx.db.snapshot()
    return json_response(ew.Snapshot(format=SNAPSHOT_FORMAT, version=SNAPSHOT_VERSION,
                                     schema=schema, taken_at=iso(ctx.clock.now()),
                                     tables=tables))


async def restore(request: Request) -> Response:
    ctx = context(request)
    try:
        decoded = jsonio.decode(await read_body(request, MAX_SNAPSHOT_BYTES))
    except jsonio.UnreadableJSON:
        raise errors.MalformedJSON() from None
    if not isinstance(decoded, dict):
        raise Invalid("format")
    version, schema = decoded.get("version"), decoded.get("schema")
    current = max(await ctx.db.applied_migrations())
    if decoded.get("format") != SNAPSHOT_FORMAT or version != SNAPSHOT_VERSION or (
            schema != current):
        raise errors.SnapshotMismatch(
            f"This snapshot is {decoded.get('format')!r} version {version!r} of schema "
            f"{schema!r}; this server restores {SNAPSHOT_FORMAT!r} version "
            f"{SNAPSHOT_VERSION} of schema {current}")
    body = ew.read(decoded, ew.Snapshot)
    await _settled(ctx)
    try:
        await ctx.db.restore(body.tables)
    except ValueError:
        raise Invalid("tables") from None
    await _settled(ctx)  # the restored clocks and rules, in every worker
    return json_response(ew.Success())


async def reset(request: Request) -> Response:
    ctx = context(request)
    await _settled(ctx)
    await ctx.db.reset()
    await _settled(ctx)
    return json_response(ew.Success())
