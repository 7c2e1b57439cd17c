"""JSON in and out, in one place: msgspec for speed, and a strict reader for the token endpoints,
where a parameter sent twice is an error (RFC 6749 section 3.2), not "the last one wins"."""

from __future__ import annotations

import json
from typing import Any

import msgspec

encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class UnreadableJSON(ValueError):
    """The bytes are not a JSON document this server will read."""


def decode(body: bytes) -> Any:
    """Any JSON document; in an object sent with a key twice, the last value counts."""
    try:
        return _decode(body)
    # UnicodeDecodeError: older msgspec releases raise it for invalid UTF-8 inside a string.
    # RecursionError: absurdly deep nesting.
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise UnreadableJSON() from None


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise ValueError("a key sent twice")
    return found


def decode_strict(body: bytes) -> Any:
    """``decode``, refusing any object that repeats a key. msgspec checks the document (valid
    UTF-8, no lone surrogate, no NaN) before the standard library reads the pairs msgspec
    cannot give."""
    decode(body)
    try:
        return json.loads(body, object_pairs_hook=_unique)
    except (ValueError, RecursionError):
        raise UnreadableJSON() from None
