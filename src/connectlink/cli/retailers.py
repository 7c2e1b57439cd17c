"""``connectlink retailers ...`` and ``connectlink clients ...``: who may call the API, and
how to get credentials back when they are lost (client ids are listed; a secret, kept only as
its digest, can be replaced but never shown again)."""

from __future__ import annotations

import argparse
from typing import Any

from connectlink.cli import shell
from connectlink.clock import SystemClock
from connectlink.linking import clients, retailers
from connectlink.models import OAuthClient


def register(commands: Any) -> None:
    group = shell.group(commands, "retailers", "retailers: the isolation contexts")
    create = shell.command(group, "create", "create a retailer and its first OAuth client",
                           json_output=True)
    create.add_argument("--name", required=True, help="the name shoppers see on the consent page")
    _client_options(create)
    create.set_defaults(run=create_retailer)
    listing = shell.command(group, "list", "every retailer, its client ids and redirect URIs",
                            json_output=True)
    listing.set_defaults(run=list_retailers)
    show = shell.command(group, "show", "one retailer: its clients, redirect URIs, users and "
                         "links", json_output=True)
    show.add_argument("--retailer-id", type=shell.count, required=True, help="the retailer's id")
    show.set_defaults(run=show_retailer)

    group = shell.group(commands, "clients", "a retailer's OAuth clients")
    create = shell.command(group, "create", "another OAuth client for a retailer",
                           json_output=True)
    create.add_argument("--retailer-id", type=shell.count, required=True, help="the retailer's id")
    _client_options(create)
    create.set_defaults(run=create_client)
    listing = shell.command(group, "list", "OAuth clients, oldest first", json_output=True)
    listing.add_argument("--retailer-id", type=shell.count, help="only this retailer's clients")
    listing.set_defaults(run=list_clients)
    rotate = shell.command(group, "rotate-secret", "give a client a new secret, shown once; "
                           "the old one stops working at once", json_output=True)
    rotate.add_argument("--client-id", required=True, help="the client's client_id")
    rotate.set_defaults(run=rotate_secret)
    add = shell.command(group, "add-redirect-uri", "register another redirect URI on a client",
                        json_output=True)
    add.add_argument("--client-id", required=True, help="the client's client_id")
    add.add_argument("--redirect-uri", required=True, help="an absolute URI, no fragment")
    add.set_defaults(run=add_redirect_uri)


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redirect-uri", action="append", required=True, metavar="URI",
                        help="where shoppers go back after consent; repeat for several")
    parser.add_argument("--require-pkce", action="store_true",
                        help="refuse authorization codes issued without a PKCE challenge")


def client_json(client: OAuthClient) -> dict[str, Any]:
    return {
        "client_id": client.client_id, "retailer_id": client.retailer_id,
        "redirect_uris": list(client.redirect_uris), "require_pkce": client.require_pkce,
        "grants": {grant: sorted(scopes) for grant, scopes in sorted(client.grants.items())},
    }


def _print_credentials(args: argparse.Namespace, created: retailers.NewClient) -> None:
    if args.json:
        shell.emit_json(created.credentials())
        return
    for key, value in created.credentials().items():
        print(f"{key}: {value}")
    print("redirect_uris:", " ".join(created.client.redirect_uris))
    print("Keep the client secret now: only its digest is stored. Lost it? `"
          + shell.hint(f"clients rotate-secret --client-id {created.client.client_id}",
                       shell.database_hint(args)) + "` makes a new one.")


def create_retailer(args: argparse.Namespace) -> int:
    created = shell.run(args, lambda store: retailers.create(
        store, SystemClock(), args.name, args.redirect_uri, args.require_pkce))
    _print_credentials(args, retailers.NewClient(created.client, created.client_secret))
    return shell.OK


def create_client(args: argparse.Namespace) -> int:
    created = shell.run(args, lambda store: clients.create(
        store, SystemClock(), args.retailer_id, args.redirect_uri, args.require_pkce))
    _print_credentials(args, created)
    return shell.OK


def overview_json(overview: retailers.Overview) -> dict[str, Any]:
    retailer = overview.retailer
    return {
        "retailer_id": retailer.id, "name": retailer.name,
        "created_at": shell.when(retailer.created_at), "users": overview.users,
        "links": overview.links, "clients": [client_json(c) for c in overview.clients],
    }


def list_retailers(args: argparse.Namespace) -> int:
    found = shell.run(args, lambda store: retailers.overviews(store, SystemClock()))
    if args.json:
        shell.emit_json([overview_json(o) for o in found])
    else:
        print(shell.table(
            ["RETAILER", "NAME", "USERS", "LINKS", "CLIENT_ID", "REDIRECT_URIS"],
            [(o.retailer.id, o.retailer.name, o.users, o.links, c.client_id,
              " ".join(c.redirect_uris)) for o in found for c in o.clients],
            empty="No retailers yet. `" + shell.hint(
                "retailers create --name NAME --redirect-uri URI", shell.database_hint(args))
            + "` makes one."))
    return shell.OK


def show_retailer(args: argparse.Namespace) -> int:
    found = shell.run(args, lambda store: retailers.overview(store, SystemClock(),
                                                            args.retailer_id))
    if args.json:
        shell.emit_json(overview_json(found))
        return shell.OK
    retailer = found.retailer
    print(f"retailer {retailer.id}: {retailer.name}\ncreated:  {shell.when(retailer.created_at)}"
          f"\nusers:    {found.users} ({found.links} linked)")
    for client in found.clients:
        print(_describe(client))
    print("A lost secret cannot be shown again: `" + shell.hint(
        "clients rotate-secret --client-id CLIENT_ID", shell.database_hint(args))
        + "` gives a client a new one.")
    return shell.OK


def _describe(client: OAuthClient) -> str:
    grants = ", ".join(f"{grant} ({' '.join(sorted(scopes))})"
                       for grant, scopes in sorted(client.grants.items()))
    uris = "\n                 ".join(client.redirect_uris)
    return (f"client {client.client_id}\n  redirect URIs: {uris}\n  grants:        {grants}\n"
            f"  PKCE required: {'yes' if client.require_pkce else 'no'}")


def list_clients(args: argparse.Namespace) -> int:
    found = shell.run(args, lambda store: clients.listed(store, args.retailer_id))
    if args.json:
        shell.emit_json([client_json(c) for c in found])
    else:
        print(shell.table(["CLIENT_ID", "RETAILER", "PKCE", "REDIRECT_URIS"],
                          [(c.client_id, c.retailer_id, c.require_pkce,
                            " ".join(c.redirect_uris)) for c in found],
                          empty="No clients."))
    return shell.OK


def rotate_secret(args: argparse.Namespace) -> int:
    rotated = shell.run(args, lambda store: clients.rotate_secret(store, args.client_id))
    if args.json:
        shell.emit_json(rotated.credentials())
    else:
        print(f"client_id: {rotated.client.client_id}\nclient_secret: {rotated.client_secret}\n"
              "The old secret no longer works. Keep this one now: only its digest is stored.")
    return shell.OK


def add_redirect_uri(args: argparse.Namespace) -> int:
    client, added = shell.run(args, lambda store: clients.add_redirect_uri(
        store, args.client_id, args.redirect_uri))
    if args.json:
        shell.emit_json({**client_json(client), "added": added})
    else:
        print(("registered " if added else "already registered: ") + args.redirect_uri)
        print("redirect_uris:", " ".join(client.redirect_uris))
    return shell.OK
