"""The OpenAPI document: generated from the operation table, served as generated, covering
every route of each profile, and its examples the very bodies the server sends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
from starlette.routing import Route

import contract
from conftest import make_emulator
from connectlink import errors
from connectlink.server.app import Endpoint
from connectlink.server.openapi import document
from connectlink.server.operations import OPERATIONS, for_settings
from support import Emulator


@pytest.fixture(params=["emulator", "production"])
def served(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Emulator]:
    yield from make_emulator(f"sqlite:///{tmp_path / 'c.db'}", in_process=True,
                             profile=request.param)


def _routes(emulator: Emulator) -> set[tuple[str, str]]:
    app: Any = emulator.server.app  # type: ignore[union-attr]
    found = set()
    for route in app.router.routes:
        assert isinstance(route, Route) and isinstance(route.app, Endpoint)
        found |= {(method, route.path) for method in route.app.by_method}
    return found


def test_the_served_document_is_the_generated_one(served: Emulator) -> None:
    response = served.http.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == document(for_settings(served.server.settings))


def test_every_route_is_documented_and_nothing_else(served: Emulator) -> None:
    paths = served.http.get("/openapi.json").json()["paths"]
    documented = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert documented == _routes(served)
    sandbox = any(path.startswith("/v2/fulfillment_sandbox") for _, path in documented)
    assert sandbox is (served.server.settings.profile == "emulator")


def test_operation_names_are_unique_and_every_connect_error_is_documented() -> None:
    names = [op.name for op in OPERATIONS]
    assert len(names) == len(set(names))
    documented = {type(e) for op in OPERATIONS for e in op.refusals()}
    for cls in errors.CONNECT_ERRORS.values():
        # 404 and 405 are the router's, not an operation's
        if cls not in {errors.NotFound, errors.MethodNotAllowed}:
            assert cls in documented, cls


def test_every_example_is_its_class_body_and_fits_its_schema() -> None:
    doc = contract.DOCUMENT
    seen = 0
    for path, item in doc["paths"].items():
        for described in item.values():
            op = next(o for o in OPERATIONS if o.name == described["operationId"])
            bodies = [e.body() for e in op.refusals()]
            for status, response in described["responses"].items():
                for media in response.get("content", {}).values():
                    for example in media.get("examples", {}).values():
                        assert example["value"] in bodies
                        schema = {**media["schema"], "components": doc["components"]}
                        assert jsonschema_rs.is_valid(schema, example["value"]), (path, status)
                        seen += 1
    assert seen > 100


def test_the_contract_check_refuses_what_the_document_does_not_say() -> None:
    request = httpx.Request("GET", "http://x/v2/fulfillment/users/u1/link")
    wrong_shape = httpx.Response(200, json={"express_member": "yes"}, request=request)
    with pytest.raises(AssertionError):
        contract.check(wrong_shape)
    undocumented = httpx.Response(409, json={}, request=request)
    with pytest.raises(AssertionError):
        contract.check(undocumented)
    fine = httpx.Response(200, json={"express_member": False, "instacartplus_member": False},
                          request=request)
    contract.check(fine)


def test_the_reference_page_lists_every_operation(served: Emulator) -> None:
    page = served.http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for op in for_settings(served.server.settings):
        assert f'id="{op.name}"' in page.text
    assert page.text.count('id="schema-ConnectErrorEnvelope"') == 1
    assert '<a href="#schema-Membership">Membership</a>' in page.text  # a 200's body named
    assert "<title>API reference · Instacart</title>" in page.text
    assert "<script" not in page.text
