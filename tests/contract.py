"""Responses checked against the OpenAPI document: the status is one the operation documents,
and the body matches that status's schema. The error table runs every row through it."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import httpx
import jsonschema_rs

from connectlink.server.openapi import REF, document
from connectlink.server.operations import OPERATIONS

DOCUMENT = document(OPERATIONS)
_ROUTES = [(re.compile("^" + re.sub(r"{\w+}", "[^/]+", path) + "$"), path)
           for path in DOCUMENT["paths"]]
# Answers for a path or a method that no operation has (404, 405) come from the router.
_ROUTER = {"$ref": REF.format(name="ConnectErrorEnvelope")}


def operation(method: str, path: str) -> dict[str, Any] | None:
    for pattern, template in _ROUTES:
        if pattern.match(path):
            found: dict[str, Any] | None = DOCUMENT["paths"][template].get(method.lower())
            return found
    return None


def schema_for(method: str, path: str, status: int) -> dict[str, Any]:
    """The schema of the body an operation documents for ``status``."""
    described = operation("GET" if method == "HEAD" else method, path)
    if described is None:
        assert status in {404, 405}, f"{method} {path} is no operation, yet answered {status}"
        return _ROUTER
    response = described["responses"].get(str(status))
    assert response is not None, f"{described['operationId']} does not document {status}"
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


@cache
def _validator(ref: str) -> Any:
    return jsonschema_rs.validator_for({**json.loads(ref), "components": DOCUMENT["components"]})


def check(response: httpx.Response) -> None:
    """Fail unless ``response`` is one its operation documents."""
    request = response.request
    schema = schema_for(request.method, request.url.path, response.status_code)
    errors = [e.message for e in _validator(json.dumps(schema, sort_keys=True)).iter_errors(
        response.json())]
    assert not errors, (request.method, request.url.path, response.status_code, errors)
