"""The Python SDK for the Instacart Connect account-linking API, and for ConnectLink.

``ConnectClient`` (blocking, thread-safe) and ``AsyncConnectClient`` (asyncio) speak to
Instacart's production host by default; one argument points them at ConnectLink::

    from connectlink.client import ConnectClient, UserNotLinked

    with ConnectClient(CLIENT_ID, CLIENT_SECRET, "http://127.0.0.1:8080") as connect:
        connect.users.create("shopper-42", "john", "smith")
        try:
            plus = connect.users.get_link("shopper-42").instacartplus_member
        except UserNotLinked:
            plus = False

Resources are named like the docs: ``users`` (create, get, link, get_link, privacy_request),
``oauth`` (exchange_code, revoke), ``sandbox`` (create_instacart_user, authorize), and
``authorize_url`` builds the "Login with Instacart" URL, with ``pkce_pair`` for its PKCE pair.
Bodies decode into the Structs of ``connectlink.wire``, the very types the server encodes.

``emulator`` is ConnectLink's own control plane (docs/emulator.md; the emulator profile only):
``emulator.clock`` (get, advance, set, freeze, unfreeze, reset: a retailer's virtual clock),
``emulator.faults`` (add, list, delete, clear), ``emulator.journal(retailer_id, ...)``,
``emulator.tokens.get`` (a token's lifecycle), ``emulator.memberships`` (get, start, extend,
lapse), ``emulator.snapshot()``, ``restore(snapshot)`` and ``reset()``, decoded into the Structs
of ``connectlink.emulator.wire``. These calls present ``admin_token=`` (by default
``$CONNECTLINK_ADMIN_TOKEN``) if given, else nothing: the server then admits only a loopback
caller that names a loopback host.

The client takes its own ``client_credentials`` token on first use and keeps it until shortly
before it expires; a token the server refuses (401 ``invalid_token``) is replaced once and the
call sent again. Connection failures, 429 and 503 are retried with backoff (``RetryPolicy``;
which calls are retried after what is in ``calls``). Errors are the server's own classes; the
tree is in ``connectlink.client.errors``, and every name in it is importable from here.

Importing this package imports neither the server nor Starlette: only the vocabulary
(``connectlink.errors``), the Structs (``connectlink.wire``), the PKCE core and httpx.
"""

from __future__ import annotations

from connectlink.client.async_client import AsyncConnectClient
from connectlink.client.calls import pkce_pair
from connectlink.client.core import PRODUCTION_URL
from connectlink.client.errors import *  # noqa: F403  (the tree, under the names a retailer uses)
from connectlink.client.errors import __all__ as _error_names
from connectlink.client.retry import RetryPolicy
from connectlink.client.sync_client import ConnectClient

__all__ = [
    "PRODUCTION_URL", "AsyncConnectClient", "ConnectClient", "RetryPolicy", "pkce_pair",
    *_error_names,
]
