"""Batch records (PredictionBatch / OutcomeBatch) <-> columns: the reference conversions.

Decoding has two steps shared by both decoders:

1. bytes -> *raw*: the record's fields with arrays in place of Avro arrays (strings as Arrow
   arrays, doubles as ``(values, valid)`` with null slots 0.0, named columns as
   ``[(name, ...)]`` in wire order). ``raw_from_record`` makes it from fastavro's record (the
   reference); ``batchpath.decode_*_batch`` makes the same from the bytes, fast.
2. raw -> columns + row errors (:func:`prediction_columns_from_raw`,
   :func:`outcome_columns_from_raw`): aligns the columns, turns nulls into NaN, and validates
   every row vectorised. Columns that cannot be aligned (ragged lengths, a name twice) raise
   :class:`InvalidEvent`: the whole message is unusable.

Encoding: :func:`record_from_columns` is the dict fastavro writes; ``batchpath.encode_*``
writes the same bytes fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from driftline.schemas import topics
from driftline.schemas.columns import OutcomeColumns, PredictionColumns, RowError
from driftline.schemas.validation import (
    DEFAULT_MAX_CLASSES,
    DEFAULT_MAX_FEATURES,
    DEFAULT_MAX_SEGMENTS,
    DEFAULT_MAX_STRING_LENGTH,
    InvalidEvent,
    validate_outcome_columns,
    validate_prediction_columns,
)

__all__ = [
    "outcome_columns_from_raw",
    "prediction_columns_from_raw",
    "raw_from_record",
    "record_from_columns",
]

_STRING = pa.string()


def _doubles(values: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    valid = np.array([v is not None for v in values], dtype=bool)
    out = np.array([0.0 if v is None else v for v in values], dtype=np.float64)
    return out.reshape(len(values)), valid.reshape(len(values))


def raw_from_record(name: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The raw form (see the module docstring) of fastavro's decoded batch ``record``."""
    if name == topics.PREDICTION_BATCH:
        label = record["prediction_label"]
        score = record["prediction_score"]
        value = record["prediction_value"]
        return {
            "model_id": record["model_id"],
            "event_id": pa.array(record["event_id"], _STRING),
            "model_version": pa.array(record["model_version"], _STRING),
            "event_time": np.array(record["event_time"], dtype=np.int64).reshape(-1),
            "numeric_features": [
                (c["name"], *_doubles(c["values"])) for c in record["numeric_features"]
            ],
            "categorical_features": [
                (c["name"], pa.array(c["values"], _STRING)) for c in record["categorical_features"]
            ],
            "segments": [(c["name"], pa.array(c["values"], _STRING)) for c in record["segments"]],
            "prediction_label": None if label is None else pa.array(label, _STRING),
            "prediction_score": None if score is None else _doubles(score),
            "prediction_value": None if value is None else _doubles(value),
            "probabilities": [(c["name"], *_doubles(c["values"])) for c in record["probabilities"]],
        }
    if name == topics.OUTCOME_BATCH:
        label = record["label"]
        value = record["value"]
        return {
            "model_id": record["model_id"],
            "event_id": pa.array(record["event_id"], _STRING),
            "prediction_id": pa.array(record["prediction_id"], _STRING),
            "event_time": np.array(record["event_time"], dtype=np.int64).reshape(-1),
            "label": None if label is None else pa.array(label, _STRING),
            "value": None if value is None else _doubles(value),
        }
    raise ValueError(f"{name} is not a batch record")


def _ragged(field: str, got: int, n: int) -> InvalidEvent:
    return InvalidEvent(
        topics.INVALID_VALUE, f"column {field} has {got} items, event_id has {n}: rows cannot align"
    )


def _check(field: str, values: Any, n: int) -> None:
    if len(values) != n:
        raise _ragged(field, len(values), n)


def _unique(field: str, names: Sequence[str]) -> None:
    if len(set(names)) != len(names):
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise InvalidEvent(topics.INVALID_VALUE, f"{field} has column {name[:80]!r} twice")
            seen.add(name)


def _matrix(
    field: str, columns: Sequence[tuple[str, np.ndarray, np.ndarray]], n: int
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray | None]:
    """(names, matrix with NaN for nulls, mask of non-null NaNs or None if there are none)."""
    names = tuple(c[0] for c in columns)
    _unique(field, names)
    matrix = np.empty((n, len(columns)), dtype=np.float64)
    hidden = None
    for j, (name, values, valid) in enumerate(columns):
        _check(f"{field}[{name[:80]!r}]", values, n)
        column = np.where(valid, values, np.nan)
        matrix[:, j] = column
        nan = valid & np.isnan(values)
        if nan.any():
            if hidden is None:
                hidden = np.zeros((n, len(columns)), dtype=bool)
            hidden[:, j] = nan
    return names, matrix, hidden


def _optional(
    field: str, pair: tuple[np.ndarray, np.ndarray] | None, n: int
) -> tuple[np.ndarray, np.ndarray | None]:
    if pair is None:
        return np.full(n, np.nan), None
    values, valid = pair
    _check(field, values, n)
    nan = valid & np.isnan(values)
    return np.where(valid, values, np.nan), (nan if nan.any() else None)


def _strings(field: str, columns: Sequence[tuple[str, pa.Array]], n: int) -> dict[str, pa.Array]:
    _unique(field, [name for name, _ in columns])
    for name, array in columns:
        _check(f"{field}[{name[:80]!r}]", array, n)
    return dict(columns)


def prediction_columns_from_raw(
    raw: Mapping[str, Any],
    *,
    max_features: int = DEFAULT_MAX_FEATURES,
    max_segments: int = DEFAULT_MAX_SEGMENTS,
    max_classes: int = DEFAULT_MAX_CLASSES,
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH,
) -> tuple[PredictionColumns, list[RowError]]:
    """Columns and row errors of a raw PredictionBatch; InvalidEvent if it cannot align."""
    n = len(raw["event_id"])
    _check("model_version", raw["model_version"], n)
    _check("event_time", raw["event_time"], n)
    numeric_names, numeric, numeric_nan = _matrix("numeric_features", raw["numeric_features"], n)
    probability_names, probabilities, probability_nan = _matrix(
        "probabilities", raw["probabilities"], n
    )
    label = raw["prediction_label"]
    if label is None:
        label = pa.nulls(n, _STRING)
    _check("prediction_label", label, n)
    score, score_nan = _optional("prediction_score", raw["prediction_score"], n)
    value, value_nan = _optional("prediction_value", raw["prediction_value"], n)
    cols = PredictionColumns(
        model_id=raw["model_id"],
        event_id=raw["event_id"],
        model_version=raw["model_version"],
        event_time=raw["event_time"],
        numeric_names=numeric_names,
        numeric=numeric,
        categorical=_strings("categorical_features", raw["categorical_features"], n),
        segments=_strings("segments", raw["segments"], n),
        prediction_label=label,
        prediction_score=score,
        prediction_value=value,
        probability_names=probability_names,
        probabilities=probabilities,
    )
    hidden = {
        field: mask
        for field, mask in (
            ("numeric_features", numeric_nan),
            ("probabilities", probability_nan),
            ("prediction_score", score_nan),
            ("prediction_value", value_nan),
        )
        if mask is not None
    }
    errors = validate_prediction_columns(
        cols,
        non_finite=hidden,
        max_features=max_features,
        max_segments=max_segments,
        max_classes=max_classes,
        max_string_length=max_string_length,
    )
    return cols, errors


def outcome_columns_from_raw(
    raw: Mapping[str, Any], *, max_string_length: int = DEFAULT_MAX_STRING_LENGTH
) -> tuple[OutcomeColumns, list[RowError]]:
    """Columns and row errors of a raw OutcomeBatch; InvalidEvent if it cannot align."""
    n = len(raw["event_id"])
    _check("prediction_id", raw["prediction_id"], n)
    _check("event_time", raw["event_time"], n)
    label = raw["label"]
    if label is None:
        label = pa.nulls(n, _STRING)
    _check("label", label, n)
    value, value_nan = _optional("value", raw["value"], n)
    cols = OutcomeColumns(
        model_id=raw["model_id"],
        event_id=raw["event_id"],
        prediction_id=raw["prediction_id"],
        event_time=raw["event_time"],
        label=label,
        value=value,
    )
    errors = validate_outcome_columns(
        cols,
        non_finite=None if value_nan is None else {"value": value_nan},
        max_string_length=max_string_length,
    )
    return cols, errors


def _optional_list(values: np.ndarray) -> list[float | None] | None:
    if np.isnan(values).all():
        return None
    return [None if v != v else v for v in values.tolist()]


def _named_doubles(names: tuple[str, ...], matrix: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"name": name, "values": [None if v != v else v for v in matrix[:, j].tolist()]}
        for j, name in enumerate(names)
    ]


def record_from_columns(cols: PredictionColumns | OutcomeColumns) -> tuple[str, dict[str, Any]]:
    """``(record name, dict)`` that fastavro encodes to the batch record of ``cols``.

    NaN becomes null; an all-null optional column becomes a null field.
    """
    if isinstance(cols, OutcomeColumns):
        label = cols.label.to_pylist()
        return topics.OUTCOME_BATCH, {
            "model_id": cols.model_id,
            "event_id": cols.event_id.to_pylist(),
            "prediction_id": cols.prediction_id.to_pylist(),
            "event_time": cols.event_time.tolist(),
            "label": None if cols.label.null_count == len(cols) else label,
            "value": _optional_list(cols.value),
        }
    return topics.PREDICTION_BATCH, {
        "model_id": cols.model_id,
        "event_id": cols.event_id.to_pylist(),
        "model_version": cols.model_version.to_pylist(),
        "event_time": cols.event_time.tolist(),
        "numeric_features": _named_doubles(cols.numeric_names, cols.numeric),
        "categorical_features": [
            {"name": k, "values": v.to_pylist()} for k, v in cols.categorical.items()
        ],
        "segments": [{"name": k, "values": v.to_pylist()} for k, v in cols.segments.items()],
        "prediction_label": (
            None
            if cols.prediction_label.null_count == len(cols)
            else cols.prediction_label.to_pylist()
        ),
        "prediction_score": _optional_list(cols.prediction_score),
        "prediction_value": _optional_list(cols.prediction_value),
        "probabilities": _named_doubles(cols.probability_names, cols.probabilities),
    }
