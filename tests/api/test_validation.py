"""Rule validation through the real app over the in-memory control plane (fast): every
refusal is a 422 naming the field, and nothing is written."""

from __future__ import annotations

from typing import Any

import pytest
from api_factories import drift_rule, metric_rule
from driftline.api import ApiConfig, InMemoryControlPlane, create_app, crud
from driftline.api.models import parse_duration
from driftline.schemas.rules import Rule
from fastapi.testclient import TestClient


@pytest.fixture
def memory_client() -> tuple[TestClient, InMemoryControlPlane]:
    cp = InMemoryControlPlane()
    token, _ = crud.create_api_key(control_plane=cp, name="w", scopes=["write"], actor="t")
    app = create_app(ApiConfig(max_body_bytes=8192), control_plane=cp)
    return TestClient(app, headers={"X-API-Key": token}), cp


def _errors(response: Any) -> dict[tuple, str]:
    assert response.status_code == 422, response.text
    return {tuple(e["loc"]): e["msg"] for e in response.json()["detail"]}


CASES = [
    # (body, location, substring of the message)
    (drift_rule(signal={"kind": "drift", "stream_kind": "FEATURE", "detector": "ADWINN"}),
     ("body", "signal", "drift", "detector"), "ADWIN"),
    (drift_rule(signal={"kind": "drift", "stream_kind": "INPUT"}),
     ("body", "signal", "drift", "stream_kind"), "FEATURE"),
    (metric_rule(signal={"kind": "metric", "metric": "f1"}),
     ("body", "signal", "metric", "metric"), "accuracy"),
    (metric_rule(condition={"type": "threshold", "op": ">", "value": 1.5}),
     ("body", "condition", "value"), "out of range"),
    (metric_rule(condition={"type": "threshold", "op": ">", "value": 1.0}),
     ("body", "condition", "value"), "can never hold"),
    (metric_rule(condition={"type": "threshold", "op": "<", "value": 0}),
     ("body", "condition", "value"), "can never hold"),
    (metric_rule(signal={"kind": "metric", "metric": "prediction_count"},
                 condition={"type": "threshold", "op": "<", "value": -3}),
     ("body", "condition", "value"), "out of range"),
    (metric_rule(condition={"type": "threshold", "op": "!=", "value": 0.5}),
     ("body", "condition", "threshold", "op"), "'<'"),
    (metric_rule(condition={"type": "drift_detected"}),
     ("body", "condition", "type"), "threshold"),
    (drift_rule(condition={"type": "threshold", "op": "<", "value": 1}),
     ("body", "condition", "type"), "drift_detected"),
    (metric_rule(signal={"kind": "metric", "metric": "accuracy", "window": "5 minutes"}),
     ("body", "signal", "metric", "window"), "not a duration"),
    (metric_rule(signal={"kind": "metric", "metric": "accuracy", "window": "90s"}),
     ("body", "signal", "window"), "whole minutes"),
    (drift_rule(**{"for": "-5m"}), ("body", "for"), "not a duration"),
    (drift_rule(cooldown="400d"), ("body", "cooldown"), "90d"),
    (drift_rule(min_samples=-1), ("body", "min_samples"), "greater than or equal to 0"),
    (drift_rule(severity="fatal"), ("body", "severity"), "critical"),
    (drift_rule(model_selector={"model id": "x"}), ("body", "model_selector", "model id", "[key]"),
     "pattern"),
    (drift_rule(model_selector={"model_id": "churn-*"}), ("body", "models"), "exactly one"),
    (metric_rule(model_selector=None), ("body", "models"), "exactly one"),
    (drift_rule(models=["a b"]), ("body", "models", 0), "pattern"),
    (drift_rule(models=["a", "a"]), ("body", "models"), "unique"),
    (drift_rule(severty="critical"), ("body", "severty"), "Extra inputs"),
    (drift_rule(notify=["sub-missing"]), ("body", "notify", 0), "no subscription"),
    (drift_rule(actions=[{"type": "retrain", "priority": "URGENT"}]),
     ("body", "actions", 0, "retrain", "priority"), "HIGH"),
    (drift_rule(actions=[{"type": "page"}]), ("body", "actions", 0), "retrain"),
    (drift_rule(group_by=["model_id", "model_id"]), ("body", "group_by"), "unique"),
    (drift_rule(repeat_interval="10s"), ("body", "repeat_interval"), "1m"),
    (drift_rule(name=""), ("body", "name"), "at least 1"),
    (drift_rule(signal={"kind": "verdict"}), ("body", "condition", "type"), "verdict_is"),
    (drift_rule(signal={"kind": "verdict"},
                condition={"type": "threshold", "op": "<", "value": 0.5}),
     ("body", "condition", "type"), "verdict_is"),
    (drift_rule(condition={"type": "verdict_is"}), ("body", "condition", "type"),
     "drift_detected"),
    (metric_rule(condition={"type": "verdict_is"}), ("body", "condition", "type"), "threshold"),
    (drift_rule(signal={"kind": "verdict"}, condition={"type": "verdict_is", "outcome": "worse"}),
     ("body", "condition", "verdict_is", "outcome"), "WORSE"),
    (drift_rule(signal={"kind": "verdict", "stream_kind": "ERROR"},
                condition={"type": "verdict_is"}),
     ("body", "signal", "verdict", "stream_kind"), "Extra inputs"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "loc", "message"), CASES)
def test_invalid_rule_is_a_field_level_422_and_writes_nothing(
    memory_client: tuple[TestClient, InMemoryControlPlane],
    body: dict,
    loc: tuple,
    message: str,
) -> None:
    client, cp = memory_client
    errors = _errors(client.post("/v1/rules", json=body))
    assert loc in errors, errors
    assert message in errors[loc], errors[loc]
    assert cp.count("rule") == 0


def test_valid_rules_are_accepted(memory_client: tuple[TestClient, InMemoryControlPlane]) -> None:
    client, cp = memory_client
    for body in (
        drift_rule(),
        metric_rule(),
        drift_rule(signal={"kind": "drift", "stream_kind": "ERROR"}),  # any stream, any detector
        metric_rule(
            signal={"kind": "statistic", "stream_kind": "FEATURE", "field": "p_value"},
            condition={"type": "threshold", "op": "<", "value": 0.01},
        ),  # fmt: skip
        metric_rule(
            signal={"kind": "metric", "metric": "prediction_count", "window": "1h"},
            condition={"type": "threshold", "op": "<", "value": 1},
        ),  # fmt: skip
        drift_rule(signal={"kind": "verdict"}, condition={"type": "verdict_is"}),
        drift_rule(
            signal={"kind": "verdict"}, condition={"type": "verdict_is", "outcome": "BETTER"}
        ),
    ):
        response = client.post("/v1/rules", json=body)
        assert response.status_code == 201, response.text
        # the workers parse what the API stored (schemas/rules.py)
        record = cp.get("rule", response.json()["id"])
        Rule.from_record(record.id, record.version, record.data)
    assert cp.count("rule") == 7


def test_patch_is_validated_as_the_merged_rule(
    memory_client: tuple[TestClient, InMemoryControlPlane],
) -> None:
    client, cp = memory_client
    rule = client.post("/v1/rules", json=metric_rule()).json()
    # Valid alone, impossible together with the rule's accuracy metric.
    response = client.patch(
        f"/v1/rules/{rule['id']}", json={"condition": {"type": "threshold", "op": "<", "value": 7}}
    )
    assert ("body", "condition", "value") in _errors(response)
    assert cp.get("rule", rule["id"]).version == 1
    # Choosing models replaces the selector.
    response = client.patch(f"/v1/rules/{rule['id']}", json={"models": ["churn-a"]})
    assert response.status_code == 200, response.text
    assert response.json()["model_selector"] is None


def test_oversized_bodies_are_refused_before_parsing(
    memory_client: tuple[TestClient, InMemoryControlPlane],
) -> None:
    client, cp = memory_client
    big = drift_rule(description="x" * 1000, annotations={f"a{i}": "y" * 500 for i in range(20)})
    response = client.post("/v1/rules", json=big)
    assert response.status_code == 413
    assert "8192 bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit holds for streamed bodies too
        yield b'{"name": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    response = client.post(
        "/v1/rules", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert cp.count("rule") == 0


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1d2h3m4s") == 93784
    for bad in ("", "5", "m", "1.5h", "5M", "1h 30m", "-1s", "91d"):
        with pytest.raises(ValueError):
            parse_duration(bad)
