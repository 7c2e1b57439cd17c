"""The one rule for text that comes from a request, and the one way it goes into a log line.

Text is accepted when valid UTF-8 can carry it and it holds no control character
(decisions.md "Text that no field accepts"): nothing in U+0000-U+001F, no U+007F, and no lone
surrogate (which no UTF-8 encodes). PostgreSQL refuses NUL in text outright while SQLite stores
it, so the rule is applied before the store sees a value, and both engines answer alike.
"""

from __future__ import annotations

import re

_UNACCEPTABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
# An identifier this server stores (a Connect user_id, a client_id) is never longer than this.
MAX_IDENTIFIER = 255
LOG_LIMIT = 256


def clean(value: str) -> bool:
    """May ``value`` be stored and echoed? (Valid UTF-8, no control characters.)"""
    return _UNACCEPTABLE.search(value) is None


MAX_ID = 2**63 - 1  # the ids of the store's 64-bit columns
_ID_DIGITS = len(str(MAX_ID))


def decimal_id(value: str) -> int | None:
    """``value`` as an id of a 64-bit column (0 to 2^63 - 1, ASCII decimal digits), or None.
    The length is checked before ``int`` reads it: Python refuses to convert more than 4,300
    digits, and no id needs more than 19."""
    if not (value.isascii() and value.isdigit()) or len(value) > _ID_DIGITS:
        return None
    number = int(value)
    return number if number <= MAX_ID else None


def identifier(value: str) -> bool:
    """Could ``value`` name something this server stores? A path segment or a ``client_id``
    that fails this names nothing, whatever the engine."""
    return 0 < len(value) <= MAX_IDENTIFIER and clean(value)


# In a log line, also what some readers take for a line break: NEL, LINE and PARAGRAPH SEPARATOR.
_UNLOGGABLE = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]")


def for_log(value: str, limit: int = LOG_LIMIT) -> str:
    """``value`` as a log line may carry it: control characters and line separators escaped
    (no forged lines), at most ``limit`` characters of it, and how much was left out."""
    shown = _UNLOGGABLE.sub(lambda found: f"\\x{ord(found.group()):02x}", value[:limit])
    if len(value) > limit:
        shown += f"...[{len(value) - limit} more]"
    return shown


# What no database column of text can hold: NUL (PostgreSQL refuses it) and lone surrogates
# (no UTF-8 carries them, so neither engine's driver can send one).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def storable(value: str) -> tuple[str, bool]:
    """``value`` as a text column can hold it, and whether anything was replaced: each NUL
    and lone surrogate becomes U+FFFD. The journal stores what a request carried, whatever it
    was, and says so when it had to change it."""
    if _UNSTORABLE.search(value) is None:
        return value, False
    return _UNSTORABLE.sub(REPLACEMENT, value), True
