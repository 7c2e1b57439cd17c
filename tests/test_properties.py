"""Property tests for the framework-free core: the text and field rules, PKCE, secrets, JSON
reading, token-request parsing and the error renderer. No server, no database.

Every expectation is computed by an oracle written here (a hand-written check, hashlib and
base64, the standard library's JSON encoder), never by the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import re
import string
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, quote_plus

import jsonschema_rs
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from connectlink import errors, jsonio, security, text
from connectlink.errors import (
    BearerError,
    ConnectError,
    ConnectLinkError,
    InvalidClient,
    InvalidRequest,
    InvalidSandboxUserId,
    MethodNotAllowed,
    MultipleErrors,
    OAuthError,
    QueryParamsForbidden,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    UserNotFound,
)
from connectlink.linking import fields, users
from connectlink.linking.sandbox import parse_account_id
from connectlink.oauth import pkce, requests
from connectlink.server.openapi import document
from connectlink.server.operations import OPERATIONS
from connectlink.server.render import error_response

PROPS = settings(max_examples=150, deadline=None)
MANY = settings(max_examples=300, deadline=None)

# --------------------------------------------------------------------------------------------
# Oracles and strategies

DIGITS = "0123456789"
ASCII_LETTERS = string.ascii_letters
UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
URL_SAFE = frozenset(string.ascii_letters + string.digits + "-_")
FORBIDDEN_IN_NAMES = "/:<>$%?"
MAX_ID = 9_223_372_036_854_775_807


def acceptable(char: str) -> bool:
    """The one rule for a character, by code point: no C0 control, no DEL, no surrogate."""
    point = ord(char)
    return point >= 0x20 and point != 0x7F and not 0xD800 <= point <= 0xDFFF


def is_clean(value: str) -> bool:
    return all(acceptable(char) for char in value)


def is_blank(value: str) -> bool:
    return all(char.isspace() for char in value)


LINE_SEPARATORS = {"\x85", "\u2028", "\u2029"}  # NEL, LINE and PARAGRAPH SEPARATOR


def escaped(value: str) -> str:
    """What a log line should show for ``value``: each unacceptable character, and each line
    separator, as ``\\x`` and its code point in (at least two) lower-case hex digits."""
    return "".join(c if acceptable(c) and c not in LINE_SEPARATORS
                   else "\\x" + format(ord(c), "02x") for c in value)


# Characters that make trouble: controls, DEL, lone surrogates, whitespace, the characters the
# rules single out. ``st.text`` rarely yields surrogates, so hostile text is joined by hand.
HOSTILE_CHARS = st.one_of(
    st.characters(),
    st.characters(categories=("Cs",)),
    st.characters(categories=("Cc",)),
    st.characters(categories=("Nd", "No", "Nl")),
    st.sampled_from("\x00\x1f\x7f\t\n\r\x0b\x0c\x1c \u00a0\u2028\u3000/:<>$%?+@.-_~09aZ"),
)
HOSTILE = st.one_of(st.text(), st.lists(HOSTILE_CHARS, max_size=40).map("".join))
UTF8_TEXT = st.text(alphabet=st.characters(codec="utf-8"))
LONG = st.builds(lambda head, n, tail: head + "x" * n + tail, HOSTILE, st.integers(200, 400),
                 HOSTILE)
ANY_TEXT = st.one_of(HOSTILE, LONG)


# --------------------------------------------------------------------------------------------
# connectlink.text


@MANY
@given(ANY_TEXT)
@example("\x00")
@example("\ud800")
@example("\x7f")
@example("é\u2028😀")
def test_clean_is_the_code_point_rule(value: str) -> None:
    """``clean`` accepts exactly the strings with no U+0000-U+001F, U+007F or lone surrogate."""
    assert text.clean(value) is is_clean(value)


@MANY
@given(ANY_TEXT)
@example("")
@example("x" * 255)
@example("x" * 256)
def test_identifier_is_length_and_clean(value: str) -> None:
    """``identifier`` accepts exactly the clean strings of 1 to 255 characters."""
    assert text.identifier(value) is (1 <= len(value) <= 255 and is_clean(value))


@MANY
@given(ANY_TEXT, st.one_of(st.none(), st.integers(0, 300)))
@example("a\nb" * 200, None)
@example("\ud800\x00", 1)
@example("a\u2028b\x85c\u2029", None)
def test_for_log_escapes_and_truncates(value: str, limit: int | None) -> None:
    """``for_log`` shows the first ``limit`` characters escaped, then ``...[N more]``; its
    output is always clean."""
    shown = text.for_log(value) if limit is None else text.for_log(value, limit)
    cap = 256 if limit is None else limit
    expected = escaped(value[:cap])
    if len(value) > cap:
        expected += f"...[{len(value) - cap} more]"
    assert shown == expected
    assert is_clean(shown)
    assert len(shown.splitlines()) <= 1  # str.splitlines breaks at every line separator


# --------------------------------------------------------------------------------------------
# connectlink.linking.fields


def name_ok(value: str) -> bool:
    return not any(char in FORBIDDEN_IN_NAMES for char in value)


def e164_ok(value: str) -> bool:
    digits = value[1:]
    return (value[:1] == "+" and 2 <= len(digits) <= 15 and all(c in DIGITS for c in digits)
            and digits[0] != "0")


def language_tag_ok(value: str) -> bool:
    first, *rest = value.split("-")
    return (2 <= len(first) <= 3 and all(c in ASCII_LETTERS for c in first)
            and all(2 <= len(part) <= 8 and all(c in ASCII_LETTERS + DIGITS for c in part)
                    for part in rest))


def email_ok(value: str) -> bool:
    if value.count("@") != 1 or any(char.isspace() for char in value):
        return False
    local, domain = value.split("@")
    return bool(local) and "." in domain[1:-1]


@MANY
@given(ANY_TEXT)
@example("O'Brien-Smith Jr.")
@example("a/b")
@example("50%")
def test_name_rule(value: str) -> None:
    """``name`` refuses exactly the values holding one of ``/ : < > $ % ?``."""
    assert fields.name(value) is name_ok(value)


@MANY
@given(st.one_of(ANY_TEXT, st.from_regex(r"\+?[0-9]{0,17}", fullmatch=True),
                 st.from_regex(r"\+\d{1,16}", fullmatch=True),
                 st.from_regex(r"\+[1-9]\d{1,15}", fullmatch=True),
                 st.from_regex(r"\+[0-9]{1,16}\n?", fullmatch=False)))
@example("+14155550100")
@example("+04155550100")
@example("+1")
@example("+1234567890123456")
@example("+١٢٣٤")
@example("+1٢٣٤")
@example("+123\n")
def test_e164_rule(value: str) -> None:
    """``e164`` accepts exactly ``+``, then 2 to 15 ASCII digits, the first not 0."""
    assert fields.e164(value) is e164_ok(value)


@MANY
@given(st.one_of(ANY_TEXT, st.from_regex(r"[A-Za-z]{1,4}(-[A-Za-z0-9]{1,9}){0,3}-?",
                                         fullmatch=True),
                 st.from_regex(r"\w{2,3}(-\w{2,8}){0,2}", fullmatch=True),
                 st.from_regex(r"[A-Za-z]{2,3}(-\w{1,9}){1,2}", fullmatch=True)))
@example("en-US")
@example("zh-Hant-TW")
@example("en-")
@example("en-\u00c9\u00c9")
@example("en-__")
@example("en\n")
@example("éé")
def test_language_tag_rule(value: str) -> None:
    """``language_tag`` accepts 2-3 ASCII letters, then any number of ``-`` and 2-8 ASCII
    letters or digits."""
    assert fields.language_tag(value) is language_tag_ok(value)


@MANY
@given(st.one_of(ANY_TEXT, st.from_regex(r"[^@]{0,4}@[^@]{0,4}(\.[^@]{0,3})?", fullmatch=True),
                 st.from_regex(r"[a-z.]{0,4}@?[a-z.]{0,4}@?[a-z.]{0,3}", fullmatch=True)))
@example("a@b.c")
@example("a@.bc")
@example("a@bc.")
@example("a b@c.d")
@example("a@b.c\u3000")
@example("a@b@c.d")
def test_email_rule(value: str) -> None:
    """``email`` accepts one ``@`` with text before it, a dot inside the domain, no space."""
    assert fields.email(value) is email_ok(value)


RULES: dict[str, tuple[fields.Rule, Callable[[str], bool]]] = {
    "anything": (fields.anything, lambda value: True),
    "name": (fields.name, name_ok),
    "e164": (fields.e164, e164_ok),
    "language_tag": (fields.language_tag, language_tag_ok),
    "email": (fields.email, email_ok),
}
MISSING = object()
FIELD_VALUES = st.one_of(
    st.just(MISSING), st.none(), ANY_TEXT, st.sampled_from(["", " ", "\t\n", "\x1c\x1f", "\u3000"]),
    st.from_regex(r"\+[1-9][0-9]{1,14}", fullmatch=True), st.just("en-CA"), st.just("a@b.co"),
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.integers(250, 300).map(lambda n: "y" * n), st.integers(250, 300).map(lambda n: " " * n),
)
FIELD_SPECS = st.lists(
    st.tuples(st.sampled_from(["required", "optional", "flag"]), st.sampled_from(sorted(RULES)),
              FIELD_VALUES),
    max_size=8,
)


def expected_field(mode: str, check: Callable[[str], bool], value: object,
                   ) -> tuple[object, type[ConnectError] | None]:
    """What reading one field should give back, and the error (class) it should record."""
    if mode == "flag":
        if value is MISSING or value is None:
            return False, None
        return (value, None) if isinstance(value, bool) else (False, errors.Invalid)
    nothing: object = "" if mode == "required" else None
    if value is MISSING or value is None or (isinstance(value, str) and is_blank(value)):
        return nothing, errors.Blank if mode == "required" else None
    if (not isinstance(value, str) or len(value) > 255 or not is_clean(value)
            or not check(value)):
        return nothing, errors.Invalid
    return value, None


@MANY
@given(FIELD_SPECS)
def test_field_reader_one_error_per_field_in_order(
    specs: list[tuple[str, str, object]],
) -> None:
    """``FieldReader`` returns each good value as sent and records exactly one error per bad
    field, in reading order: ``Blank`` for a missing/null/blank required field, ``Invalid``
    for a non-string, over-255, unclean or rule-breaking value (or a non-boolean flag)."""
    body = {f"field{i}": value for i, (_, _, value) in enumerate(specs) if value is not MISSING}
    reader = fields.FieldReader(body)
    expected_errors: list[tuple[type[ConnectError], str]] = []
    for i, (mode, rule_name, value) in enumerate(specs):
        key = f"field{i}"
        rule, check = RULES[rule_name]
        if mode == "flag":
            got: object = reader.flag(key)
        elif mode == "required":
            got = reader.required(key, rule)
        else:
            got = reader.optional(key, rule)
        want, error = expected_field(mode, check, value)
        assert got == want and type(got) is type(want), (key, mode, rule_name, value)
        if error is not None:
            expected_errors.append((error, key))
    assert [(type(e), e.key) for e in reader.errors] == expected_errors


# --------------------------------------------------------------------------------------------
# connectlink.linking.users


@MANY
@given(ANY_TEXT)
@example("mcDonald")
@example("ßarbara")
@example("ﬃon")
@example("")
def test_capitalise_changes_only_the_first_letter(name: str) -> None:
    """``capitalise`` upper-cases the first character and leaves every other one as it was."""
    result = users.capitalise(name)
    if not name:
        assert result == ""
        return
    head = name[0].upper()
    assert result.startswith(head)
    assert result[len(head):] == name[1:]


@MANY
@given(st.text(alphabet=string.printable))
def test_capitalise_ascii(name: str) -> None:
    """On ASCII, ``capitalise`` maps a leading a-z to A-Z and changes nothing else."""
    result = users.capitalise(name)
    assert len(result) == len(name)
    if name:
        first = name[0]
        assert result[0] == (chr(ord(first) - 32) if "a" <= first <= "z" else first)
        assert result[1:] == name[1:]


@MANY
@given(ANY_TEXT)
@example("")
@example("u" * 255)
@example("u" * 256)
@example("u\x00")
def test_stored_id_refuses_what_no_user_can_have(user_id: str) -> None:
    """``stored_id`` returns the id when it has 1-255 clean characters, else UserNotFound."""
    if 1 <= len(user_id) <= 255 and is_clean(user_id):
        assert users.stored_id(user_id) == user_id
    else:
        with pytest.raises(UserNotFound):
            users.stored_id(user_id)


@MANY
@given(ANY_TEXT)
@example("a/b")
@example("a\udc80")
@example(".")
@example("..")
def test_addressable_user_ids(user_id: str) -> None:
    """A user_id is addressable when it is clean, holds no ``/`` and is no dot segment."""
    assert users._addressable(user_id) is ("/" not in user_id and is_clean(user_id)
                                           and user_id not in {".", ".."})


# --------------------------------------------------------------------------------------------
# connectlink.linking.sandbox.parse_account_id


def expected_account_id(raw: str) -> int | None:
    if not 1 <= len(raw) <= 19 or not all(char in DIGITS for char in raw):
        return None
    value = 0
    for char in raw:
        value = value * 10 + DIGITS.index(char)
    return value if value <= MAX_ID else None


ACCOUNT_IDS = st.one_of(
    ANY_TEXT,
    st.from_regex(r"[0-9]{1,19}", fullmatch=True),
    st.from_regex(r"[0-9]{18,21}", fullmatch=True),
    st.integers(0, MAX_ID).map(str),
    st.integers(0, MAX_ID).map(lambda n: str(n).zfill(19)),
    st.integers(MAX_ID + 1, 10**19 - 1).map(str),
    st.integers(-(10**20), -1).map(str),
    st.builds(lambda head, n: head + "7" * n, st.from_regex(r"[0-9]{0,5}", fullmatch=True),
              st.integers(15, 6000)),
    st.text(alphabet=st.characters(categories=("Nd", "No", "Nl")), min_size=1, max_size=25),
    st.builds(lambda n, sep: f"{n}{sep}", st.integers(0, 99), st.sampled_from(" \n\t+_.-")),
)


@MANY
@given(ACCOUNT_IDS)
@example("0")
@example("9223372036854775807")
@example("9223372036854775808")
@example("0000000000000000001")
@example("00000000000000000001")
@example("1" * 5000)
@example("١٢٣")
@example("\uff11\uff12\uff13")
@example("²")
@example("1_000")
@example(" 1")
@example("+1")
@example("")
def test_parse_account_id(raw: str) -> None:
    """``parse_account_id`` returns the int of 1-19 ASCII digits worth at most 2**63-1; any
    other string raises InvalidSandboxUserId and nothing else."""
    want = expected_account_id(raw)
    if want is None:
        with pytest.raises(InvalidSandboxUserId):
            parse_account_id(raw)
    else:
        got = parse_account_id(raw)
        assert type(got) is int and got == want


# --------------------------------------------------------------------------------------------
# connectlink.oauth.pkce (RFC 7636)

VERIFIERS = st.from_regex(r"[A-Za-z0-9\-._~]{43,128}", fullmatch=True)
NOT_VERIFIERS = st.one_of(
    ANY_TEXT,
    st.from_regex(r"[A-Za-z0-9\-._~]{0,42}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9\-._~]{40,42}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9\-._~]{129,131}", fullmatch=True),
    st.builds(lambda v, i, c: v[:i] + c + v[i + 1:], VERIFIERS, st.integers(0, 42),
              st.sampled_from("+/= \x00\u00e9\ud800%!")),
)


def s256_oracle(verifier: str) -> str:
    """BASE64URL(SHA256(ASCII(verifier))), no padding, built from standard base64."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii").translate(str.maketrans("+/", "-_")).rstrip("=")


def test_pkce_rfc7636_appendix_b() -> None:
    """RFC 7636 Appendix B: the example verifier gives the example S256 challenge."""
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert pkce.s256(verifier) == challenge
    assert pkce.verify(verifier, challenge, "S256")
    assert not pkce.verify(verifier, challenge, "plain")
    assert pkce.verify(verifier, verifier, "plain")


@PROPS
@given(st.one_of(VERIFIERS, NOT_VERIFIERS))
@example("a" * 42)
@example("a" * 43)
@example("~" * 128)
@example("a" * 129)
@example("a" * 42 + "\n")
def test_pkce_well_formed(value: str) -> None:
    """``well_formed`` accepts exactly 43-128 characters of ``A-Z a-z 0-9 - . _ ~``."""
    assert pkce.well_formed(value) is (43 <= len(value) <= 128
                                       and all(c in UNRESERVED for c in value))


@PROPS
@given(VERIFIERS)
def test_pkce_s256_matches_hashlib(verifier: str) -> None:
    """``s256`` is unpadded base64url of SHA-256: 43 URL-safe characters, as hashlib says."""
    challenge = pkce.s256(verifier)
    assert challenge == s256_oracle(verifier)
    assert len(challenge) == 43 and set(challenge) <= URL_SAFE


@PROPS
@given(VERIFIERS, VERIFIERS)
def test_pkce_verify_round_trip(verifier: str, other: str) -> None:
    """A well-formed verifier answers its own challenge (S256 and plain); another does not,
    and an S256 challenge is no plain one."""
    challenge = s256_oracle(verifier)
    assert pkce.verify(verifier, challenge, "S256")
    assert pkce.verify(verifier, verifier, "plain")
    assert not pkce.verify(verifier, challenge, "plain")
    if other != verifier:
        assert not pkce.verify(other, challenge, "S256")
        assert not pkce.verify(other, verifier, "plain")


@PROPS
@given(NOT_VERIFIERS, st.one_of(VERIFIERS, VERIFIERS.map(s256_oracle)),
       st.sampled_from(["S256", "plain"]))
def test_pkce_malformed_verifier_never_verifies(
    verifier: str, challenge: str, method: str
) -> None:
    """A malformed (or absent) verifier never verifies, and never raises, whatever it holds."""
    assume(not (43 <= len(verifier) <= 128 and all(c in UNRESERVED for c in verifier)))
    assert pkce.verify(verifier, challenge, method) is False
    assert pkce.verify(None, challenge, method) is False


# --------------------------------------------------------------------------------------------
# connectlink.security

SECRET_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")


def test_new_secret_shape() -> None:
    """``new_secret`` gives 43 URL-safe characters carrying 32 bytes, never the same twice,
    and never one a command line would take for an option."""
    made = [security.new_secret() for _ in range(5000)]  # a leading "-" is 1 in 64 otherwise
    for secret in made:
        assert SECRET_SHAPE.fullmatch(secret), secret
        assert not secret.startswith("-"), secret
        assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert len(set(made)) == len(made)


@PROPS
@given(UTF8_TEXT)
def test_digest_is_sha256_of_utf8(value: str) -> None:
    """``digest`` is the SHA-256 of the UTF-8 bytes, and ``matches`` accepts it."""
    stored = security.digest(value)
    assert stored == hashlib.sha256(value.encode("utf-8")).digest()
    assert security.matches(value, stored)


@PROPS
@given(ANY_TEXT, ANY_TEXT)
@example("\ud83d\ude00", "😀")
@example("\ud800", "\udc00")
def test_matches_only_the_same_value(value: str, other: str) -> None:
    """``matches`` is True for the value digested and False for any other string (surrogates
    included, and a surrogate pair is not the character it spells)."""
    stored = security.digest(value)
    assert len(stored) == 32
    assert security.matches(value, stored)
    if other != value:
        assert not security.matches(other, stored)


# --------------------------------------------------------------------------------------------
# connectlink.jsonio

JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda kids: st.one_of(st.lists(kids, max_size=4),
                           st.dictionaries(st.text(max_size=6), kids, max_size=4)),
    max_leaves=25,
)
KEYS = st.one_of(st.sampled_from(["a", "b", "client_id", "", "é", "😀", "a\nb"]),
                 st.text(max_size=3))

# A document tree, so that an object may repeat a key: ("leaf", value), ("array", [tree]) or
# ("object", [(key, tree, escape_key)]).
Tree = tuple[str, Any]
TREES: st.SearchStrategy[Tree] = st.recursive(
    JSON_LEAVES.map(lambda value: ("leaf", value)),
    lambda kids: st.one_of(
        st.lists(kids, max_size=4).map(lambda items: ("array", items)),
        st.lists(st.tuples(KEYS, kids, st.booleans()), max_size=4).map(
            lambda pairs: ("object", pairs)),
    ),
    max_leaves=20,
)


def escape_every_character(key: str) -> str:
    """A JSON string literal of ``key`` with every character as a ``\\u`` escape."""
    out = []
    for char in key:
        point = ord(char)
        if point < 0x10000:
            out.append(f"\\u{point:04x}")
        else:
            point -= 0x10000
            out.append(f"\\u{0xD800 + (point >> 10):04x}\\u{0xDC00 + (point & 0x3FF):04x}")
    return '"' + "".join(out) + '"'


def dump_tree(tree: Tree, gap: str) -> str:
    kind, content = tree
    if kind == "leaf":
        return json.dumps(content)
    if kind == "array":
        return "[" + f",{gap}".join(dump_tree(item, gap) for item in content) + "]"
    return "{" + f",{gap}".join(
        f"{escape_every_character(key) if escape else json.dumps(key, ensure_ascii=False)}"
        f"{gap}:{gap}{dump_tree(item, gap)}"
        for key, item, escape in content
    ) + "}"


def tree_value(tree: Tree) -> Any:
    """The value a reader where the last key wins should give."""
    kind, content = tree
    if kind == "leaf":
        return content
    if kind == "array":
        return [tree_value(item) for item in content]
    value: dict[str, Any] = {}
    for key, item, _ in content:
        value[key] = tree_value(item)
    return value


def repeats_a_key(tree: Tree) -> bool:
    kind, content = tree
    if kind == "leaf":
        return False
    if kind == "array":
        return any(repeats_a_key(item) for item in content)
    keys = [key for key, _, _ in content]
    return len(set(keys)) != len(keys) or any(repeats_a_key(item) for _, item, _ in content)


def read(reader: Callable[[bytes], Any], body: bytes) -> tuple[bool, Any]:
    """(True, value) or (False, None) when the reader says UnreadableJSON; anything else
    escapes and fails the test."""
    try:
        return True, reader(body)
    except jsonio.UnreadableJSON:
        return False, None


@PROPS
@given(JSON_VALUES, st.booleans())
def test_json_round_trip(value: Any, ascii_only: bool) -> None:
    """What ``json.dumps`` writes, ``decode`` and ``decode_strict`` read back unchanged."""
    body = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    assert jsonio.decode(body) == value
    assert jsonio.decode_strict(body) == value


@MANY
@given(TREES, st.sampled_from(["", " ", "\n\t", "\r\n  "]))
@example(("object", [("a", ("leaf", 1), False), ("a", ("leaf", 2), False)]), "")
@example(("object", [("x", ("object", [("a", ("leaf", 1), False),
                                        ("a", ("leaf", 1), True)]), False)]), "")
@example(("array", [("object", [("k", ("leaf", None), True), ("k", ("leaf", None), False)])]),
         " ")
def test_decode_strict_refuses_repeated_keys(tree: Tree, gap: str) -> None:
    """``decode`` reads any document (the last repeated key wins); ``decode_strict`` refuses a
    document with a key twice in any object, at any depth, however the key is escaped, and
    otherwise reads the same value."""
    body = dump_tree(tree, gap).encode("utf-8")
    expected = tree_value(tree)
    assert jsonio.decode(body) == expected
    if repeats_a_key(tree):
        with pytest.raises(jsonio.UnreadableJSON):
            jsonio.decode_strict(body)
    else:
        assert jsonio.decode_strict(body) == expected


def mutate(body: bytes, at: int, cut: int, insert: bytes) -> bytes:
    at %= len(body) + 1
    return body[:at] + insert + body[at + cut:]


ANY_BYTES = st.one_of(
    st.binary(max_size=200),
    st.builds(mutate, TREES.map(lambda tree: dump_tree(tree, "").encode("utf-8")),
              st.integers(0, 10_000), st.integers(0, 3),
              st.one_of(st.binary(max_size=3),
                        st.sampled_from([b'"', b"\\", b"\\ud800", b"\x00", b"\xff", b"{", b"]",
                                         b",", b"NaN", b"1e999", b"9" * 5000, b"\xed\xa0\x80"]))),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
)


@MANY
@given(ANY_BYTES)
@example(b"")
@example(b"\xef\xbb\xbf{}")
@example(b"NaN")
@example(b"[1e400]")
@example(b'"\\ud800"')
@example(b"1" * 5000)
@example(b"\xff\xfe{\x00}\x00")
@example(b"[" * 100_000)
def test_decoders_read_or_refuse_any_bytes(body: bytes) -> None:
    """For any bytes, both readers return a value or raise UnreadableJSON, nothing else; what
    ``decode`` refuses ``decode_strict`` refuses, and what ``decode_strict`` reads ``decode``
    reads alike."""
    read_loose, loose = read(jsonio.decode, body)
    read_strict, strict = read(jsonio.decode_strict, body)
    if not read_loose:
        assert not read_strict
    if read_strict:
        assert read_loose and strict == loose


@pytest.mark.parametrize("duplicated", [
    b'{"a": 1, "a": 1}',
    b'{"a": 1, "\\u0061": 2}',
    b'{"x": {"a": 1, "a": 2}}',
    b'[0, {"k": [{"a": null, "b": null, "a": null}]}]',
])
def test_decode_strict_examples(duplicated: bytes) -> None:
    """Hand-written repeated keys, top level and nested: ``decode`` reads, strict refuses."""
    assert read(jsonio.decode, duplicated)[0]
    with pytest.raises(jsonio.UnreadableJSON):
        jsonio.decode_strict(duplicated)


def test_decoders_agree_on_nesting_depth() -> None:
    """Both readers read nesting a real body has (up to 400 deep); beyond the recursion limit
    both refuse, and strict never reads what ``decode`` refuses."""
    for depth in range(1, 1300):
        for body in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"0" + b"}" * depth):
            read_loose, _ = read(jsonio.decode, body)
            read_strict, _ = read(jsonio.decode_strict, body)
            if depth <= 400:
                assert read_loose and read_strict, depth
            assert read_loose or not read_strict, depth
    assert not read(jsonio.decode, b"[" * 1300 + b"]" * 1300)[0]


# --------------------------------------------------------------------------------------------
# connectlink.oauth.requests.parse

CONTENT_TYPES = st.sampled_from([
    "application/json", "application/json; charset=utf-8", "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=UTF-8", "text/plain", "",
])
QUERY_KEYS = st.lists(st.sampled_from(["grant_type", "scope", "code", "x", "client_id",
                                       "client_secret"]), max_size=4)
NO_CREDENTIAL_QUERY = st.lists(st.sampled_from(["grant_type", "scope", "code", "x"]), max_size=3)
B64 = st.binary(max_size=60).map(lambda raw: base64.b64encode(raw).decode("ascii"))
AUTHORIZATIONS = st.one_of(
    st.none(),
    ANY_TEXT,
    st.builds(lambda scheme, value: f"{scheme} {value}",
              st.sampled_from(["Basic", "basic", "BASIC", "Bearer", "Digest", ""]),
              st.one_of(B64, ANY_TEXT, B64.map(lambda v: v + "="), B64.map(lambda v: v[:-1]))),
    st.builds(lambda cid, secret: "Basic " + base64.b64encode(
        f"{cid}:{secret}".encode("utf-8", "surrogatepass")).decode("ascii"), ANY_TEXT, ANY_TEXT),
    st.sampled_from(["Basic", "Basic ", "Basic Og==", "Basic YTo=", "Basic OmI=", "Basic \u00e9",
                     "Basic YTpi\ud800", "Basic /w==", "Basic _-_-"]),
)
FORM_BODIES = st.lists(st.tuples(st.sampled_from(["grant_type", "client_id", "client_secret",
                                                  "code", "%ZZ", "a+b", "", "%ff"]),
                                 st.sampled_from(["", "x", "%", "%e9", "%C3%A9", "a=b", "+"])),
                       max_size=5).map(
    lambda pairs: "&".join(f"{n}={v}" for n, v in pairs).encode("ascii"))
TOKEN_BODIES = st.one_of(
    st.binary(max_size=200),
    FORM_BODIES,
    JSON_VALUES.map(lambda value: json.dumps(value).encode("utf-8")),
    TREES.map(lambda tree: dump_tree(tree, " ").encode("utf-8")),
    st.dictionaries(st.sampled_from(["grant_type", "client_id", "client_secret", "scope"]),
                    st.one_of(st.none(), UTF8_TEXT, st.integers()), max_size=4).map(
        lambda params: json.dumps(params).encode("utf-8")),
)


def parse(query: list[str], content_type: str, body: bytes,
          authorization: str | None) -> requests.TokenRequest | OAuthError:
    """``requests.parse``'s answer, or the OAuth error it raised; anything else escapes."""
    try:
        return requests.parse(query, content_type, body, authorization)
    except (InvalidRequest, InvalidClient, QueryParamsForbidden) as error:
        return error


@MANY
@given(QUERY_KEYS, CONTENT_TYPES, TOKEN_BODIES, AUTHORIZATIONS)
@example([], "application/json", b"\xff", "Basic \u00e9")
@example([], "text/plain", b" {\"a\": 1, \"a\": 2}", None)
@example([], "application/x-www-form-urlencoded", b"a=%ZZ&&", "Basic YTpi\ud800")
@example([], "", b"[" * 3000, "Basic")
def test_parse_only_raises_oauth_errors(
    query: list[str], content_type: str, body: bytes, authorization: str | None
) -> None:
    """For any body, content type and Authorization header, ``parse`` returns a TokenRequest
    or raises InvalidRequest, InvalidClient or QueryParamsForbidden (first, when the query
    carries credentials); the parameters it returns are strings."""
    result = parse(query, content_type, body, authorization)
    if {"client_id", "client_secret"} & set(query):
        assert isinstance(result, QueryParamsForbidden)
    elif isinstance(result, requests.TokenRequest):
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.params.items())
        if result.credentials is not None:
            assert result.credentials.client_id and result.credentials.client_secret
    else:
        assert not isinstance(result, QueryParamsForbidden)


def encode_form_part(value: str, how: int) -> str:
    """Three spellings of one form-urlencoded name or value."""
    if how == 0:
        return quote_plus(value)
    if how == 1:
        return quote(value, safe="")
    return "".join(f"%{byte:02X}" for byte in value.encode("utf-8"))


def form_body(pairs: list[tuple[str, str, int]]) -> bytes:
    return "&".join(f"{encode_form_part(name, how)}={encode_form_part(value, (how + 1) % 3)}"
                    for name, value, how in pairs).encode("ascii")


FORM_NAMES = st.one_of(st.sampled_from(["grant_type", "client_id", "client_secret", "scope"]),
                       UTF8_TEXT.filter(bool))
FORM_PAIRS = st.lists(st.tuples(FORM_NAMES, UTF8_TEXT, st.integers(0, 2)), min_size=1,
                      max_size=6)
FORM_TYPES = st.sampled_from(["application/x-www-form-urlencoded", "text/plain", ""])


@PROPS
@given(FORM_PAIRS, st.data(), FORM_TYPES, NO_CREDENTIAL_QUERY)
def test_parse_repeated_form_parameter(
    pairs: list[tuple[str, str, int]], data: st.DataObject, content_type: str, query: list[str]
) -> None:
    """A form body naming one parameter twice (however it is percent-encoded) raises
    InvalidRequest; one naming each once gives back exactly the parameters sent."""
    names = [name for name, _, _ in pairs]
    if len(set(names)) == len(names):
        result = parse(query, content_type, form_body(pairs), None)
        assert isinstance(result, requests.TokenRequest)
        assert dict(result.params) == {name: value for name, value, _ in pairs}
        sent = dict(result.params)
        if sent.get("client_id") and sent.get("client_secret"):
            assert result.credentials == requests.ClientCredentials(
                sent["client_id"], sent["client_secret"], via_basic=False)
        else:
            assert result.credentials is None
        name = names[data.draw(st.integers(0, len(names) - 1), label="repeat")]
        pairs = [*pairs, (name, data.draw(UTF8_TEXT, label="value"),
                          data.draw(st.integers(0, 2), label="spelling"))]
        pairs = data.draw(st.permutations(pairs), label="order")
    result = parse(query, content_type, form_body(pairs), None)
    assert isinstance(result, InvalidRequest)


@PROPS
@given(st.lists(st.tuples(KEYS, st.one_of(st.none(), UTF8_TEXT), st.booleans()), min_size=1,
                max_size=5),
       st.data(), st.sampled_from(["application/json", "text/plain", ""]))
def test_parse_repeated_json_key(
    members: list[tuple[str, str | None, bool]], data: st.DataObject, content_type: str
) -> None:
    """A JSON body with a key twice (however it is escaped) raises InvalidRequest."""
    i = data.draw(st.integers(0, len(members) - 1), label="repeat")
    key = members[i][0]
    members = data.draw(st.permutations([*members, (key, "again", not members[i][2])]),
                        label="order")
    tree: Tree = ("object", [(k, ("leaf", v), escape) for k, v, escape in members])
    body = dump_tree(tree, " ").encode("utf-8")
    assert isinstance(parse([], content_type, body, None), InvalidRequest)


@PROPS
@given(st.sampled_from(["client_id", "client_secret"]), NO_CREDENTIAL_QUERY, CONTENT_TYPES,
       TOKEN_BODIES, AUTHORIZATIONS)
def test_parse_credentials_in_query(
    credential: str, query: list[str], content_type: str, body: bytes,
    authorization: str | None,
) -> None:
    """``client_id`` or ``client_secret`` in the query raises QueryParamsForbidden, whatever
    the body and header hold."""
    result = parse([*query, credential], content_type, body, authorization)
    assert isinstance(result, QueryParamsForbidden)


def basic(client_id: str, client_secret: str) -> str:
    """RFC 6749 section 2.3.1: both halves form-urlencoded, then joined and base64-encoded."""
    joined = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(joined.encode("ascii")).decode("ascii")


@PROPS
@given(UTF8_TEXT.filter(bool), UTF8_TEXT.filter(bool), UTF8_TEXT, st.booleans(),
       st.sampled_from(["grant_type", "scope"]))
def test_parse_basic_and_body_name_other_clients(
    basic_id: str, secret: str, body_id: str, as_json: bool, other: str
) -> None:
    """HTTP Basic for client A with body client_id B (B != A) raises InvalidRequest; with body
    client_id A, or none, the request carries A's Basic credentials."""
    header = basic(basic_id, secret)
    for client_id, expect_ok in ((body_id, body_id == basic_id), (basic_id, True), (None, True)):
        params = {other: "x"} if client_id is None else {other: "x", "client_id": client_id}
        if as_json:
            body, content_type = json.dumps(params).encode("utf-8"), "application/json"
        else:
            body = form_body([(k, v, 0) for k, v in params.items()])
            content_type = "application/x-www-form-urlencoded"
        result = parse([], content_type, body, header)
        if expect_ok:
            assert isinstance(result, requests.TokenRequest), client_id
            assert result.credentials == requests.ClientCredentials(basic_id, secret,
                                                                    via_basic=True)
        else:
            assert isinstance(result, InvalidRequest), client_id


# --------------------------------------------------------------------------------------------
# connectlink.server.render.error_response

ERROR_CLASSES: list[type[ConnectLinkError]] = sorted(
    {*errors.CONNECT_ERRORS.values(), *errors.OAUTH_ERRORS.values(), errors.ExpiredToken,
     errors.RevokedToken, RequestTimeout},
    key=lambda cls: cls.__name__,
)
ERROR_KEYS = st.one_of(st.none(), st.sampled_from(["user_id", "first_name", "linking_token"]),
                       UTF8_TEXT)
RETRY_AFTER = st.integers(0, 10**9)
SIMPLE_CONNECT = [cls for cls in ERROR_CLASSES
                  if issubclass(cls, ConnectError) and "key" in inspect.signature(cls).parameters]


def error_instances(cls: type[ConnectLinkError]) -> st.SearchStrategy[ConnectLinkError]:
    """Instances of ``cls`` with hypothesis-chosen constructor arguments."""
    if issubclass(cls, MultipleErrors):
        inner = st.sampled_from(SIMPLE_CONNECT).flatmap(lambda c: ERROR_KEYS.map(c))
        nested = st.lists(inner, min_size=2, max_size=3).map(MultipleErrors)
        return st.lists(st.one_of(inner, nested), min_size=2, max_size=5).map(cls)
    if issubclass(cls, RateLimited | ServiceUnavailable):
        return RETRY_AFTER.map(cls)
    if issubclass(cls, BearerError):
        return st.booleans().map(lambda sent: cls(token_sent=sent))
    if issubclass(cls, InvalidClient):
        return st.booleans().map(lambda challenge: cls(basic_challenge=challenge))
    if issubclass(cls, MethodNotAllowed):
        return st.sampled_from(["", "GET", "POST", "GET, HEAD", "GET, HEAD, POST"]).map(cls)
    if issubclass(cls, ConnectError) and "key" in inspect.signature(cls).parameters:
        return ERROR_KEYS.map(cls)
    return st.builds(cls)


ERRORS = st.sampled_from(ERROR_CLASSES).flatmap(error_instances)


def connect_envelope(error: ConnectError) -> dict[str, Any]:
    """The Connect envelope written out by hand from the class's declared message and code."""
    cls = type(error)
    detail: dict[str, Any] = {"message": cls.message, "code": cls.code}
    if isinstance(error, MultipleErrors):
        detail["errors"] = [connect_envelope(inner) for inner in error.errors]
    key = error.key
    return {"error": detail, "meta": {} if key is None else {"key": key}}


_DOC = document(OPERATIONS)
VALIDATORS = {
    name: jsonschema_rs.validator_for(
        {"$ref": f"#/components/schemas/{name}", "components": _DOC["components"]})
    for name in ("ConnectErrorEnvelope", "OAuthErrorBody")
}
QUOTED_STRING_TEXT = re.compile(r'[\x20\x21\x23-\x5b\x5d-\x7e]*')


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_error_response(cls: type[ConnectLinkError], data: st.DataObject) -> None:
    """Every error renders with its class's status, ``application/json``, a body that is
    ``error.body()`` and its family's envelope (valid against the OpenAPI schema), and
    exactly the headers its family requires."""
    error = data.draw(error_instances(cls), label="error")
    response = error_response(error)
    assert response.status_code == cls.status
    assert response.headers["content-type"] == "application/json"
    assert response.media_type == "application/json"
    assert response.headers["content-length"] == str(len(response.body))
    body = json.loads(response.body)
    assert body == error.body()
    headers = response.headers

    if isinstance(error, ConnectError):
        assert body == connect_envelope(error)
        assert set(body) == {"error", "meta"}
        VALIDATORS["ConnectErrorEnvelope"].validate(body)
    else:
        assert isinstance(error, OAuthError | BearerError)
        assert body == {"error": error.error, "error_description": error.description}
        VALIDATORS["OAuthErrorBody"].validate(body)

    expected_retry = (str(error.retry_after)
                      if isinstance(error, RateLimited | ServiceUnavailable) else None)
    assert headers.get("retry-after") == expected_retry
    if cls.status in (429, 503):
        assert expected_retry is not None

    if isinstance(error, BearerError):
        challenge = headers["www-authenticate"]
        if error.token_sent:
            assert challenge == (f'Bearer realm="connect", error="{error.error}", '
                                 f'error_description="{error.description}"')
            assert QUOTED_STRING_TEXT.fullmatch(error.description)
        else:
            assert challenge == 'Bearer realm="connect"'
    elif isinstance(error, InvalidClient) and error.basic_challenge:
        assert headers["www-authenticate"] == 'Basic realm="connect"'
    else:
        assert "www-authenticate" not in headers

    if isinstance(error, OAuthError):
        assert headers["cache-control"] == "no-store"
        assert headers["pragma"] == "no-cache"
    else:
        assert "cache-control" not in headers

    closes = isinstance(error, RequestTimeout | errors.HeaderFieldsTooLarge | errors.BadRequest)
    assert headers.get("connection") == ("close" if closes else None)
    if isinstance(error, MethodNotAllowed) and error.allow:
        assert headers["allow"] == error.allow
    else:
        assert "allow" not in headers


def test_error_classes_cover_the_tables() -> None:
    """The classes rendered above are every class of both wire tables, plus the extras."""
    names = {cls.__name__ for cls in ERROR_CLASSES}
    assert {"ExpiredToken", "RevokedToken", "RequestTimeout", "MultipleErrors", "RateLimited",
            "ServiceUnavailable", "InvalidClient", "InvalidToken",
            "InsufficientScope"} <= names
    assert len(ERROR_CLASSES) >= len(errors.CONNECT_ERRORS)
