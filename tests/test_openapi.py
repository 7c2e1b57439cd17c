"""The OpenAPI document: generated from the operation table, served as generated, covering
every route of each profile, and its examples the very bodies the server sends."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
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
from connectlink.settings import Settings
from support import Emulator, Retailer


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
        # 404 and 405 are the router's, 431 and the Host 400 the HTTP protocol's (before any
        # route: docs/contract.md), not an operation's
        if cls not in {errors.NotFound, errors.MethodNotAllowed, errors.HeaderFieldsTooLarge,
                       errors.BadRequest}:
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


# --- what code generators read (issue 19, item 6) -------------------------------------------
def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


@pytest.mark.parametrize("profile", ["emulator", "production"])
def test_the_document_says_what_generators_need(profile: str) -> None:
    overrides = {"secret_key": "k" * 32} if profile == "production" else {}
    built = document(for_settings(Settings.for_profile(profile, **overrides)))
    for node in _walk(built):
        assert node.get("default", "unset") is not None, node  # openapi-typescript: required
        assert not (node.get("enum") == [True] and "type" not in node), node
    assert built["servers"] and built["info"]["contact"]
    for item in built["paths"].values():
        for operation in item.values():
            assert operation["description"].startswith(operation["summary"])
    if profile == "production":
        return
    schemas = built["components"]["schemas"]
    assert schemas["ClockChange"]["properties"]["reset"]["anyOf"][0] == {
        "type": "boolean", "const": True}
    assert schemas["MembershipChange"]["properties"]["lapse"]["anyOf"][0] == {
        "type": "boolean", "const": True}
    authorize = built["paths"]["/v2/fulfillment_sandbox/instacart_users/{user_id}/authorize"]
    assert authorize["post"]["parameters"][0]["schema"]["type"] == "integer"
    assert {"response_type", "client_id", "state"} <= set(schemas["AuthorizeBody"]["properties"])
    privacy = built["paths"]["/v2/fulfillment/users/{user_id}/privacy_request"]["post"]
    assert privacy["requestBody"]["required"] is False
    assert "Malformed JSON body" in privacy["responses"]["400"]["description"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Python client generated from the emulator's document by openapi-python-client, as a
    retailer would make one, imported under a name of its own."""
    generator = shutil.which("openapi-python-client",
                             path=str(Path(sys.executable).parent)) or shutil.which(
        "openapi-python-client")
    if generator is None:
        pytest.fail("openapi-python-client is not installed (make install-dev installs it)")
    folder = tmp_path_factory.mktemp("generated")
    spec = folder / "openapi.json"
    spec.write_text(json.dumps(document(for_settings(Settings.for_profile("emulator")))))
    made = subprocess.run(
        [generator, "generate", "--path", str(spec), "--meta", "none",
         "--output-path", str(folder / "connectlink_generated")],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert made.returncode == 0, made.stdout + made.stderr
    assert "Warning" not in made.stdout + made.stderr, made.stdout + made.stderr  # nothing skipped
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("connectlink_generated")
    finally:
        sys.path.remove(str(folder))
        for name in [n for n in sys.modules if n.startswith("connectlink_generated")]:
            del sys.modules[name]


def test_a_generated_client_links_an_account(generated: Any, emulator: Emulator,
                                             shop: Retailer) -> None:
    """The generated client, against the server: every operation of a linking flow, and the
    admin operations a generator used to drop (reset, lapse)."""
    api = importlib.import_module("connectlink_generated.api")
    models = importlib.import_module("connectlink_generated.models")
    oauth = importlib.import_module("connectlink_generated.api.oauth.issue_token")
    sandbox = importlib.import_module(
        "connectlink_generated.api.sandbox.create_instacart_user")
    consent = importlib.import_module(
        "connectlink_generated.api.sandbox.authorize_instacart_user")
    users = importlib.import_module("connectlink_generated.api.connect.create_user")
    link = importlib.import_module("connectlink_generated.api.connect.link")
    get_link = importlib.import_module("connectlink_generated.api.connect.get_link")
    clock = importlib.import_module("connectlink_generated.api.admin.move_clock")
    membership = importlib.import_module("connectlink_generated.api.admin.change_membership")
    assert api is not None
    anonymous = generated.Client(base_url=str(emulator.http.base_url))
    grant = models.TokenRequestBodyGrantType
    token = oauth.sync(client=anonymous, body=models.TokenRequestBody(
        grant_type=grant.CLIENT_CREDENTIALS, client_id=shop.client_id,
        client_secret=shop.client_secret))
    assert isinstance(token, models.Token), token
    bearer = generated.AuthenticatedClient(base_url=str(emulator.http.base_url),
                                           token=token.access_token)
    account = sandbox.sync(client=bearer, body=models.CreateInstacartUserBody(
        email="gen@example.com", phone="+18005550100", password="correct horse battery",
        instacartplus_member=True))
    assert isinstance(account, models.SandboxUser), account
    code = consent.sync(account.id, client=bearer, body=models.AuthorizeBody(
        redirect_uri=shop.redirect_uri, scope="openid account_linking",
        response_type=models.AuthorizeBodyResponseTypeType0.CODE, client_id=shop.client_id,
        state="xyz"))
    assert isinstance(code, models.SandboxCode), code
    linking = oauth.sync(client=anonymous, body=models.TokenRequestBody(
        grant_type=grant.AUTHORIZATION_CODE, client_id=shop.client_id,
        client_secret=shop.client_secret, code=code.code, redirect_uri=shop.redirect_uri))
    assert isinstance(linking, models.Token), linking
    created = users.sync(client=bearer, body=models.CreateUserBody(user_id="g1",
                                                                  first_name="gen"))
    assert isinstance(created, models.ConnectUser) and created.first_name == "Gen"
    linked = link.sync("g1", client=bearer, body=models.LinkBody(linking.access_token))
    assert isinstance(linked, models.Success) and linked.success is True
    state = get_link.sync("g1", client=bearer)
    assert isinstance(state, models.Membership) and state.instacartplus_member is True
    reset = clock.sync(shop.credentials["retailer_id"], client=anonymous,
                       body=models.ClockChange(reset=True))
    assert isinstance(reset, models.VirtualClock), reset
    lapsed = membership.sync(account.id, client=anonymous,
                             body=models.MembershipChange(lapse=True))
    assert not isinstance(lapsed, models.ConnectErrorEnvelope), lapsed
    assert get_link.sync("g1", client=bearer).instacartplus_member is False
