"""The OpenAPI 3.1 document, generated from the three things that define the wire: the
operation table (paths, methods, callers), the bodies in ``connectlink.wire`` (msgspec's JSON
Schema of the very Structs the server encodes) and the error vocabulary (each documented
refusal is an instance of the class the server raises; its example is that instance's body).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

import msgspec

from connectlink import __version__, errors, jsonio, wire
from connectlink.server.context import ApiDocument
from connectlink.server.operations import Caller, Family, Operation

REF = "#/components/schemas/{name}"
_PATH_PARAMETER = re.compile(r"{(\w+)}")
_ENVELOPES = (wire.ConnectErrorEnvelope, wire.OAuthErrorBody)
_SECURITY: dict[Caller, list[dict[str, list[str]]]] = {
    Caller.BEARER: [{"bearer": []}],
    # Client credentials in the body (no scheme), or HTTP Basic (RFC 6749 section 2.3.1).
    Caller.CLIENT: [{}, {"clientBasic": []}],
    Caller.NONE: [],
    # The admin token, or none from the loopback interface (decisions.md "The admin plane").
    Caller.ADMIN: [{}, {"admin": []}],
}
_DESCRIPTION = """\
Instacart Connect's account-linking API as ConnectLink serves it: OAuth tokens, Connect users,
linking and Instacart+ membership, the sandbox helpers, and the "Login with Instacart" pages.
Errors use two envelopes: the Connect one, `{"error": {"message", "code"}, "meta": {"key"}}`,
and the OAuth one, `{"error", "error_description"}` (token endpoints and bearer failures)."""


def served(operations: Iterable[Operation]) -> ApiDocument:
    """The document of these operations, built and encoded as ``/openapi.json`` serves it."""
    return _served(tuple(operations))


@functools.cache
def _served(operations: tuple[Operation, ...]) -> ApiDocument:
    """One document per set of operations a process serves: tens of milliseconds to build,
    which every app made (an in-process emulator per test) would otherwise pay again."""
    built = document(operations)
    return ApiDocument(built, jsonio.encode(built))


def _never_null(schema: dict[str, Any]) -> None:
    """A response's optional field is left out when it has no value, never null (decisions.md
    "Connect users", "Membership"): its schema says so, where msgspec's allows null."""
    required = set(schema.get("required", ()))
    for name, field in schema.get("properties", {}).items():
        variants = field.get("anyOf", [])
        if name not in required and {"type": "null"} in variants:
            kept = [v for v in variants if v != {"type": "null"}]
            field.pop("anyOf")
            field.pop("default", None)
            field.update(kept[0] if len(kept) == 1 else {"anyOf": kept})


def _generator_friendly(node: Any) -> None:
    """What code generators read wrongly in msgspec's schemas, rewritten in place (each seen
    with openapi-python-client or openapi-typescript): ``default: null`` on an optional field
    (openapi-typescript then makes it required; leaving it out says the same), and
    ``{"enum": [true]}`` with no type (openapi-python-client drops the schema)."""
    if isinstance(node, list):
        for item in node:
            _generator_friendly(item)
        return
    if not isinstance(node, dict):
        return
    if "default" in node and node["default"] is None:
        del node["default"]
    if node.get("enum") == [True] and "type" not in node:
        del node["enum"]
        node.update({"type": "boolean", "const": True})
    for value in node.values():
        _generator_friendly(value)


def ref(cls: type[Any]) -> dict[str, str]:
    return {"$ref": REF.format(name=cls.__name__)}


def document(operations: Iterable[Operation]) -> dict[str, Any]:
    """The whole document for these operations (a server's, for its profile)."""
    operations = tuple(operations)
    bodies = {op.request for op in operations if _has_fields(op.request)}
    bodies |= {op.response for op in operations}
    types = sorted((t for t in bodies if t is not None), key=lambda t: t.__name__)
    _, schemas = msgspec.json.schema_components([*types, *_ENVELOPES], ref_template=REF)
    answered: set[type[Any]] = {op.response for op in operations if op.response is not None}
    answered |= {wire.ConnectErrorDetail, wire.ConnectErrorMeta}
    for response in answered:
        _never_null(schemas[response.__name__])
    _generator_friendly(schemas)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, operations)
    return {
        "openapi": "3.1.0",
        "info": {"title": "ConnectLink: Instacart Connect account linking",
                 "version": __version__, "description": _DESCRIPTION,
                 "contact": {"name": "ConnectLink"}},
        # Relative: the server that serves this document serves the API.
        "servers": [{"url": "/", "description": "The server that serves this document"}],
        "tags": [{"name": family.value, "description": _FAMILIES[family]} for family in Family
                 if any(op.family is family for op in operations)],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "A client_credentials access token"},
                "clientBasic": {"type": "http", "scheme": "basic",
                                "description": "client_id and client_secret"},
                "admin": {"type": "http", "scheme": "bearer",
                          "description": "CONNECTLINK_ADMIN_TOKEN (the emulator's admin plane; "
                                         "not needed from the loopback interface)"},
            },
        },
    }


def _operation(op: Operation, operations: tuple[Operation, ...]) -> dict[str, Any]:
    described: dict[str, Any] = {
        "operationId": op.name,
        "summary": op.summary,
        "description": _operation_description(op),
        "tags": [op.family.value],
        "security": _SECURITY[op.caller],
    }
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(op, name)}
        for name in _PATH_PARAMETER.findall(op.path)
    ]
    parameters += _query_parameters(op.query)
    if parameters:
        described["parameters"] = parameters
    if op.request is not None:
        # One media type an operation: the token endpoints' form-encoded bodies, which they
        # take too, are said in the description, since a generator given two media types for
        # one body writes code that does not run (openapi-python-client 0.29: ``Unset`` used,
        # never imported; the form branch overwriting the JSON one).
        media = ["application/x-www-form-urlencoded"] if op.page else ["application/json"]
        # A body with no field to carry (the privacy request's) may be left out, and may be
        # any JSON value: one that is no object counts as an empty one (decisions.md).
        schema = ref(op.request) if _has_fields(op.request) else {
            "description": op.request.__doc__ or ""}
        described["requestBody"] = {
            "required": _has_fields(op.request),
            "content": {m: {"schema": schema} for m in media},
        }
    described["responses"] = {str(op.success): _success(op, operations), **_refusals(op)}
    if op.page:
        described["responses"] |= {
            "302": {"description": "Back to the client's redirect URI: a code, or an error"},
            "303": {"description": "On to the next page of the flow"},
        }
    return described


# Path parameters that are integers (ids the store gives); every other one is a string.
_ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
_INTEGER_PARAMETERS = {"retailer_id", "account_id", "fault_id"}


def _path_schema(op: Operation, name: str) -> dict[str, Any]:
    """A sandbox ``user_id`` is an Instacart user's integer id (connect-api.md 8.2); a
    Connect ``user_id`` is the retailer's own text."""
    if name in _INTEGER_PARAMETERS or (name == "user_id" and op.family is Family.SANDBOX):
        return dict(_ID)
    return {"type": "string"}


_FAMILIES = {
    Family.OAUTH: "OAuth 2.0 tokens: client credentials, linking tokens, revocation",
    Family.CONNECT: "Connect users, linking and Instacart+ membership",
    Family.PAGES: "The Login with Instacart pages, for a shopper's browser",
    Family.SANDBOX: "Test Instacart users and their consent, without a browser",
    Family.DOCS: "This document and its reference page",
    Family.OPS: "Health, readiness and metrics, for operators",
    Family.ADMIN: "The emulator's admin plane: clocks, faults, journal, snapshots",
}
_CALLERS = {
    Caller.NONE: "No credentials.",
    Caller.CLIENT: "The client's credentials: client_id and client_secret in the body, or "
                   "HTTP Basic (never in the query). The body may also be sent "
                   "`application/x-www-form-urlencoded` (RFC 6749), with the same fields.",
    Caller.BEARER: "A client_credentials access token, as `Authorization: Bearer`.",
    Caller.ADMIN: "The admin token as `Authorization: Bearer`, or none from the loopback "
                  "interface with a loopback `Host`.",
}


def _operation_description(op: Operation) -> str:
    """What a caller must know besides the summary: credentials, scope, rate-limit bucket."""
    said = [f"{op.summary}.", _CALLERS[op.caller]]
    if op.scope is not None:
        said.append(f"The token needs the scope `{op.scope}`.")
    if op.bucket is not None:
        said.append(f"Rate-limited in the `{op.bucket}` bucket (429 with `Retry-After`).")
    if op.family is Family.SANDBOX:
        said.append("Sandbox only (the emulator profile, or `CONNECTLINK_SANDBOX`).")
    if op.family is Family.ADMIN:
        said.append("The emulator profile only (404 in production).")
    return " ".join(said)


def _has_fields(body: type[Any] | None) -> bool:
    # (the Struct's own attribute: msgspec.structs.fields resolves every annotation again)
    return body is not None and bool(body.__struct_fields__)


def _query_parameters(query: type[Any] | None) -> list[dict[str, Any]]:
    """A Struct's fields as query parameters (the Login URL's)."""
    if query is None:
        return []
    _, components = msgspec.json.schema_components([query])
    schema = components[query.__name__]
    _generator_friendly(schema)
    required = set(schema.get("required", ()))
    return [{"name": name, "in": "query", "required": name in required, "schema": field}
            for name, field in schema["properties"].items()]


# The 200s that no Struct describes, besides the pages: (media type, description).
_UNTYPED = {
    "openapi": ("application/json", "The page"),
    "metrics": ("text/plain", "Prometheus's text exposition format"),
}


def _success(op: Operation, operations: tuple[Operation, ...]) -> dict[str, Any]:
    if op.response is None:
        media, what = _UNTYPED.get(op.name, ("text/html", "The page"))
        return {"description": what, "content": {media: {}}}
    success: dict[str, Any] = {
        "description": "Success", "content": {"application/json": {"schema": ref(op.response)}},
    }
    if op.response is wire.ConnectUser and op.method == "POST":
        success["links"] = _user_links(operations)
    return success


def _user_links(operations: tuple[Operation, ...]) -> dict[str, Any]:
    """From a created user to every operation on it (for stateful testing)."""
    return {
        op.name: {"operationId": op.name,
                  "parameters": {"user_id": "$response.body#/user_id"}}
        for op in operations if op.family is Family.CONNECT and "{user_id}" in op.path
    }


def _refusals(op: Operation) -> dict[str, Any]:
    by_status: dict[int, list[errors.ConnectLinkError]] = {}
    for refusal in op.refusals():
        by_status.setdefault(refusal.status, []).append(refusal)
    return {str(status): _refusal_response(op, found)
            for status, found in sorted(by_status.items())}


def _refusal_response(op: Operation, found: list[errors.ConnectLinkError]) -> dict[str, Any]:
    if op.page:  # a browser's errors are pages
        return {"description": "; ".join(_title(e) for e in found),
                "content": {"text/html": {}}}
    shapes = sorted({_envelope(e).__name__ for e in found})
    schema = ({"$ref": REF.format(name=shapes[0])} if len(shapes) == 1
              else {"anyOf": [{"$ref": REF.format(name=name)} for name in shapes]})
    response: dict[str, Any] = {
        "description": "; ".join(_title(e) for e in found),
        "content": {"application/json": {
            "schema": schema,
            "examples": {_example_name(e): {"summary": _title(e), "value": e.body()}
                         for e in found},
        }},
    }
    headers = _headers(found)
    if headers:
        response["headers"] = headers
    return response


def _envelope(error: errors.ConnectLinkError) -> type[Any]:
    return wire.ConnectErrorEnvelope if isinstance(error, errors.ConnectError) else (
        wire.OAuthErrorBody)


def _title(error: errors.ConnectLinkError) -> str:
    body = error.body()
    if isinstance(error, errors.ConnectError):
        return str(body["error"]["message"]) + (f" ({error.key})" if error.key else "")
    sent = "" if not isinstance(error, errors.BearerError) or error.token_sent else " (none sent)"
    return f'{body["error"]}: {body["error_description"]}{sent}'


def _example_name(error: errors.ConnectLinkError) -> str:
    name = type(error).__name__
    if isinstance(error, errors.ConnectError) and error.key:
        name += f"-{error.key}"
    if isinstance(error, errors.BearerError) and not error.token_sent:
        name += "-none-sent"
    return name


def _headers(found: list[errors.ConnectLinkError]) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if any(isinstance(e, errors.BearerError) for e in found) or any(
        isinstance(e, errors.InvalidClient) for e in found
    ):
        headers["WWW-Authenticate"] = {"schema": {"type": "string"},
                                       "description": "RFC 6750 (bearer) or Basic challenge"}
    if any(isinstance(e, errors.RateLimited | errors.ServiceUnavailable) for e in found):
        headers["Retry-After"] = {"schema": {"type": "integer", "minimum": 1},
                                  "description": "Seconds to wait before trying again"}
    if any(isinstance(e, errors.RequestTimeout) for e in found):
        headers["Connection"] = {"schema": {"const": "close"}}
    return headers
