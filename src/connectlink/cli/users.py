"""``connectlink users ...``, ``sandbox create-user``, ``links unlink`` and ``audit``: a
retailer's shoppers as an operator sees them, and what customer service does to them."""

from __future__ import annotations

import argparse
from typing import Any

from connectlink.cli import shell
from connectlink.clock import SystemClock
from connectlink.errors import UserNotFound
from connectlink.linking import links, retailers, sandbox
from connectlink.models import InstacartAccount
from connectlink.storage import Store


def register(commands: Any) -> None:
    group = shell.group(commands, "users", "a retailer's Connect users")
    listing = shell.command(group, "list", "a retailer's Connect users and their links, "
                            "oldest first", json_output=True)
    listing.add_argument("--retailer-id", type=shell.count, required=True, help="the retailer's id")
    listing.add_argument("--limit", type=shell.count, default=100, help="show at most this many")
    listing.set_defaults(run=list_users)
    show = shell.command(group, "show", "one Connect user, with its link and Instacart+ state",
                         json_output=True)
    show.add_argument("--retailer-id", type=shell.count, required=True, help="the retailer's id")
    show.add_argument("--user-id", required=True, help="the retailer's own user_id")
    show.set_defaults(run=show_user)

    group = shell.group(commands, "sandbox", "test Instacart accounts, as the sandbox API makes")
    create = shell.command(group, "create-user", "create a test Instacart account (argon2id "
                           "password hash, as the API's sandbox)", json_output=True)
    create.add_argument("--email", required=True, help="its email, unique on this server; "
                        "with --count, numbered as local+N@domain")
    create.add_argument("--phone", required=True, help="its phone number")
    create.add_argument("--password", required=True, help="its password, for the Login pages")
    create.add_argument("--plus", action="store_true", help="an Instacart+ member for a year")
    create.add_argument("--count", type=shell.count,
                        help="create this many, numbered (a JSON array)")
    create.set_defaults(run=create_sandbox_user)

    group = shell.group(commands, "links", "operator actions on links")
    unlink = shell.command(group, "unlink", "unlink a Connect user, as customer service would "
                           "(recorded in the audit trail)", json_output=True)
    unlink.add_argument("--retailer-id", type=shell.count, required=True, help="the retailer's id")
    unlink.add_argument("--user-id", required=True, help="the retailer's own user_id")
    unlink.set_defaults(run=unlink_user)

    audit = shell.command(commands, "audit", "a retailer's audit trail: link, relink, replace, "
                          "unlink and privacy events (--json: one object a line)",
                          json_output=True)
    audit.add_argument("--retailer-id", type=shell.count, required=True, help="the retailer's id")
    audit.set_defaults(run=show_audit)


def account_json(account: InstacartAccount, now: float) -> dict[str, Any]:
    return {"id": account.id, "email": account.email, "phone": account.phone,
            "instacartplus_member": account.member_at(now),
            "membership_expires_at": shell.when(account.membership_expires_at)}


def user_json(view: retailers.UserView, now: float) -> dict[str, Any]:
    user = view.user
    return {
        "user_id": user.user_id, "first_name": user.first_name, "last_name": user.last_name,
        "phone_number": user.phone_number, "locale": user.locale, "active": user.active,
        "state": view.state,
        "instacart_user": account_json(view.account, now) if view.account else None,
    }


def list_users(args: argparse.Namespace) -> int:
    clock = SystemClock()
    found = shell.run(args, lambda store: retailers.users(store, clock, args.retailer_id,
                                                          args.limit))
    now = clock.now()
    if args.json:
        shell.emit_json([user_json(view, now) for view in found])
        return shell.OK
    print(shell.table(
        ["USER_ID", "NAME", "STATE", "INSTACART_USER", "INSTACART+"],
        [(v.user.user_id, " ".join(filter(None, (v.user.first_name, v.user.last_name))),
          v.state, v.account.id if v.account else None, v.member(now)) for v in found],
        empty=f"Retailer {args.retailer_id} has no Connect users yet."))
    return shell.OK


def show_user(args: argparse.Namespace) -> int:
    clock = SystemClock()
    view = shell.run(args, lambda store: retailers.user(store, clock, args.retailer_id,
                                                        args.user_id))
    shown = user_json(view, clock.now())
    if args.json:
        shell.emit_json(shown)
        return shell.OK
    account = shown.pop("instacart_user")
    for key, value in shown.items():
        print(f"{key}: {shell.cell(value)}")
    if account is not None:
        print(f"instacart_user: {account['id']} ({account['email']})\n"
              f"instacartplus_member: {'yes' if account['instacartplus_member'] else 'no'}"
              f" (until {account['membership_expires_at'] or '-'})")
    return shell.OK


def _numbered(email: str, count: int | None) -> list[str]:
    """``a@b.c`` -> ``a+1@b.c``, ``a+2@b.c``...: plus addressing keeps them one inbox."""
    if count is None:
        return [email]
    if count < 1:
        raise shell.Failed(shell.USAGE, "--count must be at least 1")
    local, at, domain = email.rpartition("@")
    return [f"{local}+{n}{at}{domain}" for n in range(1, count + 1)]


def create_sandbox_user(args: argparse.Namespace) -> int:
    clock = SystemClock()
    emails = _numbered(args.email, args.count)

    async def create(store: Store) -> list[InstacartAccount]:
        made = []
        with shell.Progress(args, len(emails), "creating Instacart users") as progress:
            for email in emails:
                made.append(await sandbox.create_account(store, clock, {
                    "email": email, "phone": args.phone, "password": args.password,
                    "instacartplus_member": args.plus}))
                progress.advance()
        return made

    made = shell.run(args, create)
    now = clock.now()
    if args.json:
        shown = [account_json(account, now) for account in made]
        shell.emit_json(shown if args.count is not None else shown[0])
        return shell.OK
    for account in made:
        ends = shell.when(account.membership_expires_at)
        print(f"created Instacart user {account.id}: {account.email} "
              + (f"(Instacart+ until {ends})" if ends else "(no Instacart+)"))
    return shell.OK


def unlink_user(args: argparse.Namespace) -> int:
    """The operator's unlink, as Instacart customer service would do it (decisions.md)."""
    async def unlink(store: Store) -> bool:
        await retailers.find(store, args.retailer_id)
        try:
            return await links.unlink(store, SystemClock(), args.retailer_id, args.user_id)
        except UserNotFound:
            raise retailers.NotFound(
                f"retailer {args.retailer_id} has no user {args.user_id!r}") from None

    unlinked = shell.run(args, unlink)
    if args.json:
        shell.emit_json({"retailer_id": args.retailer_id, "user_id": args.user_id,
                         "unlinked": unlinked})
    else:
        print("unlinked" if unlinked else "not linked: nothing to do")
    return shell.OK


def show_audit(args: argparse.Namespace) -> int:
    async def trail(store: Store) -> list[tuple[float, str, str, int | None]]:
        await retailers.find(store, args.retailer_id)
        return await store.audit_trail(args.retailer_id)

    events = [{"at": shell.when(at), "action": action, "user_id": user_id,
               "instacart_user_id": account_id}
              for at, action, user_id, account_id in shell.run(args, trail)]
    if args.json:
        for event in events:  # one object a line: a trail is read as a stream
            shell.emit_json(event)
    else:
        print(shell.table(["AT", "ACTION", "USER_ID", "INSTACART_USER"],
                          [tuple(event.values()) for event in events],
                          empty=f"Retailer {args.retailer_id} has no audit events yet."))
    return shell.OK
