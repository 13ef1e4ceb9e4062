"""Schemathesis against the OpenAPI spec, through the real app, broker and an embedded store:
no generated request (valid or not) may produce a 5xx. Examples are capped per operation so
the module runs in well under a minute.

Operations are driven with Hypothesis directly (``operation.as_strategy()``): schemathesis'
pytest plugin (``from_fixture``) does not run under pytest 9 here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from conftest import auth
from driftline.api import (
    ApiConfig,
    ControlPlane,
    InMemoryControlPlane,
    InMemoryReferences,
    create_app,
)
from driftline.api.versions import InMemoryModelRegistry
from driftline.sinks import Store
from driftline.sinks.store import open_store
from hypothesis import HealthCheck, given, settings

OPERATIONS = [
    (method.upper(), path)
    for path, methods in create_app(ApiConfig(), control_plane=InMemoryControlPlane())
    .openapi()["paths"]
    .items()
    for method in methods
]


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = open_store(None, "api_fuzz", tmp_path_factory.mktemp("chdb"), ttl_days=None)
    try:
        store.migrate()
        yield store
    finally:
        store.close()


@pytest.fixture(scope="module")
def api_schema(control_plane: ControlPlane, fuzz_store: Store):  # type: ignore[no-untyped-def]
    app = create_app(
        ApiConfig(), control_plane=control_plane, store=fuzz_store, references=InMemoryReferences(),
        model_registry=InMemoryModelRegistry(),
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_is_fuzzed(api_schema) -> None:  # type: ignore[no-untyped-def]
    found = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS) and len(found) > 20


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors(api_schema, tokens: dict[str, str], method: str, path: str) -> None:  # type: ignore[no-untyped-def]
    operation = api_schema[path][method]
    headers = auth(tokens["admin"])

    @given(case=operation.as_strategy())
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def no_5xx(case) -> None:  # type: ignore[no-untyped-def]
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)

    no_5xx()
