"""Field rules shared by the Connect endpoints (decisions.md "Connect users")."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from connectlink import text
from connectlink.errors import Blank, ConnectError, Invalid

MAX_LENGTH = 255
_FORBIDDEN_IN_NAMES = re.compile(r"[/:<>$%?]")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
# BCP 47 in the shape Connect uses: language, then optional script/region/variant subtags.
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

Rule = Callable[[str], bool]


def name(value: str) -> bool:
    return _FORBIDDEN_IN_NAMES.search(value) is None


def e164(value: str) -> bool:
    return _E164.fullmatch(value) is not None


def language_tag(value: str) -> bool:
    return _LANGUAGE_TAG.fullmatch(value) is not None


def email(value: str) -> bool:
    return _EMAIL.fullmatch(value) is not None


def anything(value: str) -> bool:
    return True


class FieldReader:
    """Reads string fields from a JSON object, collecting one error per bad field in order.
    Every string field follows the one rule for text (``connectlink.text.clean``)."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.body = body
        self.errors: list[ConnectError] = []

    def required(self, key: str, rule: Rule = anything) -> str:
        value = self.optional(key, rule)
        if value is None and not self.errors_for(key):
            self.errors.append(Blank(key))
        return value or ""

    def optional(self, key: str, rule: Rule = anything) -> str | None:
        value = self.body.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if (not isinstance(value, str) or len(value) > MAX_LENGTH or not text.clean(value)
                or not rule(value)):
            self.errors.append(Invalid(key))
            return None
        return value

    def flag(self, key: str) -> bool:
        value = self.body.get(key, False)
        if value is None:
            return False
        if not isinstance(value, bool):
            self.errors.append(Invalid(key))
            return False
        return value

    def errors_for(self, key: str) -> bool:
        """Has ``key`` failed already?"""
        return any(error.key == key for error in self.errors)
