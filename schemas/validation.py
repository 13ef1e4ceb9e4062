"""Semantic checks Avro cannot express: finite numbers, non-empty ids, bounded sizes.

Run by producers before sending (the SDK turns failures into ValueError for the caller) and by
workers after decoding (failures go to the DLQ with ``reason``). ``validate_prediction`` and
``validate_outcome`` take a plain record dict as the codec produces it (times as int millis);
``validate_prediction_columns`` and ``validate_outcome_columns`` check a whole batch in
columns, vectorised, and return one :class:`RowError` per bad row: the reason the row would
get as a single event (same checks, same order, same caps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from driftline.schemas import topics
from driftline.schemas.columns import OutcomeColumns, PredictionColumns, RowError

__all__ = [
    "DEFAULT_MAX_FEATURES",
    "DEFAULT_MAX_STRING_LENGTH",
    "InvalidEvent",
    "validate_outcome",
    "validate_outcome_columns",
    "validate_prediction",
    "validate_prediction_columns",
]

DEFAULT_MAX_FEATURES = 1000
DEFAULT_MAX_SEGMENTS = 32
DEFAULT_MAX_CLASSES = 1000
DEFAULT_MAX_STRING_LENGTH = 1024


class InvalidEvent(ValueError):
    """A well-formed record with a value driftline refuses; ``reason`` is a DLQ reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _id(record: Mapping[str, Any], field: str, max_len: int) -> None:
    value = record.get(field)
    if value is None or value == "":
        raise InvalidEvent(topics.MISSING_FIELD, f"{field} is empty")
    if not isinstance(value, str):
        raise InvalidEvent(topics.INVALID_VALUE, f"{field} must be a string, got {value!r:.80}")
    if len(value) > max_len:
        raise InvalidEvent(topics.TOO_LARGE, f"{field} has {len(value)} chars > {max_len}")


def _time(record: Mapping[str, Any], field: str) -> None:
    value = record.get(field)
    if value is None:
        raise InvalidEvent(topics.MISSING_FIELD, f"{field} is missing")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEvent(
            topics.INVALID_VALUE, f"{field} must be epoch milliseconds >= 0, got {value!r:.80}"
        )


def _finite_map(values: Mapping[str, Any], field: str) -> None:
    # Fast path: a finite sum proves every term finite (NaN and inf propagate through +).
    try:
        if math.isfinite(sum(values.values())):
            return
    except TypeError:
        pass
    for key, value in values.items():
        # bools count as 0/1, as in sum(): validation is about values, Avro about types.
        if not isinstance(value, int | float):
            raise InvalidEvent(
                topics.INVALID_VALUE, f"{field}[{key!r}] is not a number: {value!r:.80}"
            )
        if not math.isfinite(value):
            raise InvalidEvent(topics.NON_FINITE_VALUE, f"{field}[{key!r}] = {value}")


def _finite(record: Mapping[str, Any], field: str) -> None:
    value = record.get(field)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(topics.INVALID_VALUE, f"{field} is not a number: {value!r:.80}")
    if not math.isfinite(value):
        raise InvalidEvent(topics.NON_FINITE_VALUE, f"{field} = {value}")


def _strings(values: Mapping[str, Any], field: str, max_len: int) -> None:
    for key, value in values.items():
        if not isinstance(value, str):
            raise InvalidEvent(topics.INVALID_VALUE, f"{field}[{key!r}] is not a string")
        if len(key) > max_len or len(value) > max_len:
            raise InvalidEvent(topics.TOO_LARGE, f"{field}[{key[:80]!r}] longer than {max_len}")


def _map(record: Mapping[str, Any], field: str) -> Mapping[str, Any]:
    value = record.get(field)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEvent(topics.INVALID_VALUE, f"{field} must be a map")
    return value


def validate_prediction(
    record: Mapping[str, Any],
    *,
    max_features: int = DEFAULT_MAX_FEATURES,
    max_segments: int = DEFAULT_MAX_SEGMENTS,
    max_classes: int = DEFAULT_MAX_CLASSES,
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH,
) -> None:
    """Raise InvalidEvent unless ``record`` is a PredictionEvent driftline can monitor.

    >>> try:
    ...     validate_prediction({"event_id": "p1", "model_id": "m", "model_version": "1",
    ...         "event_time": 0, "numeric_features": {"age": float("nan")}})
    ... except InvalidEvent as exc:
    ...     print(exc.reason, "|", exc.detail)
    non_finite_value | numeric_features['age'] = nan
    """
    # Nearly every event is valid: a few C-level checks accept it; anything they doubt goes
    # through the detailed checks, which find the reason (or accept it after all).
    if _looks_valid_prediction(record, max_features, max_segments, max_classes, max_string_length):
        return
    _check_prediction(record, max_features, max_segments, max_classes, max_string_length)


def _looks_valid_prediction(
    record: Mapping[str, Any],
    max_features: int,
    max_segments: int,
    max_classes: int,
    max_len: int,
) -> bool:
    get = record.get
    event_id, model_id, version = get("event_id"), get("model_id"), get("model_version")
    event_time = get("event_time")
    numeric, categorical, segments = (
        get("numeric_features"), get("categorical_features"), get("segments")
    )  # fmt: skip
    if not (
        type(event_id) is str and type(model_id) is str and type(version) is str
        and event_id and model_id and version
        and max(len(event_id), len(model_id), len(version)) <= max_len
        and type(event_time) is int and event_time >= 0
        and type(numeric) is dict and type(categorical) is dict and type(segments) is dict
        and len(numeric) + len(categorical) <= max_features and len(segments) <= max_segments
    ):  # fmt: skip
        return False
    try:
        # sum() refuses non-numbers and carries NaN/inf; a short join bounds every length.
        if numeric and not (
            math.isfinite(sum(numeric.values())) and len("".join(numeric)) <= max_len
        ):
            return False
        for strings in (categorical, segments):
            if strings and not (
                len("".join(strings)) <= max_len and len("".join(strings.values())) <= max_len
            ):
                return False
    except TypeError:
        return False
    label = get("prediction_label")
    if label is not None and not (type(label) is str and len(label) <= max_len):
        return False
    for field in ("prediction_score", "prediction_value"):
        value = get(field)
        if value is not None and not (type(value) is float and math.isfinite(value)):
            return False
    probabilities = get("probabilities")
    return probabilities is None or (
        type(probabilities) is dict
        and len(probabilities) <= max_classes
        and _finite_sum(probabilities.values())
    )


def _finite_sum(values: Any) -> bool:
    try:
        return math.isfinite(sum(values))
    except TypeError:
        return False


def _check_prediction(
    record: Mapping[str, Any],
    max_features: int,
    max_segments: int,
    max_classes: int,
    max_string_length: int,
) -> None:
    for field in ("event_id", "model_id", "model_version"):
        _id(record, field, max_string_length)
    _time(record, "event_time")
    numeric = _map(record, "numeric_features")
    categorical = _map(record, "categorical_features")
    segments = _map(record, "segments")
    n_features = len(numeric) + len(categorical)
    if n_features > max_features:
        raise InvalidEvent(topics.TOO_LARGE, f"{n_features} features > max_features={max_features}")
    if len(segments) > max_segments:
        raise InvalidEvent(
            topics.TOO_LARGE, f"{len(segments)} segments > max_segments={max_segments}"
        )
    if numeric:
        _finite_map(numeric, "numeric_features")
    for key in numeric:
        if len(key) > max_string_length:
            raise InvalidEvent(topics.TOO_LARGE, f"feature name longer than {max_string_length}")
    _strings(categorical, "categorical_features", max_string_length)
    _strings(segments, "segments", max_string_length)
    label = record.get("prediction_label")
    if label is not None and (not isinstance(label, str) or len(label) > max_string_length):
        raise InvalidEvent(topics.INVALID_VALUE, "prediction_label must be a short string")
    _finite(record, "prediction_score")
    _finite(record, "prediction_value")
    probabilities = record.get("probabilities")
    if probabilities is not None:
        probabilities = _map(record, "probabilities")
        if len(probabilities) > max_classes:
            raise InvalidEvent(
                topics.TOO_LARGE, f"{len(probabilities)} classes > max_classes={max_classes}"
            )
        if probabilities:
            _finite_map(probabilities, "probabilities")


def validate_outcome(
    record: Mapping[str, Any], *, max_string_length: int = DEFAULT_MAX_STRING_LENGTH
) -> None:
    """Raise InvalidEvent unless ``record`` is an OutcomeEvent with a label or a value."""
    for field in ("event_id", "prediction_id", "model_id"):
        _id(record, field, max_string_length)
    _time(record, "event_time")
    label = record.get("label")
    value = record.get("value")
    if label is None and value is None:
        raise InvalidEvent(topics.MISSING_FIELD, "an outcome needs a label or a value")
    if label is not None and (not isinstance(label, str) or len(label) > max_string_length):
        raise InvalidEvent(topics.INVALID_VALUE, "label must be a short string")
    _finite(record, "value")


# -- columns ------------------------------------------------------------------------------------


class _Rows:
    """First failing check per row, in the order of the single-event validators."""

    def __init__(self, n: int) -> None:
        self.found: dict[int, RowError] = {}  # only bad rows: nothing per good row
        self.open = np.ones(n, dtype=bool)  # rows without a reason yet

    def mark(self, bad: np.ndarray, reason: str, detail: Callable[[int], str]) -> None:
        rows = np.flatnonzero(bad & self.open)
        if rows.size:
            self.open[rows] = False
            for row in rows.tolist():  # only bad rows: rare, so per-row Python is fine
                self.found[row] = RowError(row, reason, detail(row))

    def errors(self) -> list[RowError]:
        return [self.found[row] for row in sorted(self.found)]


def _lengths(array: pa.Array) -> np.ndarray:
    """Characters per string (as Python's ``len``), 0 for nulls."""
    return pc.utf8_length(array).fill_null(0).to_numpy(zero_copy_only=False)


def _valid(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    return array.is_valid().to_numpy(zero_copy_only=False)


def _check_model_id(model_id: str, max_len: int) -> None:
    if not isinstance(model_id, str) or model_id == "":
        raise InvalidEvent(topics.MISSING_FIELD, "model_id is empty")
    if len(model_id) > max_len:
        raise InvalidEvent(topics.TOO_LARGE, f"model_id has {len(model_id)} chars > {max_len}")


def _check_ids(rows: _Rows, field: str, array: pa.Array, max_len: int) -> None:
    lengths = _lengths(array)
    rows.mark(~_valid(array) | (lengths == 0), topics.MISSING_FIELD, lambda _: f"{field} is empty")
    rows.mark(
        lengths > max_len, topics.TOO_LARGE, lambda r: f"{field} has {lengths[r]} chars > {max_len}"
    )


def _check_time(rows: _Rows, field: str, times: np.ndarray) -> None:
    rows.mark(
        times < 0,
        topics.INVALID_VALUE,
        lambda r: f"{field} must be epoch milliseconds >= 0, got {int(times[r])}",
    )


def _check_finite_matrix(
    rows: _Rows, field: str, names: tuple[str, ...], matrix: np.ndarray, hidden: np.ndarray | None
) -> None:
    # inf is visible in the columns; a non-null NaN on the wire became NaN (= absent) there,
    # so the decoder passes where it was (``hidden``).
    bad = np.isinf(matrix)
    if hidden is not None:
        bad = bad | hidden

    def detail(row: int) -> str:
        j = int(np.flatnonzero(bad[row])[0])
        return f"{field}[{names[j]!r}] = {matrix[row, j]}"

    rows.mark(bad.any(axis=1), topics.NON_FINITE_VALUE, detail)


def _check_finite(rows: _Rows, field: str, values: np.ndarray, hidden: np.ndarray | None) -> None:
    bad = np.isinf(values)
    if hidden is not None:
        bad = bad | hidden
    rows.mark(bad, topics.NON_FINITE_VALUE, lambda r: f"{field} = {values[r]}")


def _check_string_columns(
    rows: _Rows, field: str, columns: Mapping[str, pa.Array], max_len: int
) -> None:
    for name, array in columns.items():
        too_long = _lengths(array) > max_len
        if len(name) > max_len:
            too_long |= _valid(array)
        rows.mark(
            too_long,
            topics.TOO_LARGE,
            lambda _, n=name: f"{field}[{n[:80]!r}] longer than {max_len}",
        )


def _count_strings(columns: Mapping[str, pa.Array], n: int) -> np.ndarray:
    count = np.zeros(n, dtype=np.int64)
    for array in columns.values():
        count += _valid(array)
    return count


def validate_prediction_columns(
    cols: PredictionColumns,
    *,
    non_finite: Mapping[str, np.ndarray] | None = None,
    max_features: int = DEFAULT_MAX_FEATURES,
    max_segments: int = DEFAULT_MAX_SEGMENTS,
    max_classes: int = DEFAULT_MAX_CLASSES,
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH,
) -> list[RowError]:
    """One RowError per row that ``validate_prediction`` would refuse, vectorised.

    ``non_finite`` (from the decoder) marks non-null NaNs that the columns show as absent:
    field name (``numeric_features``, ``probabilities``, ``prediction_score``,
    ``prediction_value``) -> mask shaped like the column. A problem shared by every row (an
    empty or too long ``model_id``) raises InvalidEvent instead. A non-null NaN counts as
    absent towards ``max_features``.

    >>> cols = PredictionColumns.from_records("m", [
    ...     {"event_id": "p1", "model_version": "1", "event_time": 0,
    ...      "numeric_features": {"x": 1.0}},
    ...     {"event_id": "", "model_version": "1", "event_time": 0,
    ...      "numeric_features": {"x": float("inf")}}])
    >>> validate_prediction_columns(cols)
    [RowError(row=1, reason='missing_field', detail='event_id is empty')]
    """
    hidden = non_finite or {}
    n = len(cols)
    _check_model_id(cols.model_id, max_string_length)
    rows = _Rows(n)
    _check_ids(rows, "event_id", cols.event_id, max_string_length)
    _check_ids(rows, "model_version", cols.model_version, max_string_length)
    _check_time(rows, "event_time", cols.event_time)
    n_features = (~np.isnan(cols.numeric)).sum(axis=1) + _count_strings(cols.categorical, n)
    rows.mark(
        n_features > max_features,
        topics.TOO_LARGE,
        lambda r: f"{n_features[r]} features > max_features={max_features}",
    )
    n_segments = _count_strings(cols.segments, n)
    rows.mark(
        n_segments > max_segments,
        topics.TOO_LARGE,
        lambda r: f"{n_segments[r]} segments > max_segments={max_segments}",
    )
    _check_finite_matrix(
        rows, "numeric_features", cols.numeric_names, cols.numeric, hidden.get("numeric_features")
    )
    long_names = [j for j, name in enumerate(cols.numeric_names) if len(name) > max_string_length]
    if long_names:
        present = ~np.isnan(cols.numeric[:, long_names])
        if hidden.get("numeric_features") is not None:
            present |= hidden["numeric_features"][:, long_names]
        rows.mark(
            present.any(axis=1),
            topics.TOO_LARGE,
            lambda _: f"feature name longer than {max_string_length}",
        )
    _check_string_columns(rows, "categorical_features", cols.categorical, max_string_length)
    _check_string_columns(rows, "segments", cols.segments, max_string_length)
    rows.mark(
        _lengths(cols.prediction_label) > max_string_length,
        topics.INVALID_VALUE,
        lambda _: "prediction_label must be a short string",
    )
    _check_finite(rows, "prediction_score", cols.prediction_score, hidden.get("prediction_score"))
    _check_finite(rows, "prediction_value", cols.prediction_value, hidden.get("prediction_value"))
    if cols.probability_names:
        present = ~np.isnan(cols.probabilities)
        if hidden.get("probabilities") is not None:
            present |= hidden["probabilities"]
        n_classes = present.sum(axis=1)
        rows.mark(
            n_classes > max_classes,
            topics.TOO_LARGE,
            lambda r: f"{n_classes[r]} classes > max_classes={max_classes}",
        )
        _check_finite_matrix(
            rows, "probabilities", cols.probability_names, cols.probabilities,
            hidden.get("probabilities"),
        )  # fmt: skip
    return rows.errors()


def validate_outcome_columns(
    cols: OutcomeColumns,
    *,
    non_finite: Mapping[str, np.ndarray] | None = None,
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH,
) -> list[RowError]:
    """One RowError per row that ``validate_outcome`` would refuse, vectorised.

    ``non_finite``: ``{"value": mask}`` of non-null NaNs the column shows as null.
    """
    hidden = (non_finite or {}).get("value")
    _check_model_id(cols.model_id, max_string_length)
    rows = _Rows(len(cols))
    _check_ids(rows, "event_id", cols.event_id, max_string_length)
    _check_ids(rows, "prediction_id", cols.prediction_id, max_string_length)
    _check_time(rows, "event_time", cols.event_time)
    has_value = ~np.isnan(cols.value) if hidden is None else ~np.isnan(cols.value) | hidden
    rows.mark(
        ~_valid(cols.label) & ~has_value,
        topics.MISSING_FIELD,
        lambda _: "an outcome needs a label or a value",
    )
    rows.mark(
        _lengths(cols.label) > max_string_length,
        topics.INVALID_VALUE,
        lambda _: "label must be a short string",
    )
    _check_finite(rows, "value", cols.value, hidden)
    return rows.errors()
