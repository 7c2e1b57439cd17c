"""A token's life as the emulator tells it (docs/emulator.md "Token lifecycle"): what the store
holds of it, with the journal's requests that used it."""

from __future__ import annotations

from dataclasses import dataclass

from connectlink.emulator.records import ACCESS_TOKEN, EventName, JournalEntry, StoredSecret


@dataclass(frozen=True, slots=True)
class Event:
    event: EventName
    at: float
    request_id: str | None = None


def events(secret: StoredSecret, uses: list[JournalEntry], now: float) -> list[Event]:
    """In time order. ``uses``: the journal's entries that carried it (any order); ``now``:
    its retailer's time. A linking token or code is used once, when it was consumed (by the
    successful request among ``uses``); an access token at each request that bore it."""
    found = [Event("issued", secret.created_at)]
    if secret.kind == ACCESS_TOKEN:
        found += [Event("used", use.at, use.request_id) for use in uses]
    elif secret.consumed_at is not None:
        by = next((use.request_id for use in sorted(uses, key=lambda u: u.id)
                   if 200 <= use.status < 400), None)
        found.append(Event("used", secret.consumed_at, by))
    if secret.revoked_at is not None:
        found.append(Event("revoked", secret.revoked_at))
    if secret.expires_at <= now:
        found.append(Event("expired", secret.expires_at))
    return sorted(found, key=lambda e: e.at)
