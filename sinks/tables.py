"""driftline's ClickHouse tables as Python data, and decoded events -> columnar batches.

The worker builds batches from these specs instead of guessing column names or types; a test
checks every spec against the migrated database, so this module and ``migrations/`` cannot
drift apart.

>>> cols = columns_for("outcomes", [{"event_id": "o1", "prediction_id": "p1", "model_id": "m",
...                                  "event_time": 1700000000000, "label": "yes", "value": None}])
>>> cols["event_id"], cols["event_time"]
(['o1'], [1700000000000])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "TableSpec",
    "TABLES",
    "PREDICTIONS",
    "OUTCOMES",
    "JOINED_LABELS",
    "DETECTOR_STATS",
    "DRIFT_EVENTS",
    "RETRAINING_REQUESTS",
    "ALERTS",
    "FEATURE_DRIFT",
    "DATA_QUALITY",
    "REFERENCE_PROFILES",
    "PERFORMANCE_ESTIMATES",
    "columns_for",
    "joined_label",
]

TIME = "DateTime64(3, 'UTC')"
LC = "LowCardinality(String)"
NSTR = "Nullable(String)"
NF64 = "Nullable(Float64)"
FMAP = "Map(String, Float64)"
SMAP = "Map(String, String)"


@dataclass(frozen=True)
class TableSpec:
    """One table: the columns the worker sends (name -> ClickHouse type, in DDL order)."""

    name: str
    columns: dict[str, str]
    # Time column (partition key, TTL) and the row identity ending the ORDER BY key.
    time_column: str
    key: tuple[str, ...]
    # Columns the server fills (DEFAULT); never sent by the worker.
    server_defaults: dict[str, str] = field(default_factory=lambda: {"ingested_at": TIME})

    @property
    def all_columns(self) -> dict[str, str]:
        return {**self.columns, **self.server_defaults}


PREDICTIONS = TableSpec(
    "predictions",
    {
        "event_id": "String",
        "model_id": LC,
        "model_version": LC,
        "event_time": TIME,
        "numeric_features": FMAP,
        "categorical_features": SMAP,
        "segments": SMAP,
        "prediction_label": NSTR,
        "prediction_score": NF64,
        "prediction_value": NF64,
        "probabilities": FMAP,
    },
    time_column="event_time",
    key=("model_id", "event_time", "event_id"),
)

OUTCOMES = TableSpec(
    "outcomes",
    {
        "event_id": "String",
        "prediction_id": "String",
        "model_id": LC,
        "event_time": TIME,
        "label": NSTR,
        "value": NF64,
    },
    time_column="event_time",
    key=("model_id", "event_time", "event_id"),
)

JOINED_LABELS = TableSpec(
    "joined_labels",
    {
        "prediction_id": "String",
        "outcome_id": "String",
        "model_id": LC,
        "model_version": LC,
        "segments": SMAP,
        "prediction_time": TIME,
        "outcome_time": TIME,
        "label_delay_ms": "Int64",
        "prediction_label": NSTR,
        "prediction_score": NF64,
        "prediction_value": NF64,
        "label": NSTR,
        "value": NF64,
        "correct": "Nullable(UInt8)",
        "error": NF64,
        "squared_error": NF64,
    },
    time_column="prediction_time",
    key=("model_id", "prediction_time", "outcome_id"),
)

DETECTOR_STATS = TableSpec(
    "detector_stats",
    {
        "model_id": LC,
        "stream_kind": LC,
        "stream_name": LC,
        "detector": LC,
        "time": TIME,
        "n_values": "UInt64",
        "estimate": NF64,
        "statistic": NF64,
        "p_value": NF64,
        "drift": "UInt8",
    },
    time_column="time",
    key=("model_id", "stream_kind", "stream_name", "detector", "time"),
)

DRIFT_EVENTS = TableSpec(
    "drift_events",
    {
        "event_id": "String",
        "model_id": LC,
        "model_version": LC,
        "stream_kind": LC,
        "stream_name": LC,
        "detector": LC,
        "detected_at": TIME,
        "position": "Int64",
        "statistic": NF64,
        "p_value": NF64,
        "threshold": NF64,
        "evidence": SMAP,
        "source_event_id": "String",
    },
    time_column="detected_at",
    key=("model_id", "detected_at", "event_id"),
    # evidence['segment'] (migration 0011): the segment of a window's drift, '' otherwise
    server_defaults={"segment": LC, "ingested_at": TIME},
)

RETRAINING_REQUESTS = TableSpec(
    "retraining_requests",
    {
        "event_id": "String",
        "model_id": LC,
        "model_version": LC,
        "requested_at": TIME,
        "reason": "String",
        "trigger_event_ids": "Array(String)",
        "window_start": TIME,
        "window_end": TIME,
        "priority": LC,
        "policy": LC,
    },
    time_column="requested_at",
    key=("model_id", "requested_at", "event_id"),
)

# One row per alert state change (streams/alerting.py ``alert_row``); the API reads it.
ALERTS = TableSpec(
    "alerts",
    {
        "fingerprint": "String",
        "rule_id": "String",
        "rule_version": "UInt64",
        "alertname": "String",
        "model_id": LC,
        "severity": LC,
        "state": LC,
        "labels": SMAP,
        "annotations": SMAP,
        "value": NF64,
        "starts_at": TIME,
        "ends_at": f"Nullable({TIME})",
        "updated_at": TIME,
        "trigger_event_ids": "Array(String)",
        "event_id": "String",
        "silenced": "UInt8",
        "silence_ids": "Array(String)",
        "acknowledged": "UInt8",
        "notify": "Array(String)",
        "inhibited_by": NSTR,
    },
    time_column="updated_at",
    key=("model_id", "fingerprint", "updated_at", "state"),
)

# Window tests against the reference and data-quality tests (streams/profiles.py
# ``window_rows``): one row per (window, column, test); both tables share one layout.
_WINDOW_TEST_COLUMNS = {
    "model_id": LC,
    "model_version": LC,
    "window_index": "UInt64",
    "window_start": TIME,
    "window_end": TIME,
    "first_position": "UInt64",
    "last_position": "UInt64",
    "stream_kind": LC,
    "feature": LC,
    "column_kind": LC,
    "test": LC,
    "statistic": NF64,
    "p_value": NF64,
    "threshold": "Float64",
    "n_reference": "UInt64",
    "n_current": "UInt64",
    "insufficient_data": "UInt8",
    "drifted": "UInt8",
    "reference_id": LC,
    "reference_version": LC,
    "reference_source": LC,
    "segment": LC,  # '' = all traffic, else 'key=value' (migration 0011)
}
_WINDOW_TEST_KEY = ("model_id", "window_end", "window_index", "feature", "test", "segment")
FEATURE_DRIFT = TableSpec(
    "feature_drift", dict(_WINDOW_TEST_COLUMNS), "window_end", _WINDOW_TEST_KEY
)
DATA_QUALITY = TableSpec("data_quality", dict(_WINDOW_TEST_COLUMNS), "window_end", _WINDOW_TEST_KEY)

# The references windows are tested against (streams/profiles.py ``reference_rows``): one row
# per (reference, column), keyed by the profile's content hash.
REFERENCE_PROFILES = TableSpec(
    "reference_profiles",
    {
        "model_id": LC,
        "reference_id": "String",
        "reference_version": LC,
        "reference_source": LC,
        "uploaded_at": TIME,
        "uploaded_by": "String",
        "n_events": "UInt64",
        "stream_kind": LC,
        "feature": LC,
        "column_kind": LC,
        "n_present": "UInt64",
        "n_missing": "UInt64",
        "missing_rate": "Float64",
        "min": NF64,
        "max": NF64,
        "std": NF64,
        "top_share": "Float64",
        "quantiles": "Array(Float64)",
        "bin_counts": "Array(UInt64)",
        "categories": "Map(String, UInt64)",
        "in_multivariate": "UInt8",
        "segment": LC,
    },
    time_column="uploaded_at",
    key=("model_id", "reference_id", "feature"),
)

# CBPE estimates per model and event-time window (streams/estimates.py ``estimate_rows``).
PERFORMANCE_ESTIMATES = TableSpec(
    "performance_estimates",
    {
        "event_id": "String",
        "model_id": LC,
        "model_version": LC,
        "method": LC,
        "window_start": TIME,
        "window_end": TIME,
        "window_ms": "UInt64",
        "n_predictions": "UInt64",
        "n_late": "UInt64",
        "estimated_accuracy": "Float64",
        "accuracy_std_error": "Float64",
        "estimated_precision": NF64,
        "estimated_recall": NF64,
        "estimated_f1": NF64,
        "expected_tp": NF64,
        "expected_fp": NF64,
        "expected_fn": NF64,
        "expected_tn": NF64,
        "positive_label": NSTR,
        "calibration_size": "UInt64",
        "calibration_versions": "Array(String)",
        "n_borrowed": "UInt64",
    },
    time_column="window_end",
    key=("model_id", "window_end", "event_id"),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        PREDICTIONS,
        OUTCOMES,
        JOINED_LABELS,
        DETECTOR_STATS,
        DRIFT_EVENTS,
        RETRAINING_REQUESTS,
        ALERTS,
        FEATURE_DRIFT,
        DATA_QUALITY,
        REFERENCE_PROFILES,
        PERFORMANCE_ESTIMATES,
    )
}


def _empty(ch_type: str) -> Any:
    """What a missing field becomes, or a sentinel for 'required'."""
    if ch_type.startswith("Nullable("):
        return None
    if ch_type.startswith("Map("):
        return {}
    if ch_type.startswith("Array("):
        return []
    return _REQUIRED


_REQUIRED = object()


def columns_for(table: str, events: Iterable[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Decoded event dicts (contract field names, times in epoch ms) -> columns for ``table``.

    Extra fields are ignored; a missing nullable/map/array field becomes null/empty; a missing
    required field raises ``ValueError`` naming the row, before anything reaches ClickHouse.
    Null Avro maps (``probabilities``) become empty maps.
    """
    spec = TABLES[table]
    events = events if isinstance(events, list) else list(events)
    columns: dict[str, list[Any]] = {}
    for name, ch_type in spec.columns.items():
        default = _empty(ch_type)
        if default is _REQUIRED:
            values = [event.get(name) for event in events]
            if None in values:
                i = values.index(None)
                raise ValueError(f"{table} row {i}: required field {name!r} is missing")
        elif default is None:
            values = [event.get(name) for event in events]
        else:
            # maps and arrays: null or missing -> empty
            values = [event.get(name) or default for event in events]
        columns[name] = values
    return columns


def joined_label(prediction: Mapping[str, Any], outcome: Mapping[str, Any]) -> dict[str, Any]:
    """The ``joined_labels`` row for an outcome and its prediction (both decoded events).

    Classification (both labels present): ``correct`` is 1/0 and ``error`` the 0-1 loss.
    Regression (both values present): ``error`` is the absolute error. Otherwise the metric
    columns are null and the row still counts towards label coverage.

    >>> row = joined_label({"event_id": "p", "model_id": "m", "model_version": "1",
    ...                     "event_time": 1000, "prediction_value": 2.5},
    ...                    {"event_id": "o", "event_time": 4000, "value": 1.0})
    >>> row["label_delay_ms"], row["error"], row["squared_error"], row["correct"]
    (3000, 1.5, 2.25, None)
    """
    correct = error = squared = None
    predicted_label, label = prediction.get("prediction_label"), outcome.get("label")
    predicted_value, value = prediction.get("prediction_value"), outcome.get("value")
    if predicted_label is not None and label is not None:
        correct = int(predicted_label == label)
        error = squared = float(1 - correct)
    elif predicted_value is not None and value is not None:
        diff = float(predicted_value) - float(value)
        if math.isfinite(diff):
            error, squared = abs(diff), diff * diff
    return {
        "prediction_id": prediction["event_id"],
        "outcome_id": outcome["event_id"],
        "model_id": prediction["model_id"],
        "model_version": prediction["model_version"],
        "segments": prediction.get("segments") or {},
        "prediction_time": prediction["event_time"],
        "outcome_time": outcome["event_time"],
        "label_delay_ms": int(outcome["event_time"]) - int(prediction["event_time"]),
        "prediction_label": predicted_label,
        "prediction_score": prediction.get("prediction_score"),
        "prediction_value": predicted_value,
        "label": label,
        "value": value,
        "correct": correct,
        "error": error,
        "squared_error": squared,
    }
