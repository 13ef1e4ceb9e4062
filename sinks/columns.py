"""Insert columns for ``predictions`` and ``outcomes`` straight from decoded batch columns.

The columnar counterpart of :func:`~driftline.sinks.tables.columns_for`: the same rows, built
without per-event Python objects. Maps (features, segments, probabilities) become Arrow
``MapArray``\\ s from offsets + keys + items, leaving out absent entries (NaN numbers, null
strings), exactly as the single-event path stores an event whose map lacks the key.

>>> from driftline.schemas.columns import OutcomeColumns
>>> cols = OutcomeColumns.from_records("m", [{"event_id": "o1", "prediction_id": "p1",
...     "event_time": 1700000000000, "label": None, "value": 2.5}])
>>> out = outcome_insert_columns(cols)
>>> out["model_id"].to_pylist(), out["value"].to_pylist(), out["label"].to_pylist()
(['m'], [2.5], [None])
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
from driftline.schemas.columns import OutcomeColumns, PredictionColumns

__all__ = ["outcome_insert_columns", "prediction_insert_columns"]

_STRING = pa.string()
_F64_MAP = pa.map_(pa.string(), pa.float64())
_STR_MAP = pa.map_(pa.string(), pa.string())


def _repeat(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(n, dtype=np.int32)), pa.array([value], _STRING)
    ).cast(_STRING)


def _nullable(values: np.ndarray) -> pa.Array:
    """float64 with NaN -> null (ClickHouse Nullable(Float64))."""
    return pa.array(values, pa.float64(), mask=np.isnan(values))


def _offsets(present: np.ndarray) -> pa.Array:
    offsets = np.zeros(present.shape[0] + 1, dtype=np.int32)
    np.cumsum(present.sum(axis=1), out=offsets[1:])
    return pa.array(offsets)


def numeric_map(names: tuple[str, ...], matrix: np.ndarray) -> pa.MapArray:
    """``Map(String, Float64)`` rows from an (n, k) matrix; NaN entries are left out.

    >>> numeric_map(("a", "b"), np.array([[1.0, np.nan], [3.0, 4.0]])).to_pylist()
    [[('a', 1.0)], [('a', 3.0), ('b', 4.0)]]
    """
    present = ~np.isnan(matrix)
    _, columns = np.nonzero(present)  # row-major: each row's entries in column order
    keys = pa.array(list(names), _STRING).take(pa.array(columns.astype(np.int32)))
    return pa.MapArray.from_arrays(_offsets(present), keys, pa.array(matrix[present]))


def string_map(columns: Mapping[str, pa.Array], n: int) -> pa.MapArray:
    """``Map(String, String)`` rows from named nullable string columns; nulls are left out."""
    if not columns:
        empty = pa.array([], _STRING)
        return pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), empty, empty)
    names = list(columns)
    arrays = [columns[name] for name in names]
    present = np.empty((n, len(names)), dtype=bool)
    for j, array in enumerate(arrays):
        present[:, j] = (
            True if array.null_count == 0 else array.is_valid().to_numpy(zero_copy_only=False)
        )
    rows, cols = np.nonzero(present)
    keys = pa.array(names, _STRING).take(pa.array(cols.astype(np.int32)))
    # All columns end to end (column-major); entry (row, col) sits at col * n + row.
    items = pa.concat_arrays(arrays).take(pa.array(cols.astype(np.int64) * n + rows))
    return pa.MapArray.from_arrays(_offsets(present), keys, items)


def prediction_insert_columns(cols: PredictionColumns) -> dict[str, np.ndarray | pa.Array]:
    """Columns for the ``predictions`` table (see ``tables.PREDICTIONS``), vectorised."""
    n = len(cols)
    return {
        "event_id": cols.event_id,
        "model_id": _repeat(cols.model_id, n),
        "model_version": cols.model_version,
        "event_time": cols.event_time,
        "numeric_features": numeric_map(cols.numeric_names, cols.numeric),
        "categorical_features": string_map(cols.categorical, n),
        "segments": string_map(cols.segments, n),
        "prediction_label": cols.prediction_label,
        "prediction_score": _nullable(cols.prediction_score),
        "prediction_value": _nullable(cols.prediction_value),
        "probabilities": numeric_map(cols.probability_names, cols.probabilities),
    }


def outcome_insert_columns(cols: OutcomeColumns) -> dict[str, np.ndarray | pa.Array]:
    """Columns for the ``outcomes`` table (see ``tables.OUTCOMES``), vectorised."""
    return {
        "event_id": cols.event_id,
        "prediction_id": cols.prediction_id,
        "model_id": _repeat(cols.model_id, len(cols)),
        "event_time": cols.event_time,
        "label": cols.label,
        "value": _nullable(cols.value),
    }
