"""Rule/silence/subscription bodies for the tests (the template's tests/utils factories)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any


def unique(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def drift_rule(**overrides: Any) -> dict[str, Any]:
    body = {
        "name": "feature drift",
        "models": [unique("churn")],
        "signal": {
            "kind": "drift",
            "stream_kind": "FEATURE",
            "stream_name": "f00",
            "detector": "ADWIN",
        },
        "condition": {"type": "drift_detected"},
        "severity": "warning",
        "labels": {"team": "growth"},
    }
    body.update(overrides)
    return body


def metric_rule(**overrides: Any) -> dict[str, Any]:
    body = {
        "name": "accuracy low",
        "model_selector": {"model_id": "churn-*"},
        "signal": {"kind": "metric", "metric": "accuracy", "window": "5m"},
        "condition": {"type": "threshold", "op": "<", "value": 0.8},
        "min_samples": 10,
        "for": "10m",
        "severity": "critical",
        "actions": [{"type": "retrain", "priority": "HIGH", "lookback": "1h"}],
    }
    body.update(overrides)
    return body


def silence(**overrides: Any) -> dict[str, Any]:
    body = {
        "matchers": [{"name": "model_id", "value": "churn-*", "op": "=~"}],
        "ends_at": iso(datetime.now(UTC) + timedelta(days=1)),
        "comment": "maintenance",
    }
    body.update(overrides)
    return body


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
