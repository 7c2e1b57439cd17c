"""Connect users (connect-api.md section 7, decisions.md "Connect users" and "User Not Active")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectlink import text, wire
from connectlink.clock import Clock
from connectlink.errors import UserNotActive, UserNotFound, combine
from connectlink.linking import fields
from connectlink.models import ConnectUser, UserFields
from connectlink.storage.base import Store

# connect-api.md section 0: the Accept-Language values Connect knows.
SUPPORTED_LOCALES = frozenset({"en-US", "en-CA", "fr-CA"})
_DOT_SEGMENTS = frozenset({".", ".."})


def capitalise(name: str) -> str:
    """``"john"`` -> ``"John"``, ``"mcDonald"`` -> ``"McDonald"``: only the first letter changes."""
    return name[:1].upper() + name[1:]


def _addressable(user_id: str) -> bool:
    # A user_id travels as one path segment in every later call, and RFC 3986 section 5.2.4
    # removes the dot segments "." and ".." from every path a client builds.
    return "/" not in user_id and user_id not in _DOT_SEGMENTS and text.clean(user_id)


def stored_id(user_id: str) -> str:
    """A path's ``user_id``, if a stored user could have it: one that no user can have (a
    control character, over 255 characters) is not found, and never reaches the store."""
    if not text.identifier(user_id):
        raise UserNotFound()
    return user_id


async def create_or_update(
    store: Store,
    clock: Clock,
    retailer_id: int,
    body: Mapping[str, Any],
    accept_language: str | None = None,
) -> ConnectUser:
    """``POST /v2/fulfillment/users``: create, or update the fields sent if the id exists."""
    reader = fields.FieldReader(body)
    user_id = reader.required("user_id", _addressable)
    first_name = reader.required("first_name", fields.name)
    last_name = reader.optional("last_name", fields.name)
    phone_number = reader.optional("phone_number", fields.e164)
    locale = reader.optional("locale", fields.language_tag)
    error = combine(reader.errors)
    if error is not None:
        raise error
    if locale is None and accept_language in SUPPORTED_LOCALES:
        locale = accept_language  # the body's locale wins over the header (section 0)
    return await store.upsert_connect_user(
        retailer_id,
        UserFields(
            user_id=user_id,
            first_name=capitalise(first_name),
            last_name=capitalise(last_name) if last_name is not None else None,
            phone_number=phone_number,
            locale=locale,
        ),
        clock.now(),
    )


async def find(store: Store, clock: Clock, retailer_id: int, user_id: str) -> ConnectUser:
    """The retailer's user ``user_id``; another retailer's user of that id does not exist here."""
    user = await store.get_connect_user(retailer_id, stored_id(user_id), clock.now())
    if user is None:
        raise UserNotFound()
    return user


async def find_active(store: Store, clock: Clock, retailer_id: int, user_id: str) -> ConnectUser:
    user = await find(store, clock, retailer_id, user_id)
    if not user.active:
        raise UserNotActive()
    return user


def render(user: ConnectUser) -> wire.ConnectUser:
    """The user object; an optional field with no value is left out, never null."""
    return wire.ConnectUser(user.user_id, user.first_name, user.last_name, user.phone_number,
                            user.locale)


async def request_privacy(
    store: Store, clock: Clock, retention: int, retailer_id: int, user_id: str
) -> None:
    """``POST .../privacy_request``: the user stops being active, loses its link now, and is
    purged after ``retention`` seconds. Filing it again changes nothing."""
    user = await find(store, clock, retailer_id, user_id)
    if user.active:
        now = clock.now()
        await store.deactivate_connect_user(user, now, now + retention, "privacy_request")
