"""Client SDK for producing services: log predictions and outcomes to driftline's topics.

``log_prediction`` / ``log_outcome`` validate the event and append it to a per-model column
buffer; the buffer leaves as one PredictionBatch/OutcomeBatch record (columns of many events)
when it reaches ``batch_rows`` rows or is ``linger`` seconds old (a small background thread
watches the age), and on :meth:`flush` / :meth:`close`. ``log_predictions`` /
``log_outcomes`` take whole columns (dict of arrays, pandas DataFrame, pyarrow Table) and send
them as batch records at once. ``batch_records=False`` sends single PredictionEvent /
OutcomeEvent records instead, one per event, as earlier versions did.

The Kafka producer is confluent-kafka's (librdkafka), idempotent and batching; delivery is
reported through callbacks that update :attr:`DriftlineProducer.stats` (counted in events,
not messages). Leave the ``with`` block or call :meth:`close` before exiting; an ``atexit``
hook flushes producers that were not closed, as a safety net.

Example (needs a running broker)::

    from driftline.client import DriftlineProducer

    with DriftlineProducer("127.0.0.1:9092") as producer:
        pid = producer.log_prediction(
            "churn", {"age": 42, "plan": "gold"}, "yes", score=0.83,
            segments={"region": "eu"},
        )
        producer.log_outcome(pid, "churn", label="no")
    print(producer.stats)
"""

from __future__ import annotations

import atexit
import marshal
import math
import numbers
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from confluent_kafka import KafkaError, Message, Producer

from driftline.schemas import Codec, ConfluentRegistry, topics
from driftline.schemas.columns import OutcomeColumns, PredictionColumns, RowError, split_columns
from driftline.schemas.validation import (
    DEFAULT_MAX_FEATURES,
    DEFAULT_MAX_STRING_LENGTH,
    validate_outcome,
    validate_outcome_columns,
    validate_prediction,
    validate_prediction_columns,
)
from driftline.settings import Settings

__all__ = [
    "DeliveryStats",
    "DriftlineProducer",
    "outcome_columns",
    "prediction_columns",
    "to_millis",
    "uuid4_array",
]

# Small batches flushed often: monitoring events should reach the workers within ~tens of ms,
# and librdkafka batches per partition anyway. Any of these can be overridden by the caller.
DEFAULT_KAFKA_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "compression.type": "lz4",
    "message.timeout.ms": 120_000,
}


@dataclass
class DeliveryStats:
    """What the broker acknowledged (or refused) so far."""

    delivered: int = 0
    failed: int = 0
    last_error: str | None = None


def to_millis(value: datetime | int | None) -> int:
    """Epoch milliseconds from a datetime (naive means UTC), int millis, or None (now)."""
    if value is None:
        return time.time_ns() // 1_000_000
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"event_time must be a datetime or int epoch millis, got {value!r}")
    return int(value)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"


def _split_features(features: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    numeric: dict[str, float] = {}
    categorical: dict[str, str] = {}
    for name, value in features.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"feature names must be non-empty strings, got {name!r}")
        if value is None:
            continue  # a missing value is an absent feature, not a zero
        if _is_bool(value):
            categorical[name] = "true" if value else "false"
        elif isinstance(value, numbers.Real):
            numeric[name] = float(value)
        elif isinstance(value, str):
            categorical[name] = value
        else:
            raise ValueError(
                f"feature {name!r} must be a number, string, bool or None, "
                f"got {type(value).__name__}"
            )
    return numeric, categorical


def uuid4_array(n: int) -> pa.Array:
    """``n`` random UUID4 strings as an Arrow string array, built without a Python loop.

    >>> import uuid
    >>> ids = uuid4_array(3)
    >>> len(ids), str(uuid.UUID(ids[0].as_py()).version)
    (3, '4')
    """
    raw = np.frombuffer(os.urandom(16 * n), np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    # bytes.hex() does the hex digits at C speed; numpy slots in the dashes.
    hexed = np.frombuffer(raw.tobytes().hex().encode(), np.uint8).reshape(n, 32)
    text = np.full((n, 36), ord("-"), np.uint8)
    for start, stop, at in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
        text[:, at : at + stop - start] = hexed[:, start:stop]
    offsets = np.arange(0, 36 * n + 1, 36, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text.tobytes()))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_STRING = pa.string()


def _strings(values: Any, n: int, what: str) -> pa.Array:
    """A string column of length ``n`` from a scalar, sequence, numpy/pandas/Arrow array.

    Bools become "true"/"false"; None/NaN become null; other values go through ``str``.
    """
    if isinstance(values, str):
        return pa.array([values], _STRING).take(pa.array(np.zeros(n, np.int32)))
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if pa.types.is_string(values.type):
            array = values
        elif pa.types.is_large_string(values.type) or pa.types.is_dictionary(values.type):
            array = values.cast(_STRING)
        else:
            values = values.to_numpy(zero_copy_only=False)
    if not isinstance(values, pa.Array):
        plain = values.to_numpy() if isinstance(values, pd.Series | pd.Index) else values
        plain = np.asarray(plain)
        if plain.dtype.kind == "b":
            array = pa.array(np.where(plain, "true", "false"), _STRING)
        elif plain.dtype.kind in "US":
            # Usually few distinct values (labels, versions): convert those, then index.
            uniques, inverse = np.unique(plain, return_inverse=True)
            if len(uniques) * 4 <= len(plain):
                dictionary = pa.array(uniques.astype(str).tolist(), _STRING)
                array = dictionary.take(pa.array(inverse.astype(np.int32).reshape(-1)))
            else:
                array = pa.array(plain.astype(str).tolist(), _STRING)
        else:  # object columns: per-value conversion (not the fast path)
            array = pa.array([_text(v) for v in plain.tolist()], _STRING)
    if len(array) != n:
        raise ValueError(f"{what} has {len(array)} values, expected {n}")
    return array


def _text(value: Any) -> str | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _floats(values: Any, n: int, what: str) -> np.ndarray:
    """A float64 column (NaN = absent) of length ``n`` from a scalar or array-like."""
    if values is None:
        return np.full(n, np.nan)
    if isinstance(values, pa.ChunkedArray | pa.Array):
        values = values.to_numpy(zero_copy_only=False)
    if isinstance(values, pd.Series):
        values = values.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be numbers: {exc}") from None
    if array.ndim == 0:
        return np.full(n, float(array))
    if array.shape != (n,):
        raise ValueError(f"{what} has shape {array.shape}, expected ({n},)")
    return array


def _times(values: Any, n: int) -> np.ndarray:
    """int64 epoch millis from None (now), an int/datetime, or an array of either."""
    if values is None or isinstance(values, datetime | numbers.Integral):
        return np.full(n, to_millis(values), dtype=np.int64)
    if isinstance(values, pa.ChunkedArray | pa.Array):
        values = values.to_pandas()
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values))
    if pd.api.types.is_datetime64_any_dtype(series):
        if series.isna().any():
            raise ValueError("event_time has missing values")
        if getattr(series.dt, "tz", None) is None:
            series = series.dt.tz_localize("UTC")
        millis = (series - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")
        out = millis.to_numpy(dtype=np.int64)
    elif pd.api.types.is_integer_dtype(series) and not pd.api.types.is_bool_dtype(series):
        out = series.to_numpy(dtype=np.int64)
    else:
        raise ValueError(
            f"event_time must be datetimes or int epoch millis, got dtype {series.dtype}"
        )
    if out.shape != (n,):
        raise ValueError(f"event_time has {len(out)} values, expected {n}")
    return out


def _table(data: Any) -> tuple[dict[str, Any], int]:
    """Named columns and row count of a dict of arrays, DataFrame or pyarrow Table."""
    if isinstance(data, pd.DataFrame):
        columns = {str(name): data[name] for name in data.columns}
        return columns, len(data)
    if isinstance(data, pa.Table | pa.RecordBatch):
        return {name: data.column(name) for name in data.column_names}, data.num_rows
    if isinstance(data, Mapping):
        lengths = {name: len(values) for name, values in data.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"feature columns differ in length: {lengths}")
        return dict(data), next(iter(lengths.values()), 0)
    raise ValueError(
        f"data must be a dict of arrays, a pandas DataFrame or a pyarrow Table, "
        f"got {type(data).__name__}"
    )


def _is_numeric(values: Any) -> bool:
    if isinstance(values, pa.ChunkedArray | pa.Array):
        return pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
    dtype = getattr(values, "dtype", None)
    if dtype is None:
        values = np.asarray(values)
        dtype = values.dtype
    return getattr(dtype, "kind", "") in "iuf"


def prediction_columns(
    model_id: str,
    data: Any,
    *,
    model_version: Any = "1",
    event_time: Any = None,
    event_ids: Any = None,
    labels: Any = None,
    scores: Any = None,
    values: Any = None,
    segments: Mapping[str, Any] | None = None,
    probabilities: Mapping[str, Any] | None = None,
) -> PredictionColumns:
    """PredictionColumns from user columns (not validated; see ``log_predictions``).

    ``data``: dict of arrays, pandas DataFrame or pyarrow Table of features. Integer and
    float columns are numeric features (NaN = missing), anything else categorical (bools as
    "true"/"false", None/NaN = missing). Scalars broadcast (``model_version``, a segment).
    """
    columns, n = _table(data)
    numeric_names = []
    numeric = []
    categorical = {}
    for name, column in columns.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"feature names must be non-empty strings, got {name!r}")
        if _is_numeric(column):
            numeric_names.append(name)
            numeric.append(_floats(column, n, f"feature {name!r}"))
        else:
            categorical[name] = _strings(column, n, f"feature {name!r}")
    matrix = np.column_stack(numeric) if numeric else np.empty((n, 0))
    probability_names = tuple(str(k) for k in (probabilities or {}))
    probs = (
        np.column_stack([_floats(v, n, f"probabilities[{k!r}]") for k, v in probabilities.items()])
        if probabilities
        else np.empty((n, 0))
    )
    return PredictionColumns(
        model_id=model_id,
        event_id=uuid4_array(n) if event_ids is None else _strings(event_ids, n, "event_ids"),
        model_version=_strings(
            str(model_version) if isinstance(model_version, int) else model_version,
            n,
            "model_version",
        ),
        event_time=_times(event_time, n),
        numeric_names=tuple(numeric_names),
        numeric=np.ascontiguousarray(matrix, dtype=np.float64),
        categorical=categorical,
        segments={str(k): _strings(v, n, f"segment {k!r}") for k, v in (segments or {}).items()},
        prediction_label=pa.nulls(n, _STRING) if labels is None else _strings(labels, n, "labels"),
        prediction_score=_floats(scores, n, "scores"),
        prediction_value=_floats(values, n, "values"),
        probability_names=probability_names,
        probabilities=np.ascontiguousarray(probs, dtype=np.float64),
    )


def outcome_columns(
    model_id: str,
    prediction_ids: Any,
    *,
    labels: Any = None,
    values: Any = None,
    event_time: Any = None,
    event_ids: Any = None,
) -> OutcomeColumns:
    """OutcomeColumns from user columns (not validated; see ``log_outcomes``)."""
    if isinstance(prediction_ids, str):
        raise ValueError("prediction_ids must be an array of ids, not one string")
    if isinstance(prediction_ids, pa.ChunkedArray | pa.Array | pd.Series):
        n = len(prediction_ids)
    else:
        prediction_ids = np.asarray(prediction_ids)
        n = len(prediction_ids)
    return OutcomeColumns(
        model_id=model_id,
        event_id=uuid4_array(n) if event_ids is None else _strings(event_ids, n, "event_ids"),
        prediction_id=_strings(prediction_ids, n, "prediction_ids"),
        event_time=_times(event_time, n),
        label=pa.nulls(n, _STRING) if labels is None else _strings(labels, n, "labels"),
        value=_floats(values, n, "values"),
    )


def _refuse(kind: str, errors: list[RowError]) -> ValueError:
    first = errors[0]
    return ValueError(
        f"{len(errors)} invalid {kind} row(s), nothing queued; first: row {first.row}: "
        f"{first.reason}: {first.detail}"
    )


# The few client settings whose real names contain underscores (librdkafka's and the Python
# client's own callbacks); every other name is dotted.
_UNDERSCORE_NAMES = frozenset(
    {"log_level", "error_cb", "throttle_cb", "stats_cb", "oauth_cb", "logger", "on_delivery"}
)


def _normalise_kafka_config(config: Mapping[str, Any]) -> dict[str, Any]:
    # librdkafka names use dots, which keyword arguments cannot: accept linger_ms for linger.ms.
    return {
        (k if "." in k or k in _UNDERSCORE_NAMES else k.replace("_", ".")): v
        for k, v in config.items()
    }


_NUMBERS = frozenset({float, int})
_MAX_LEN = DEFAULT_MAX_STRING_LENGTH

# A buffered row's numeric values are kept as marshal (version 2) bytes of a tuple of exact
# floats: "(" + count (4 bytes), then per value "g" + the double's 8 little-endian bytes.
# marshal writes each value's type code, so one C call both proves a row all-float (a bool, an
# int, a str or a float subclass writes another code or length) and stores the row in a form
# a batch of rows turns into a float64 matrix with one vectorised copy instead of ~30 ns of
# numpy per value. Version 2 has a fixed tuple header and no back-references.
_MARSHAL = 2
_dumps = marshal.dumps
_time_ns = time.time_ns
_BLOB_HEADER = 5
_BLOB_FLOAT = ord("g")
_F8 = np.dtype("<f8")


def _float_blob(values: Iterable[float]) -> bytes:
    """The marshal bytes of ``values`` (exact Python floats) as stored in a buffered row."""
    return _dumps(tuple(values), _MARSHAL)


def _blob_shape(k: int) -> tuple[int, bytes]:
    """(length, type codes) of the blob of ``k`` exact floats: what the fast path checks."""
    return _BLOB_HEADER + 9 * k, bytes([_BLOB_FLOAT]) * k


def _numeric_matrix(entries: Sequence[Any], k: int) -> np.ndarray:
    """The (n, k) float64 matrix of buffered numeric values: blobs, or tuples of int/float
    (fast-path rows holding ints)."""
    n = len(entries)
    if k == 0:
        return np.empty((n, 0))
    try:
        joined = b"".join(entries)  # TypeError when some rows hold tuples
    except TypeError:
        is_blob = np.fromiter((type(entry) is bytes for entry in entries), bool, n)
        out = np.empty((n, k))
        blobs = [entry for entry in entries if type(entry) is bytes]
        if blobs:
            out[is_blob] = _numeric_matrix(blobs, k)
        tuples = [entry for entry in entries if type(entry) is not bytes]
        values = chain.from_iterable(tuples)  # fromiter: ~15% faster than np.array(tuples)
        out[~is_blob] = np.fromiter(values, np.float64, len(tuples) * k).reshape(-1, k)
        return out
    width = _BLOB_HEADER + 9 * k
    if len(joined) != n * width:
        raise AssertionError("buffered numeric rows of another width")  # a bug, not input
    # Strided views over the blobs: type codes (checked per call; cheap to assert) and values.
    codes = np.ndarray((n, k), np.uint8, joined, _BLOB_HEADER, (width, 9))
    if not (codes == _BLOB_FLOAT).all():
        raise AssertionError("buffered numeric rows hold non-floats")
    return np.array(np.ndarray((n, k), _F8, joined, _BLOB_HEADER + 1, (width, 9)), np.float64)


def _same_strings(values: Sequence[str], n: int) -> pa.Array:
    """A string column of mostly one value (model versions): repeated without conversion."""
    first = values[0]
    if values.count(first) == n:
        return pa.repeat(pa.scalar(first, _STRING), n)
    return pa.array(values, _STRING)


@dataclass(frozen=True)
class _Layout:
    """Which names a buffered row's value tuples stand for (interned; compared by id)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    segments: tuple[str, ...]
    probabilities: tuple[str, ...]


@dataclass
class _Buffer:
    """Rows of one model not yet sent, as tuples; converted to columns when sent."""

    since: float
    rows: list[tuple[Any, ...]] = field(default_factory=list)


def _prediction_part(
    model_id: str, layout: _Layout, fields: Sequence[tuple[Any, ...]]
) -> PredictionColumns:
    # ``fields``: the rows of one layout transposed (zip(*rows)). Row tuple: (layout,
    # event_id, version, time, numeric, categorical, segments, label, score, value,
    # probabilities).
    _, ids, versions, times, numeric, categorical, segments, labels, scores, values, probs = fields
    n = len(ids)

    def matrix(names: tuple[str, ...], rows_of_values: tuple[Any, ...]) -> np.ndarray:
        if not names:
            return np.empty((n, 0))
        return np.array(rows_of_values, dtype=np.float64).reshape(n, len(names))

    def strings(names: tuple[str, ...], rows_of_values: tuple[Any, ...]) -> dict[str, pa.Array]:
        if not names:
            return {}
        by_name = zip(*rows_of_values, strict=True)
        return {
            name: pa.array(column, _STRING) for name, column in zip(names, by_name, strict=True)
        }

    return PredictionColumns(
        model_id=model_id,
        event_id=pa.array(ids, _STRING),
        model_version=_same_strings(versions, n),
        event_time=np.array(times, dtype=np.int64),
        numeric_names=layout.numeric,
        numeric=_numeric_matrix(numeric, len(layout.numeric)),
        categorical=strings(layout.categorical, categorical),
        segments=strings(layout.segments, segments),
        prediction_label=pa.array(labels, _STRING),
        prediction_score=_optional_floats(scores, n),
        prediction_value=_optional_floats(values, n),
        probability_names=layout.probabilities,
        probabilities=matrix(layout.probabilities, probs),
    )


def _optional_floats(values: Sequence[float | None], n: int) -> np.ndarray:
    """float64 with NaN for None; a column of Nones (no scores, no values) without numpy's
    per-value conversion."""
    if values[0] is None and values.count(None) == n:
        return np.full(n, np.nan)
    return np.array(values, dtype=np.float64)


def _prediction_columns_of(model_id: str, rows: list[tuple[Any, ...]]) -> PredictionColumns:
    fields = tuple(zip(*rows, strict=True))  # one C-level transpose
    layouts = fields[0]
    if layouts.count(layouts[0]) == len(rows):  # the usual case, compared at C speed
        return _prediction_part(model_id, layouts[0], fields)
    # Several layouts: one part each, then back into the order the rows were logged in.
    groups: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(id(row[0]), []).append(i)
    parts = [
        _prediction_part(
            model_id, rows[members[0]][0], tuple(zip(*[rows[i] for i in members], strict=True))
        )
        for members in groups.values()
    ]
    order = np.argsort(np.concatenate([np.array(m) for m in groups.values()]), kind="stable")
    return PredictionColumns.concat(parts).take(order)


def _outcome_columns_of(model_id: str, rows: list[tuple[Any, ...]]) -> OutcomeColumns:
    ids, prediction_ids, times, labels, values = zip(*rows, strict=True)
    return OutcomeColumns(
        model_id=model_id,
        event_id=pa.array(ids, _STRING),
        prediction_id=pa.array(prediction_ids, _STRING),
        event_time=np.array(times, dtype=np.int64),
        label=pa.array(labels, _STRING),
        value=_optional_floats(values, len(rows)),
    )


def _linger_loop(
    ref: weakref.ref, stop: threading.Event, wake: threading.Event, interval: float
) -> None:
    """Background thread: send full buffers (when woken) and buffers older than the linger
    time (every ``interval``); serve delivery reports.

    Holds only a weak reference, so an abandoned producer can still be collected.
    """
    while not stop.is_set():
        wake.wait(interval)
        wake.clear()
        if stop.is_set():
            return
        producer = ref()
        if producer is None:
            return
        try:
            producer._send_due()
        except Exception as exc:  # keep lingering; the error shows in stats
            producer._record_error(f"background send failed: {exc}")
        del producer


def _close_at_exit(ref: weakref.ref) -> None:
    producer = ref()
    if producer is not None:
        producer.close(10.0)


class DriftlineProducer:
    """Publish predictions and outcomes (Avro, Confluent framing, key = model_id).

    ``kafka_config`` is passed to librdkafka on top of idempotent, batching defaults; dotted
    names may be written with underscores (``linger_ms=5``) or passed as ``**{"linger.ms": 5}``.
    ``max_features`` caps features per prediction (checked before sending).
    ``batch_records`` (default True) sends PredictionBatch/OutcomeBatch records of up to
    ``batch_rows`` events per model, at the latest ``linger`` seconds after the first event
    was logged; False sends one single-event record per event.
    """

    def __init__(
        self,
        bootstrap: str,
        codec: Codec | None = None,
        *,
        predictions_topic: str = topics.PREDICTIONS,
        outcomes_topic: str = topics.OUTCOMES,
        max_features: int = DEFAULT_MAX_FEATURES,
        batch_records: bool = True,
        batch_rows: int = 1000,
        linger: float = 0.05,
        max_batch_bytes: int = 900_000,
        **kafka_config: Any,
    ) -> None:
        if batch_rows <= 0 or linger <= 0 or max_batch_bytes <= 0:
            raise ValueError("batch_rows, linger and max_batch_bytes must be positive")
        self.codec = codec if codec is not None else Codec()
        self.predictions_topic = predictions_topic
        self.outcomes_topic = outcomes_topic
        self.max_features = max_features
        self.batch_records = batch_records
        self.batch_rows = batch_rows
        self.linger = linger
        self.max_batch_bytes = max_batch_bytes
        config = {**DEFAULT_KAFKA_CONFIG, **_normalise_kafka_config(kafka_config)}
        config["bootstrap.servers"] = bootstrap
        self._producer = Producer(config)
        self._stats = DeliveryStats()
        self._produced = 0
        self._lock = threading.Lock()  # stats and counters
        self._closed = False
        # Buffers: appended under _buffer_lock; taken and sent under _send_lock, so one
        # model's records leave in the order their events were logged.
        self._buffer_lock = threading.Lock()
        self._send_lock = threading.RLock()
        self._predictions: dict[str, _Buffer] = {}
        self._outcomes: dict[str, _Buffer] = {}
        self._buffered = 0
        self._layouts: dict[tuple[tuple[str, ...], ...], _Layout] = {}
        # model_id -> (layout, feature count, itemgetter of its names, blob length and type
        # codes of that many floats (see _blob_shape); length 0 until the buffer is sent: the
        # model sent ints) for the fast path.
        self._fast_layouts: dict[str, tuple[_Layout, int, Callable[[Any], tuple], int, bytes]] = {}
        self._ids: list[str] = []
        self._stop = threading.Event()
        self._wake = threading.Event()  # ends the background thread's wait early (close)
        self._thread: threading.Thread | None = None
        self._at_exit: Callable[[], None] | None = None
        if batch_records:
            self._at_exit = partial(_close_at_exit, weakref.ref(self))
            atexit.register(self._at_exit)

    @classmethod
    def from_settings(cls, settings: Settings, **kafka_config: Any) -> DriftlineProducer:
        """A producer for the configured broker, using the schema registry if one is set."""
        codec = (
            Codec(ConfluentRegistry(settings.schema_registry_url))
            if settings.schema_registry_url
            else Codec()
        )
        return cls(settings.kafka_bootstrap, codec, **kafka_config)

    # -- delivery -----------------------------------------------------------------------------

    def _on_delivery(self, events: int, error: KafkaError | None, message: Message) -> None:
        with self._lock:
            if error is None:
                self._stats.delivered += events
            else:
                self._stats.failed += events
                self._stats.last_error = f"{message.topic()}: {error.str()}"

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._stats.last_error = text

    @property
    def stats(self) -> DeliveryStats:
        """A snapshot of delivered/failed counts (events) and the last delivery error."""
        with self._lock:
            return DeliveryStats(**vars(self._stats))

    @property
    def pending(self) -> int:
        """Events buffered, queued or in flight, not yet acknowledged or failed."""
        # Counted here: len(producer) also counts librdkafka's internal requests and events.
        with self._lock:
            return self._buffered + self._produced - self._stats.delivered - self._stats.failed

    def _send(
        self, topic: str, model_id: str, value: bytes, events: int = 1, queue_timeout: float = 30.0
    ) -> None:
        deadline = time.monotonic() + queue_timeout
        # Counted before produce(): another thread's poll() may serve the delivery report first.
        with self._lock:
            self._produced += events
        try:
            while True:
                try:
                    self._producer.produce(
                        topic,
                        value=value,
                        key=model_id.encode(),
                        on_delivery=partial(self._on_delivery, events),
                    )
                    break
                except BufferError:
                    # Local queue full: serve delivery reports until there is room.
                    if time.monotonic() > deadline:
                        raise
                    self._producer.poll(0.05)
        except BaseException:
            with self._lock:
                self._produced -= events
            raise
        self._producer.poll(0)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("producer is closed")

    # -- buffers ------------------------------------------------------------------------------

    def _start_linger(self) -> None:
        with self._buffer_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_linger_loop,
                    args=(weakref.ref(self), self._stop, self._wake, self.linger / 2),
                    name="driftline-linger",
                    daemon=True,
                )
                self._thread.start()

    def _append(self, buffers: dict[str, _Buffer], model_id: str, row: tuple[Any, ...]) -> None:
        lock = self._buffer_lock
        lock.acquire()  # not `with`: its __enter__/__exit__ cost twice acquire/release
        try:
            buffer = buffers.get(model_id)
            if buffer is None:
                buffer = buffers[model_id] = _Buffer(time.monotonic())
            rows = buffer.rows
            rows.append(row)
            self._buffered += 1
            n = len(rows)
        finally:
            lock.release()
        if self._thread is None:
            self._start_linger()
        if n >= self.batch_rows:
            self._send_buffer(buffers, model_id)

    def _take(self, buffers: dict[str, _Buffer], model_id: str) -> _Buffer | None:
        with self._buffer_lock:
            buffer = buffers.pop(model_id, None)
            if buffer is not None:
                self._buffered -= len(buffer.rows)
        return buffer

    def _send_buffer(self, buffers: dict[str, _Buffer], model_id: str) -> None:
        with self._send_lock:
            buffer = self._take(buffers, model_id)
            if buffer is None or not buffer.rows:
                return
            if buffers is self._predictions:
                fast = self._fast_layouts.get(model_id)
                if fast is not None and not fast[3]:
                    # Rows with ints turned the fast path's marshal check off for that
                    # buffer; try it again with the next one.
                    self._fast_layouts[model_id] = (*fast[:3], *_blob_shape(fast[1]))
                self._send_columns(_prediction_columns_of(model_id, buffer.rows))
            else:
                self._send_columns(_outcome_columns_of(model_id, buffer.rows))

    def _send_columns(self, cols: PredictionColumns | OutcomeColumns) -> None:
        topic = self.outcomes_topic if isinstance(cols, OutcomeColumns) else self.predictions_topic
        with self._send_lock:
            for part in split_columns(
                cols, max_rows=self.batch_rows, max_bytes=self.max_batch_bytes
            ):
                self._send(topic, cols.model_id, self.codec.encode_columns(part), len(part))

    def _send_due(self) -> None:
        """Send the buffers that are full or ``linger`` old (background thread)."""
        now = time.monotonic()
        for buffers in (self._predictions, self._outcomes):
            with self._buffer_lock:
                due = [
                    m
                    for m, b in buffers.items()
                    if len(b.rows) >= self.batch_rows or now - b.since >= self.linger
                ]
            for model_id in due:
                self._send_buffer(buffers, model_id)
        self._producer.poll(0)

    def _send_all(self) -> None:
        for buffers in (self._predictions, self._outcomes):
            for model_id in list(buffers):
                self._send_buffer(buffers, model_id)

    def _event_id(self) -> str:
        # UUID4s made a thousand at a time: one uuid.uuid4() costs more than a whole
        # log_prediction may.
        ids = self._ids
        if not ids:
            ids.extend(uuid4_array(1000).to_pylist())
        return ids.pop()

    def _layout(
        self,
        numeric: tuple[str, ...],
        categorical: tuple[str, ...],
        segments: tuple[str, ...],
        probabilities: tuple[str, ...],
    ) -> _Layout:
        key = (numeric, categorical, segments, probabilities)
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) > 10_000:
                self._layouts.clear()  # bounded: a caller inventing names per event
            layout = self._layouts[key] = _Layout(*key)
        return layout

    # -- public API: one event --------------------------------------------------------------

    def log_prediction(
        self,
        model_id: str,
        features: Mapping[str, Any],
        prediction: str | float | int | bool | None = None,
        *,
        score: float | None = None,
        model_version: str = "1",
        segments: Mapping[str, str] | None = None,
        probabilities: Mapping[str, float] | None = None,
        event_id: str | None = None,
        event_time: datetime | int | None = None,
    ) -> str:
        """Queue one prediction; returns its event id (pass it to :meth:`log_outcome`).

        ``features``: numbers become numeric features, strings and bools categorical ones,
        None means missing (left out); NaN/inf are refused. ``prediction``: a string or bool is
        the predicted label, a number the predicted value (regression); ``score`` is the
        positive-class score or confidence. ``event_time``: datetime or epoch millis, default
        now. Raises ValueError (nothing is queued) if the event is invalid.
        """
        if self._closed:  # _check_open(), inlined: a call is a noticeable part of the budget
            raise RuntimeError("producer is closed")
        if not self.batch_records:
            record = self._prediction_record(
                model_id, features, prediction, score, model_version, segments, probabilities,
                event_id, event_time,
            )  # fmt: skip
            self._send(
                self.predictions_topic, model_id, self.codec.encode("PredictionEvent", record)
            )
            return record["event_id"]
        # Fast path: the model's usual all-numeric feature names, a str label or none, a
        # float score or none, no segments or probabilities; checked with a few C-level calls.
        # Anything else, or anything in doubt, takes the general path below, which validates
        # exactly like a single event.
        fast = self._fast_layouts.get(model_id)
        if (
            fast is not None
            and type(features) is dict and len(features) == fast[1]
            and (prediction is None or (type(prediction) is str and len(prediction) <= _MAX_LEN))
            and (score is None or (type(score) is float and math.isfinite(score)))
            and type(model_version) is str and 0 < len(model_version) <= _MAX_LEN
            and segments is None and probabilities is None
            and (event_id is None or (type(event_id) is str and 0 < len(event_id) <= _MAX_LEN))
            and (event_time is None or (type(event_time) is int and event_time >= 0))
        ):  # fmt: skip
            layout, count, getter, size, codes = fast
            try:
                values = getter(features)  # the layout's names, in its order; KeyError if not
                # All exact floats as _float_blob stores them; size 0: this batch had ints.
                numeric = _dumps(values, _MARSHAL) if size else values
            except Exception:  # a missing name, a value marshal cannot write: general path
                numeric = None
            # The type codes sit at 5 (_BLOB_HEADER) + 9j; value j's most significant byte at
            # 5 + 9j + 8 (little-endian).
            if numeric is not None and not (
                size and len(numeric) == size and numeric[5::9] == codes
            ):
                # Not all exact floats: ints are numeric too (a bool is categorical). Until this
                # buffer is sent, skip marshal for this model: it sends ints.
                if _NUMBERS.issuperset(map(type, values)):
                    numeric = values
                    if size:
                        self._fast_layouts[model_id] = (layout, count, getter, 0, codes)
                else:
                    numeric = None
            if numeric is not None and (
                # All finite: no exponent of all ones. A blob's value has one only if its most
                # significant byte is 0x7f or 0xff (|x| >= 2**1009); then, or for tuples, ask
                # sum(), which keeps NaN/inf (and overflows to inf for huge finite values:
                # then the general path decides, and accepts them just the same).
                (numeric is not values and 127 not in (msb := numeric[13::9]) and 255 not in msb)
                or math.isfinite(sum(values))
            ):
                # _append and _event_id inlined: a function call is a noticeable part of
                # this path's budget.
                ids = self._ids
                eid = event_id if event_id is not None else ids.pop() if ids else self._event_id()
                row = (
                    layout, eid, model_version,
                    _time_ns() // 1_000_000 if event_time is None else event_time,
                    numeric, (), (), prediction, score, None, (),
                )  # fmt: skip
                lock = self._buffer_lock
                lock.acquire()  # not `with`: its __enter__/__exit__ cost twice acquire/release
                try:
                    buffer = self._predictions.get(model_id)
                    if buffer is not None:
                        rows = buffer.rows
                        rows.append(row)
                        self._buffered += 1
                        n = len(rows)
                finally:
                    lock.release()
                if buffer is None:
                    self._append(self._predictions, model_id, row)
                elif n >= self.batch_rows:
                    # Sent here, not by the background thread: handing 1000 rows to another
                    # thread measured slower under the GIL than converting them in place.
                    self._send_buffer(self._predictions, model_id)
                return eid
        record = self._prediction_record(
            model_id, features, prediction, score, model_version, segments, probabilities,
            event_id, event_time,
        )  # fmt: skip
        numeric = record["numeric_features"]
        categorical = record["categorical_features"]
        segs = record["segments"]
        probs = record["probabilities"] or {}
        layout = self._layout(tuple(numeric), tuple(categorical), tuple(segs), tuple(probs))
        if not categorical and not segs and not probs and len(numeric) == len(features) > 1:
            # All-numeric names that passed validation (count, lengths) become the model's fast
            # layout. (With one feature itemgetter would not return a tuple: general path.)
            if len(self._fast_layouts) > 10_000:
                self._fast_layouts.clear()  # bounded: a caller inventing model ids
            self._fast_layouts[model_id] = (
                layout, len(numeric), itemgetter(*numeric), *_blob_shape(len(numeric))
            )  # fmt: skip
        self._append(
            self._predictions,
            model_id,
            (
                layout, record["event_id"], record["model_version"], record["event_time"],
                _float_blob(numeric.values()), tuple(categorical.values()), tuple(segs.values()),
                record["prediction_label"], record["prediction_score"],
                record["prediction_value"], list(probs.values()),
            ),
        )  # fmt: skip
        return record["event_id"]

    def _prediction_record(
        self,
        model_id: str,
        features: Mapping[str, Any],
        prediction: str | float | int | bool | None,
        score: float | None,
        model_version: str,
        segments: Mapping[str, str] | None,
        probabilities: Mapping[str, float] | None,
        event_id: str | None,
        event_time: datetime | int | None,
    ) -> dict[str, Any]:
        """The validated PredictionEvent dict (ValueError if invalid)."""
        numeric, categorical = _split_features(features)
        label: str | None = None
        value: float | None = None
        if prediction is None:
            pass
        elif _is_bool(prediction):
            label = "true" if prediction else "false"
        elif isinstance(prediction, str):
            label = prediction
        elif isinstance(prediction, numbers.Real):
            value = float(prediction)
        else:
            raise ValueError(f"prediction must be str, number or bool, got {prediction!r:.80}")
        record = {
            "event_id": event_id if event_id is not None else self._event_id(),
            "model_id": model_id,
            "model_version": str(model_version),
            "event_time": to_millis(event_time),
            "numeric_features": numeric,
            "categorical_features": categorical,
            "segments": {str(k): str(v) for k, v in (segments or {}).items() if v is not None},
            "prediction_label": label,
            "prediction_score": None if score is None else float(score),
            "prediction_value": value,
            "probabilities": (
                None
                if probabilities is None
                else {str(k): float(v) for k, v in probabilities.items()}
            ),
        }
        validate_prediction(record, max_features=self.max_features)
        return record

    def log_outcome(
        self,
        prediction_id: str,
        model_id: str,
        label: str | bool | None = None,
        value: float | None = None,
        *,
        event_time: datetime | int | None = None,
        event_id: str | None = None,
    ) -> str:
        """Queue the ground truth for ``prediction_id``; returns the outcome's event id.

        Give ``label`` (classification; bools become "true"/"false") or ``value``
        (regression), or both. Raises ValueError (nothing is queued) if the event is invalid.
        """
        if self._closed:
            raise RuntimeError("producer is closed")
        # Fast path: the checks of validate_outcome on the usual types (str ids and label, a
        # float value, int millis), each a C-level call; anything else takes the general path.
        if (
            self.batch_records
            and type(prediction_id) is str and 0 < len(prediction_id) <= _MAX_LEN
            and type(model_id) is str and 0 < len(model_id) <= _MAX_LEN
            and (label is None or (type(label) is str and len(label) <= _MAX_LEN))
            and (value is None or (type(value) is float and math.isfinite(value)))
            and (label is not None or value is not None)
            and (event_id is None or (type(event_id) is str and 0 < len(event_id) <= _MAX_LEN))
            and (event_time is None or (type(event_time) is int and event_time >= 0))
        ):  # fmt: skip
            ids = self._ids
            eid = event_id if event_id is not None else ids.pop() if ids else self._event_id()
            row = (
                eid, prediction_id,
                _time_ns() // 1_000_000 if event_time is None else event_time, label, value,
            )  # fmt: skip
            self._append(self._outcomes, model_id, row)
            return eid
        if label is not None and _is_bool(label):
            label = "true" if label else "false"
        record = {
            "event_id": event_id if event_id is not None else self._event_id(),
            "prediction_id": prediction_id,
            "model_id": model_id,
            "event_time": to_millis(event_time),
            "label": label,
            "value": None if value is None else float(value),
        }
        validate_outcome(record)
        if not self.batch_records:
            self._send(self.outcomes_topic, model_id, self.codec.encode("OutcomeEvent", record))
        else:
            row = (record["event_id"], prediction_id, record["event_time"], label, record["value"])
            self._append(self._outcomes, model_id, row)
        return record["event_id"]

    # -- public API: columns ----------------------------------------------------------------

    def log_predictions(
        self,
        model_id: str,
        data: Mapping[str, Any] | pd.DataFrame | pa.Table,
        *,
        model_version: str | Sequence[str] | Any = "1",
        event_time: datetime | int | Any | None = None,
        event_ids: Sequence[str] | Any | None = None,
        labels: Sequence[str | None] | Any | None = None,
        scores: Sequence[float] | Any | None = None,
        values: Sequence[float] | Any | None = None,
        segments: Mapping[str, str | Sequence[str | None] | Any] | None = None,
        probabilities: Mapping[str, Sequence[float] | Any] | None = None,
    ) -> pa.Array:
        """Queue many predictions of one model given as columns; returns their event ids.

        ``data`` holds the features: a dict of arrays, a pandas DataFrame or a pyarrow Table.
        Integer and float columns are numeric features, where **NaN means missing** (as in
        pandas); other columns are categorical (bools as "true"/"false", None/NaN missing).
        ``model_version``, ``event_time`` (default now; datetimes or epoch millis) and
        segment values may be scalars or arrays; ``labels``/``scores``/``values`` arrays (None
        = no such column). ``event_ids`` default to random UUID4s. Nothing is queued and
        ValueError names the first bad row if any row is invalid (inf, empty ids, ...).

        >>> producer = DriftlineProducer("127.0.0.1:1", log_level=0)  # doctest: +SKIP
        >>> ids = producer.log_predictions("churn", {"age": [42, 37]}, labels=["y", "n"],
        ...                                event_time=1_700_000_000_000)  # doctest: +SKIP
        """
        self._check_open()
        cols = prediction_columns(
            model_id, data, model_version=model_version, event_time=event_time,
            event_ids=event_ids, labels=labels, scores=scores, values=values,
            segments=segments, probabilities=probabilities,
        )  # fmt: skip
        self.log_prediction_columns(cols)
        return cols.event_id

    def log_prediction_columns(self, cols: PredictionColumns) -> None:
        """Validate and queue ready-made PredictionColumns (ValueError if any row is bad)."""
        self._check_open()
        try:
            errors = validate_prediction_columns(cols, max_features=self.max_features)
        except ValueError as exc:
            raise ValueError(f"invalid predictions, nothing queued: {exc}") from None
        if errors:
            raise _refuse("prediction", errors)
        if not len(cols):
            return
        with self._send_lock:
            self._send_buffer(self._predictions, cols.model_id)  # keep the logged order
            if self.batch_records:
                self._send_columns(cols)
            else:
                for record in cols.to_records():
                    data = self.codec.encode("PredictionEvent", record)
                    self._send(self.predictions_topic, cols.model_id, data)

    def log_outcomes(
        self,
        model_id: str,
        prediction_ids: Sequence[str] | Any,
        *,
        labels: Sequence[str | None] | Any | None = None,
        values: Sequence[float] | Any | None = None,
        event_time: datetime | int | Any | None = None,
        event_ids: Sequence[str] | Any | None = None,
    ) -> pa.Array:
        """Queue many outcomes of one model; returns their event ids.

        Every row needs a label or a value (NaN = none). Validation as in
        :meth:`log_predictions`.
        """
        self._check_open()
        cols = outcome_columns(
            model_id, prediction_ids, labels=labels, values=values,
            event_time=event_time, event_ids=event_ids,
        )  # fmt: skip
        self.log_outcome_columns(cols)
        return cols.event_id

    def log_outcome_columns(self, cols: OutcomeColumns) -> None:
        """Validate and queue ready-made OutcomeColumns (ValueError if any row is bad)."""
        self._check_open()
        try:
            errors = validate_outcome_columns(cols)
        except ValueError as exc:
            raise ValueError(f"invalid outcomes, nothing queued: {exc}") from None
        if errors:
            raise _refuse("outcome", errors)
        if not len(cols):
            return
        with self._send_lock:
            self._send_buffer(self._outcomes, cols.model_id)
            if self.batch_records:
                self._send_columns(cols)
            else:
                for record in cols.to_records():
                    data = self.codec.encode("OutcomeEvent", record)
                    self._send(self.outcomes_topic, cols.model_id, data)

    # -- lifecycle ----------------------------------------------------------------------------

    def set_reference(
        self,
        model_id: str,
        data: Mapping[str, Any] | pd.DataFrame | pa.Table,
        *,
        version: str = "",
        categorical: Sequence[str] = (),
        prediction_score: str | None = None,
        prediction_value: str | None = None,
        prediction_label: str | None = None,
        uploaded_by: str = "",
        topic: str = topics.REFERENCES,
        timeout: float = 30.0,
    ) -> str:
        """Publish ``data`` (the model's training data: one row per event) as the model's
        reference profile; running workers test their windows against it from their next
        window on. Returns the profile's ``reference_id``.

        ``prediction_*`` name columns holding the model's outputs on that data;
        ``categorical`` forces columns to be labels. Bad data (empty, mixed types, non-finite,
        too large for one message) raises ``ValueError`` and sends nothing. Waits for the
        broker's acknowledgement: a reference is rare and should be durable when this returns.
        """
        from driftline.detectors.reference import prepare_reference

        self._check_open()
        profile = prepare_reference(
            data,
            model_id=model_id,
            version=version,
            categorical=categorical,
            prediction_score=prediction_score,
            prediction_value=prediction_value,
            prediction_label=prediction_label,
        )
        value = self.codec.encode(
            topics.REFERENCE_PROFILE, profile.to_record(_now_ms(), uploaded_by)
        )
        errors: list[str] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                errors.append(error.str())

        self._producer.produce(topic, value=value, key=model_id.encode(), on_delivery=delivered)
        if self._producer.flush(timeout) > 0:
            raise TimeoutError(f"reference for {model_id!r} not acknowledged within {timeout} s")
        if errors:
            raise RuntimeError(f"reference for {model_id!r} was not stored: {errors[0]}")
        return profile.reference_id

    def flush(self, timeout: float = 30.0) -> int:
        """Send every buffer, wait for acknowledgements; returns how many are still pending."""
        self._send_all()
        self._producer.flush(timeout)
        return self.pending

    def close(self, timeout: float = 30.0) -> int:
        """Flush and refuse further events; returns how many could not be delivered in time."""
        if self._closed:
            return self.pending
        remaining = self.flush(timeout)
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._at_exit is not None:
            atexit.unregister(self._at_exit)
            self._at_exit = None
        return remaining

    def __del__(self) -> None:
        # Safety net for a producer dropped without close(): send what is buffered.
        try:
            if not self._closed and self._buffered:
                self.close(5.0)
            self._stop.set()
            self._wake.set()
        except Exception:
            pass

    def __enter__(self) -> DriftlineProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
