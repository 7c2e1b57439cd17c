"""Signing in to an Instacart account on the Login pages (decisions.md "Login with Instacart").

Throttling, on RFC 6819 section 4.4.1.3 (online guessing), keyed as Auth0's brute-force
protection keys it so that nobody can lock a shopper out by knowing their email: within 15
minutes, 5 failures for one account from one client address lock that account's web login for
that address, 100 failures for one account from all addresses together lock it everywhere (a
distributed guess), and 30 failures from one address lock that address; each lock lasts 15
minutes. The failure that reaches a limit is still answered as a failure; while locked, the
password is not even checked. The counts live in the store, so every worker and host enforces
the same limits.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial

from connectlink import security, text
from connectlink.clock import Clock
from connectlink.errors import IncorrectLogin, LoginLocked
from connectlink.models import InstacartAccount, LoginThrottle
from connectlink.storage.base import Store

MINUTES = 60


@dataclass(frozen=True, slots=True)
class Throttling:
    window: float = 15 * MINUTES
    lock_for: float = 15 * MINUTES
    per_account_and_address: int = 5
    per_account: int = 100
    per_address: int = 30


def normalise_email(email: str) -> str:
    """How emails are stored (``sandbox.create_account``): trimmed, lower case."""
    return email.strip().lower()


@cache
def _password_checks() -> ThreadPoolExecutor:
    """Where argon2 runs: threads (argon2 releases the GIL) on all cores but one, so a burst of
    sign-ins queues here rather than taking the CPU the API's event loop needs."""
    return ThreadPoolExecutor(max(1, (os.cpu_count() or 2) - 1), "argon2")


@cache
def _decoy_hash(test_accounts: bool) -> str:
    """Checked against when no account has the email, so both failures take the same time:
    at the cost the accounts here are hashed at (``test_accounts``: the emulator's sandbox)."""
    return security.hash_password(security.new_secret(), test_account=test_accounts)


async def sign_in(
    store: Store,
    clock: Clock,
    email: str,
    password: str,
    address: str,
    limits: Throttling = Throttling(),
    test_accounts: bool = False,
) -> InstacartAccount:
    """The account these credentials open, or ``IncorrectLogin`` (whichever was wrong), or
    ``LoginLocked`` while the account (from this address, or from everywhere) or the address
    is locked."""
    email = normalise_email(email)
    account = f"account:{security.digest(email).hex()}"  # whatever the text holds
    account_here = f"{account}:address:{address}"
    limit_of = {account_here: limits.per_account_and_address, account: limits.per_account,
                f"address:{address}": limits.per_address}
    now = clock.now()
    locks = [t.locked_until for t in await store.get_login_throttles(list(limit_of))
             if t.locked(now) and t.locked_until is not None]
    if locks:
        raise LoginLocked(max(locks), now)
    # A control character is in no stored email, and PostgreSQL refuses to look one up.
    found = await store.get_instacart_login(email) if text.clean(email) else None
    stored_hash = found[1] if found is not None else _decoy_hash(test_accounts)
    # argon2 takes tens of milliseconds of CPU: off the event loop, so the API keeps answering.
    matches = await asyncio.get_running_loop().run_in_executor(
        _password_checks(), security.verify_password, stored_hash, password
    )
    if found is not None and matches:
        for subject in (account_here, account):
            await store.clear_login_throttle(subject)
        return found[0]
    for subject, limit in limit_of.items():
        throttle = await store.update_login_throttle(
            subject, partial(LoginThrottle.failed, now=now, window=limits.window, limit=limit,
                             lock_for=limits.lock_for),
        )
        if subject == account and found is not None and throttle.locked(now):
            # Locked everywhere, the account's signed-in sessions end too: whoever guessed
            # the password from elsewhere is signed out with the rest.
            await store.end_login_sessions(found[0].id)
    # The failure that reaches a limit is answered as the failure it is; the next attempt is
    # the first one refused unchecked (decisions.md "Login with Instacart").
    raise IncorrectLogin()
