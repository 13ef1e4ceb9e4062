"""Events as columns: many predictions (or outcomes) of one model in numpy/Arrow arrays.

This is the in-memory form of the PredictionBatch/OutcomeBatch records and the worker's hot
path from decode to ClickHouse insert: no per-event Python objects. Conventions:

* strings are Arrow ``string`` arrays (ids non-null; features, segments, labels nullable);
* numbers are float64 numpy arrays where **NaN means absent/null** (Avro ``null``);
* numeric features and class probabilities are C-contiguous ``(n, k)`` matrices with one
  column per name (``numeric_names`` / ``probability_names``);
* times are int64 epoch milliseconds.

``from_records`` / ``to_records`` convert from and to the single-event dict form that
``Codec.decode`` returns (slow; for single-event traffic, tests and debugging).

>>> cols = PredictionColumns.from_records("churn", [
...     {"event_id": "p1", "model_id": "churn", "model_version": "1", "event_time": 5,
...      "numeric_features": {"age": 42.0}, "categorical_features": {"plan": "gold"},
...      "segments": {}, "prediction_label": "yes", "prediction_score": 0.8,
...      "prediction_value": None, "probabilities": None}])
>>> len(cols), cols.numeric_names, cols.numeric.tolist()
(1, ('age',), [[42.0]])
>>> cols.to_records()[0]["categorical_features"]
{'plan': 'gold'}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = [
    "OutcomeColumns",
    "PredictionColumns",
    "RowError",
    "split_columns",
    "string_array",
]

_NAN = float("nan")
_STRING = pa.string()


@dataclass(frozen=True)
class RowError:
    """One bad row inside a batch record; the rest of the batch stays usable."""

    row: int  # index in the decoded columns
    reason: str  # a DLQ reason code from schemas.topics
    detail: str


def string_array(values: Any) -> pa.Array:
    """An Arrow ``string`` array from a list, numpy array or Arrow (chunked) array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if isinstance(values, pa.Array):
        return values if values.type == _STRING else values.cast(_STRING)
    return pa.array(values, _STRING)


def _nan_where_missing(values: Sequence[Any]) -> np.ndarray:
    # None -> NaN in one C call (numpy converts None to nan for float dtypes).
    return np.array(values, dtype=np.float64) if values else np.empty(0, np.float64)


def _matrix_from_maps(
    maps: Sequence[Mapping[str, float] | None],
) -> tuple[tuple[str, ...], np.ndarray]:
    names: dict[str, None] = {}
    for m in maps:
        if m:
            names.update(dict.fromkeys(m))
    order = tuple(names)
    matrix = np.full((len(maps), len(order)), np.nan)
    for j, name in enumerate(order):
        matrix[:, j] = [_NAN if not m else m.get(name, _NAN) for m in maps]
    return order, matrix


def _strings_from_maps(maps: Sequence[Mapping[str, str] | None]) -> dict[str, pa.Array]:
    names: dict[str, None] = {}
    for m in maps:
        if m:
            names.update(dict.fromkeys(m))
    return {
        name: pa.array([None if not m else m.get(name) for m in maps], _STRING) for name in names
    }


def _concat_matrix(
    parts: Sequence[tuple[tuple[str, ...], np.ndarray]], n: int
) -> tuple[tuple[str, ...], np.ndarray]:
    names: dict[str, None] = {}
    for part_names, _ in parts:
        names.update(dict.fromkeys(part_names))
    order = tuple(names)
    if all(part_names == order for part_names, _ in parts):
        return order, np.ascontiguousarray(np.concatenate([m for _, m in parts]))
    index = {name: j for j, name in enumerate(order)}
    out = np.full((n, len(order)), np.nan)
    start = 0
    for part_names, matrix in parts:
        stop = start + len(matrix)
        if part_names:
            out[start:stop, [index[name] for name in part_names]] = matrix
        start = stop
    return order, out


def _concat_strings(parts: Sequence[tuple[int, Mapping[str, pa.Array]]]) -> dict[str, pa.Array]:
    names: dict[str, None] = {}
    for _, part in parts:
        names.update(dict.fromkeys(part))
    return {
        name: pa.concat_arrays(
            [part[name] if name in part else pa.nulls(n, _STRING) for n, part in parts]
        )
        for name in names
    }


def _check_lengths(kind: str, n: int, named: Mapping[str, Any]) -> None:
    for name, values in named.items():
        if len(values) != n:
            raise ValueError(f"{kind}: column {name!r} has {len(values)} rows, expected {n}")


@dataclass(frozen=True)
class PredictionColumns:
    """``n`` predictions of one model as columns (see the module docstring for conventions)."""

    model_id: str
    event_id: pa.Array
    model_version: pa.Array
    event_time: np.ndarray
    numeric_names: tuple[str, ...]
    numeric: np.ndarray
    categorical: dict[str, pa.Array]
    segments: dict[str, pa.Array]
    prediction_label: pa.Array
    prediction_score: np.ndarray
    prediction_value: np.ndarray
    probability_names: tuple[str, ...]
    probabilities: np.ndarray

    def __post_init__(self) -> None:
        # Cheap shape checks only: a misaligned batch is a bug that must fail where it is made.
        n = len(self.event_id)
        _check_lengths(
            "PredictionColumns",
            n,
            {
                "model_version": self.model_version,
                "event_time": self.event_time,
                "numeric": self.numeric,
                "prediction_label": self.prediction_label,
                "prediction_score": self.prediction_score,
                "prediction_value": self.prediction_value,
                "probabilities": self.probabilities,
                **{f"categorical[{k!r}]": v for k, v in self.categorical.items()},
                **{f"segments[{k!r}]": v for k, v in self.segments.items()},
            },
        )
        for field, matrix, names in (
            ("numeric", self.numeric, self.numeric_names),
            ("probabilities", self.probabilities, self.probability_names),
        ):
            if matrix.ndim != 2 or matrix.shape[1] != len(names) or matrix.dtype != np.float64:
                raise ValueError(
                    f"PredictionColumns.{field}: expected float64 (n, {len(names)}), "
                    f"got {matrix.dtype} {matrix.shape}"
                )

    def __len__(self) -> int:
        return len(self.event_id)

    @property
    def nbytes(self) -> int:
        """Rough memory held (for buffering bounds)."""
        return (
            self.event_id.nbytes + self.model_version.nbytes + self.event_time.nbytes
            + self.numeric.nbytes + self.probabilities.nbytes + self.prediction_label.nbytes
            + sum(a.nbytes for a in self.categorical.values())
            + sum(a.nbytes for a in self.segments.values())
        )  # fmt: skip

    def take(self, indices: np.ndarray) -> PredictionColumns:
        """The rows at ``indices`` (any int array; order kept, repeats allowed)."""
        idx = np.asarray(indices, dtype=np.int64)
        arrow_idx = pa.array(idx)
        return PredictionColumns(
            model_id=self.model_id,
            event_id=self.event_id.take(arrow_idx),
            model_version=self.model_version.take(arrow_idx),
            event_time=self.event_time[idx],
            numeric_names=self.numeric_names,
            numeric=np.ascontiguousarray(self.numeric[idx]),
            categorical={k: v.take(arrow_idx) for k, v in self.categorical.items()},
            segments={k: v.take(arrow_idx) for k, v in self.segments.items()},
            prediction_label=self.prediction_label.take(arrow_idx),
            prediction_score=self.prediction_score[idx],
            prediction_value=self.prediction_value[idx],
            probability_names=self.probability_names,
            probabilities=np.ascontiguousarray(self.probabilities[idx]),
        )

    def slice(self, start: int, stop: int) -> PredictionColumns:
        """Rows ``start:stop`` (views where possible)."""
        return PredictionColumns(
            model_id=self.model_id,
            event_id=self.event_id.slice(start, stop - start),
            model_version=self.model_version.slice(start, stop - start),
            event_time=self.event_time[start:stop],
            numeric_names=self.numeric_names,
            numeric=self.numeric[start:stop],
            categorical={k: v.slice(start, stop - start) for k, v in self.categorical.items()},
            segments={k: v.slice(start, stop - start) for k, v in self.segments.items()},
            prediction_label=self.prediction_label.slice(start, stop - start),
            prediction_score=self.prediction_score[start:stop],
            prediction_value=self.prediction_value[start:stop],
            probability_names=self.probability_names,
            probabilities=self.probabilities[start:stop],
        )

    @classmethod
    def concat(cls, parts: Sequence[PredictionColumns]) -> PredictionColumns:
        """One batch from several of the same model; names are united, missing -> NaN/null."""
        if not parts:
            raise ValueError("concat needs at least one part")
        if len(parts) == 1:
            return parts[0]
        model_ids = {p.model_id for p in parts}
        if len(model_ids) != 1:
            raise ValueError(f"concat of different models: {sorted(model_ids)}")
        n = sum(len(p) for p in parts)
        numeric_names, numeric = _concat_matrix([(p.numeric_names, p.numeric) for p in parts], n)
        probability_names, probabilities = _concat_matrix(
            [(p.probability_names, p.probabilities) for p in parts], n
        )
        return cls(
            model_id=parts[0].model_id,
            event_id=pa.concat_arrays([p.event_id for p in parts]),
            model_version=pa.concat_arrays([p.model_version for p in parts]),
            event_time=np.concatenate([p.event_time for p in parts]),
            numeric_names=numeric_names,
            numeric=numeric,
            categorical=_concat_strings([(len(p), p.categorical) for p in parts]),
            segments=_concat_strings([(len(p), p.segments) for p in parts]),
            prediction_label=pa.concat_arrays([p.prediction_label for p in parts]),
            prediction_score=np.concatenate([p.prediction_score for p in parts]),
            prediction_value=np.concatenate([p.prediction_value for p in parts]),
            probability_names=probability_names,
            probabilities=probabilities,
        )

    @classmethod
    def from_records(cls, model_id: str, records: Sequence[Mapping[str, Any]]) -> PredictionColumns:
        """Columns from decoded (already validated) PredictionEvent dicts of ``model_id``."""
        numeric_names, numeric = _matrix_from_maps([r.get("numeric_features") for r in records])
        probability_names, probabilities = _matrix_from_maps(
            [r.get("probabilities") for r in records]
        )
        return cls(
            model_id=model_id,
            event_id=pa.array([r["event_id"] for r in records], _STRING),
            model_version=pa.array([r["model_version"] for r in records], _STRING),
            event_time=np.array([r["event_time"] for r in records], dtype=np.int64),
            numeric_names=numeric_names,
            numeric=numeric,
            categorical=_strings_from_maps([r.get("categorical_features") for r in records]),
            segments=_strings_from_maps([r.get("segments") for r in records]),
            prediction_label=pa.array([r.get("prediction_label") for r in records], _STRING),
            prediction_score=_nan_where_missing([r.get("prediction_score") for r in records]),
            prediction_value=_nan_where_missing([r.get("prediction_value") for r in records]),
            probability_names=probability_names,
            probabilities=probabilities,
        )

    def to_records(self) -> list[dict[str, Any]]:
        """The single-event dict form, one per row (slow; tests and debugging).

        Absent entries are left out of the maps; ``probabilities`` is None for a row with none.
        """
        numeric = _rows_of_matrix(self.numeric_names, self.numeric)
        probabilities = _rows_of_matrix(self.probability_names, self.probabilities)
        categorical = _rows_of_strings(self.categorical, len(self))
        segments = _rows_of_strings(self.segments, len(self))
        return [
            {
                "event_id": event_id,
                "model_id": self.model_id,
                "model_version": version,
                "event_time": int(event_time),
                "numeric_features": numeric[i],
                "categorical_features": categorical[i],
                "segments": segments[i],
                "prediction_label": label,
                "prediction_score": _opt(score),
                "prediction_value": _opt(value),
                "probabilities": probabilities[i] or None,
            }
            for i, (event_id, version, event_time, label, score, value) in enumerate(
                zip(
                    self.event_id.to_pylist(),
                    self.model_version.to_pylist(),
                    self.event_time.tolist(),
                    self.prediction_label.to_pylist(),
                    self.prediction_score.tolist(),
                    self.prediction_value.tolist(),
                    strict=True,
                )
            )
        ]


@dataclass(frozen=True)
class OutcomeColumns:
    """``n`` outcomes of one model as columns."""

    model_id: str
    event_id: pa.Array
    prediction_id: pa.Array
    event_time: np.ndarray
    label: pa.Array
    value: np.ndarray

    def __post_init__(self) -> None:
        _check_lengths(
            "OutcomeColumns",
            len(self.event_id),
            {
                "prediction_id": self.prediction_id,
                "event_time": self.event_time,
                "label": self.label,
                "value": self.value,
            },
        )

    def __len__(self) -> int:
        return len(self.event_id)

    @property
    def nbytes(self) -> int:
        return (
            self.event_id.nbytes + self.prediction_id.nbytes + self.event_time.nbytes
            + self.label.nbytes + self.value.nbytes
        )  # fmt: skip

    def take(self, indices: np.ndarray) -> OutcomeColumns:
        idx = np.asarray(indices, dtype=np.int64)
        arrow_idx = pa.array(idx)
        return OutcomeColumns(
            model_id=self.model_id,
            event_id=self.event_id.take(arrow_idx),
            prediction_id=self.prediction_id.take(arrow_idx),
            event_time=self.event_time[idx],
            label=self.label.take(arrow_idx),
            value=self.value[idx],
        )

    def slice(self, start: int, stop: int) -> OutcomeColumns:
        length = stop - start
        return OutcomeColumns(
            model_id=self.model_id,
            event_id=self.event_id.slice(start, length),
            prediction_id=self.prediction_id.slice(start, length),
            event_time=self.event_time[start:stop],
            label=self.label.slice(start, length),
            value=self.value[start:stop],
        )

    @classmethod
    def concat(cls, parts: Sequence[OutcomeColumns]) -> OutcomeColumns:
        if not parts:
            raise ValueError("concat needs at least one part")
        if len(parts) == 1:
            return parts[0]
        model_ids = {p.model_id for p in parts}
        if len(model_ids) != 1:
            raise ValueError(f"concat of different models: {sorted(model_ids)}")
        return cls(
            model_id=parts[0].model_id,
            event_id=pa.concat_arrays([p.event_id for p in parts]),
            prediction_id=pa.concat_arrays([p.prediction_id for p in parts]),
            event_time=np.concatenate([p.event_time for p in parts]),
            label=pa.concat_arrays([p.label for p in parts]),
            value=np.concatenate([p.value for p in parts]),
        )

    @classmethod
    def from_records(cls, model_id: str, records: Sequence[Mapping[str, Any]]) -> OutcomeColumns:
        """Columns from decoded (already validated) OutcomeEvent dicts of ``model_id``."""
        return cls(
            model_id=model_id,
            event_id=pa.array([r["event_id"] for r in records], _STRING),
            prediction_id=pa.array([r["prediction_id"] for r in records], _STRING),
            event_time=np.array([r["event_time"] for r in records], dtype=np.int64),
            label=pa.array([r.get("label") for r in records], _STRING),
            value=_nan_where_missing([r.get("value") for r in records]),
        )

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {
                "event_id": event_id,
                "prediction_id": prediction_id,
                "model_id": self.model_id,
                "event_time": int(event_time),
                "label": label,
                "value": _opt(value),
            }
            for event_id, prediction_id, event_time, label, value in zip(
                self.event_id.to_pylist(),
                self.prediction_id.to_pylist(),
                self.event_time.tolist(),
                self.label.to_pylist(),
                self.value.tolist(),
                strict=True,
            )
        ]


def _opt(value: float) -> float | None:
    return None if value != value else value


def _rows_of_matrix(names: tuple[str, ...], matrix: np.ndarray) -> list[dict[str, float]]:
    rows = matrix.tolist()
    return [{k: v for k, v in zip(names, row, strict=True) if v == v} for row in rows]


def _rows_of_strings(columns: Mapping[str, pa.Array], n: int) -> list[dict[str, str]]:
    out: list[dict[str, str]] = [{} for _ in range(n)]
    for name, array in columns.items():
        for row, value in zip(out, array.to_pylist(), strict=True):
            if value is not None:
                row[name] = value
    return out


def _string_bytes(array: pa.Array) -> np.ndarray:
    """UTF-8 bytes per row (0 for null), vectorised from the Arrow offsets."""
    if len(array) == 0:
        return np.zeros(0, np.int64)
    offsets = np.frombuffer(array.buffers()[1], np.int32, len(array) + 1, array.offset * 4)
    return np.diff(offsets).astype(np.int64)


def _row_bytes(cols: PredictionColumns | OutcomeColumns) -> np.ndarray:
    """An upper-bound estimate of each row's encoded size (for splitting by bytes)."""
    if isinstance(cols, PredictionColumns):
        strings = [cols.event_id, cols.model_version, cols.prediction_label]
        strings += [*cols.categorical.values(), *cols.segments.values()]
        fixed = 11 + 9 * (cols.numeric.shape[1] + cols.probabilities.shape[1] + 2)
        fixed += 6 * len(strings)
    else:
        strings = [cols.event_id, cols.prediction_id, cols.label]
        fixed = 11 + 9 + 6 * len(strings)
    total = np.full(len(cols), fixed, dtype=np.int64)
    for array in strings:
        total += _string_bytes(array)
    return total


def split_columns(
    cols: PredictionColumns | OutcomeColumns,
    *,
    max_rows: int = 1000,
    max_bytes: int = 900_000,
) -> list[PredictionColumns | OutcomeColumns]:
    """Consecutive slices of at most ``max_rows`` rows and about ``max_bytes`` encoded each.

    The byte bound is an upper estimate, so every slice encodes under ``max_bytes`` unless a
    single row alone is larger (that row then travels alone).

    >>> cols = OutcomeColumns.from_records("m", [{"event_id": f"o{i}", "prediction_id": "p",
    ...     "model_id": "m", "event_time": 0, "label": "a"} for i in range(5)])
    >>> [len(part) for part in split_columns(cols, max_rows=2)]
    [2, 2, 1]
    """
    if max_rows <= 0 or max_bytes <= 0:
        raise ValueError("max_rows and max_bytes must be positive")
    n = len(cols)
    if n <= max_rows and int(_row_bytes(cols).sum()) <= max_bytes:
        return [cols]
    cumulative = np.cumsum(_row_bytes(cols))
    parts = []
    start = 0
    while start < n:
        before = int(cumulative[start - 1]) if start else 0
        stop = int(np.searchsorted(cumulative, before + max_bytes, side="right"))
        stop = max(start + 1, min(stop, start + max_rows, n))
        parts.append(cols.slice(start, stop))
        start = stop
    return parts
