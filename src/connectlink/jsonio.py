"""JSON in and out, through msgspec, in one place."""

from __future__ import annotations

from typing import Any

import msgspec

encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class UnreadableJSON(ValueError):
    """The bytes are not a JSON document this server will read."""


def decode(body: bytes) -> Any:
    try:
        return _decode(body)
    except (msgspec.DecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        raise UnreadableJSON() from None
