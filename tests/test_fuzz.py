"""Schemathesis against the OpenAPI document, on both engines: every operation gets generated
requests, valid and invalid, and every response must be no server error and exactly what the
document says (status, content type, headers, body schema). Then stateful runs follow the
document's links: create a user, then read it, link it, read its link, file its privacy request.

Every check runs except "schema-valid data is accepted" (``positive_data_acceptance``), which
cannot hold for Connect: a well-formed request for a user that does not exist is, as documented,
400 ``User Not Found``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis.specs.openapi.checks import positive_data_acceptance

from conftest import ENGINES, POSTGRES, START, _postgres, upgraded
from connectlink.clock import ManualClock
from connectlink.linking import retailers
from connectlink.server.openapi import document
from connectlink.server.operations import OPERATIONS
from connectlink.settings import Settings
from connectlink.storage import using_store
from support import ThreadServer, run_sync

EXAMPLES = 50  # generated requests for each operation, each engine
SCHEMA = schemathesis.openapi.from_dict(document(OPERATIONS))  # test_openapi: the served one


@dataclass(frozen=True)
class Target:
    url: str
    headers: dict[str, str]


@contextlib.contextmanager
def _database(engine: str, folder: Path) -> Iterator[str]:
    if engine == "sqlite":
        yield f"sqlite:///{folder / 'fuzz.db'}"
        return
    schema = f"fz_{uuid.uuid4().hex[:16]}"
    run_sync(_postgres(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES}?search_path={schema}"
    finally:
        run_sync(_postgres(f"DROP SCHEMA {schema} CASCADE"))


def _bearer(url: str, database_url: str, clock: ManualClock) -> dict[str, str]:
    created = run_sync(using_store(database_url, lambda store: retailers.create(
        store, clock, "Fuzzed", ["https://shop.example/cb"])))
    token = httpx.post(f"{url}/v2/oauth/token", json={
        "client_id": created.client.client_id, "client_secret": created.client_secret,
        "grant_type": "client_credentials"}).json()
    return {"Authorization": f"Bearer {token['access_token']}"}


@pytest.fixture(scope="module", params=ENGINES)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Target]:
    """One server an engine, with a retailer whose bearer token every request carries."""
    yield from _target(request.param, tmp_path_factory)


@pytest.fixture(params=ENGINES)
def own_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Target]:
    """As ``target``, for one test alone: the fuzzed admin plane (a clock moved a year on, a
    reset, a fault rule) must not leave its bearer token expired or its retailer gone."""
    yield from _target(request.param, tmp_path_factory)


def _target(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with _database(engine, tmp_path_factory.mktemp("fuzz")) as database_url:
        settings_ = Settings.for_profile("emulator", database_url=upgraded(database_url),
                                         access_log=False, pool_size=4)
        server = ThreadServer(settings_, ManualClock(START))
        server.start()
        try:
            yield Target(server.url, _bearer(server.url, database_url, server.clock))
        finally:
            server.stop()


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_every_operation_keeps_its_contract(case: Any, target: Target) -> None:
    case.call_and_validate(base_url=target.url, headers=target.headers,
                           excluded_checks=[positive_data_acceptance])


def test_stateful_links_keep_the_contract(own_target: Target) -> None:
    target = own_target
    machine = SCHEMA.as_state_machine()
    calls: dict[str, int] = {}

    class Bound(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
            return {"base_url": target.url, "headers": target.headers}

        def validate_response(self, response: Any, case: Any,
                              additional_checks: Any = None, **kwargs: Any) -> None:
            case.validate_response(response, excluded_checks=[positive_data_acceptance],
                                   transport_kwargs=kwargs or None, recorder=self.recorder)

    run_state_machine_as_test(Bound, settings=settings(
        max_examples=40, stateful_step_count=6, deadline=None,
        suppress_health_check=list(HealthCheck)))
    print(f"stateful calls: {sum(calls.values())}", dict(sorted(calls.items())))
    # the links were followed: a created user was then used by the operations on it
    assert calls.get("POST /v2/fulfillment/users", 0) > 0
    assert sum(n for label, n in calls.items() if "{user_id}" in label) > 0
