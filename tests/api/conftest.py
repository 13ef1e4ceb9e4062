"""Fixtures for the API tests: the session's shared Kafka broker and one control plane for the
whole api test session (starting either per module would cost most of the time budget), API
keys of every scope, and clients through the real app."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from driftline.api import ApiConfig, ControlPlane, create_app, crud
from fastapi.testclient import TestClient

from driftline.local_kafka import LocalKafka

# Test helpers beside this file (api_factories) import by name from any test module here.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def api_kafka(kafka_broker: LocalKafka) -> LocalKafka:
    """The session's shared broker (tests/conftest.py), under the name the api tests use."""
    return kafka_broker


@pytest.fixture(scope="session")
def control_plane(api_kafka: LocalKafka) -> Iterator[ControlPlane]:
    cp = ControlPlane(api_kafka.bootstrap).start()
    assert cp.wait_ready(30)
    try:
        yield cp
    finally:
        cp.close()


@pytest.fixture(scope="session")
def tokens(control_plane: ControlPlane) -> dict[str, str]:
    """scope -> a key with exactly that scope."""
    return {
        scope: crud.create_api_key(
            control_plane=control_plane, name=f"test-{scope}", scopes=[scope], actor="tests"
        )[0]
        for scope in ("read", "write", "admin")
    }


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app(control_plane: ControlPlane):  # type: ignore[no-untyped-def]
    return create_app(ApiConfig(), control_plane=control_plane)


@pytest.fixture
def client(app, tokens: dict[str, str]) -> TestClient:  # type: ignore[no-untyped-def]
    """A client with a write key."""
    return TestClient(app, headers=auth(tokens["write"]))
