"""Semantic checks Avro cannot express: finite numbers, non-empty ids, bounded sizes.

Run by producers before sending (the SDK turns failures into ValueError for the caller) and by
workers after decoding (failures go to the DLQ with ``reason``). Both take a plain record dict
as the codec produces it (times as int millis).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from driftline.schemas import topics

__all__ = [
    "DEFAULT_MAX_FEATURES",
    "DEFAULT_MAX_STRING_LENGTH",
    "InvalidEvent",
    "validate_outcome",
    "validate_prediction",
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
