"""Confluent-framed Avro: encode records to bytes, decode bytes to records or a DecodeError.

Wire format: byte 0 = ``0x00``, bytes 1-4 = big-endian schema id, then Avro binary.

Decoding is the worker's hot path, so everything that can be prepared once is: parsed fastavro
schemas per id, the 5-byte header per schema name. Times decode as **int epoch milliseconds**:
the reader uses a copy of the schema with the ``timestamp-millis`` logical type stripped (same
binary encoding), because building a ``datetime`` per timestamp costs time and every consumer
(detectors, ClickHouse, emitted events) wants millis anyway. Encoding accepts ints or datetimes.
PredictionEvents written with the shipped v1 schema are read by a specialised decoder
(``fastpath.py``) that returns the same records about twice as fast; anything it does not
accept is decoded again by fastavro, which stays the reference.

Whatever bytes arrive, ``decode`` either returns ``(schema_name, record)`` or raises
``DecodeError(reason, detail)`` with a DLQ reason code from ``topics``; the one exception is
``RegistryError`` when a configured registry cannot be reached, which says nothing about the
message (retry, do not dead-letter).

>>> codec = Codec()
>>> data = codec.encode("OutcomeEvent", {"event_id": "o1", "prediction_id": "p1",
...     "model_id": "churn", "event_time": 1700000000000, "label": "yes"})
>>> data[:5]
b'\\x00\\x00\\x00\\x00\\x02'
>>> codec.decode(data, expected="OutcomeEvent")[1]["label"]
'yes'
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from io import BytesIO
from typing import Any

from driftline.schemas import topics
from driftline.schemas.batches import (
    outcome_columns_from_raw,
    prediction_columns_from_raw,
    raw_from_record,
    record_from_columns,
)
from driftline.schemas.batchpath import (
    decode_outcome_batch,
    decode_prediction_batch,
    encode_outcome_batch,
    encode_prediction_batch,
)
from driftline.schemas.columns import OutcomeColumns, PredictionColumns, RowError, split_columns
from driftline.schemas.fastpath import decode_prediction_v1
from driftline.schemas.registry import (
    SCHEMA_FILES,
    SchemaRegistry,
    StaticRegistry,
    UnknownSchemaId,
    canonical,
    full_name,
    load_schema,
    qualify,
)
from driftline.schemas.validation import (
    DEFAULT_MAX_CLASSES,
    DEFAULT_MAX_FEATURES,
    DEFAULT_MAX_SEGMENTS,
    DEFAULT_MAX_STRING_LENGTH,
    InvalidEvent,
)
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "Codec", "DecodeError", "EncodeError", "strip_time_types"]

# Large enough for ~10k features; a prediction event past this is a bug or an attack.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
MAGIC = 0
_HEADER_SIZE = 5
_TIME_LOGICAL_TYPES = frozenset(
    {
        "timestamp-millis",
        "timestamp-micros",
        "timestamp-nanos",
        "local-timestamp-millis",
        "local-timestamp-micros",
        "local-timestamp-nanos",
        "date",
        "time-millis",
        "time-micros",
    }
)


class DecodeError(Exception):
    """Bytes that cannot become a record; ``reason`` is a DLQ reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class EncodeError(ValueError):
    """A record that does not fit its schema (caller's bug: wrong type, unknown field, ...)."""


def strip_time_types(schema: Any) -> Any:
    """Copy of ``schema`` without time logical types, so readers yield ints, not datetimes."""
    if isinstance(schema, dict):
        out = {k: strip_time_types(v) for k, v in schema.items()}
        if out.get("logicalType") in _TIME_LOGICAL_TYPES:
            del out["logicalType"]
        return out
    if isinstance(schema, list):
        return [strip_time_types(s) for s in schema]
    return schema


def _short(name: str) -> str:
    """Our own records go by short name; foreign ones keep their full name."""
    prefix = topics.NAMESPACE + "."
    return name[len(prefix) :] if name.startswith(prefix) else name


@dataclass(frozen=True)
class _Reader:
    name: str  # short for our records, full otherwise
    fullname: str
    writer: Any  # parsed, time types stripped
    reader: Any  # parsed local schema when the writer differs from it, else None
    fast: Callable[[bytes, int], dict[str, Any]] | None = None  # see fastpath.py
    batch: Callable[[bytes, int], dict[str, Any]] | None = None  # raw batch, see batchpath.py


@dataclass(frozen=True)
class _Writer:
    header: bytes
    parsed: Any


class Codec:
    """Encode/decode driftline events with Confluent framing.

    ``registry`` defaults to the static manifest. ``max_message_bytes`` caps what ``decode``
    accepts (``too_large``); it bounds the work any single message can cause. ``fast_paths``
    enables the specialised PredictionEvent v1 decoder (``fastpath.py``, about 2x fastavro,
    same results; fastavro stays the reference and the fallback).
    """

    def __init__(
        self,
        registry: SchemaRegistry | None = None,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        fast_paths: bool = True,
    ) -> None:
        if max_message_bytes < _HEADER_SIZE:
            raise ValueError(f"max_message_bytes must be >= {_HEADER_SIZE}")
        self.registry = registry if registry is not None else StaticRegistry()
        self.max_message_bytes = max_message_bytes
        self._local: dict[str, dict[str, Any]] = {}
        self._local_canonical: dict[str, str] = {}
        self._local_reader: dict[str, Any] = {}
        for short in SCHEMA_FILES:
            schema = load_schema(short)
            fullname = full_name(schema)
            self._local[fullname] = schema
            self._local_canonical[fullname] = canonical(schema)
            self._local_reader[fullname] = parse_schema(strip_time_types(schema))
        self._writers: dict[str, _Writer] = {}
        self._readers: dict[int, _Reader] = {}
        # The specialised PredictionEvent decoder knows the v1 layout only: it serves a schema
        # id only when both the writer schema and ours are exactly v1.
        v1 = resources.files("driftline.schemas").joinpath("history", "PredictionEvent", "v1.avsc")
        v1_canonical = canonical(v1.read_text())
        self._fast: dict[str, Callable[[bytes, int], dict[str, Any]]] = {}
        if fast_paths and self._local_canonical[qualify("PredictionEvent")] == v1_canonical:
            self._fast[v1_canonical] = decode_prediction_v1
        # The batch fast paths (batchpath.py), likewise for the exact v1 layouts only.
        self._batch: dict[str, Callable[[bytes, int], dict[str, Any]]] = {}
        self._fast_encoders: dict[str, Callable[[Any, bytes], bytes]] = {}
        for name, decoder, encoder in (
            (topics.PREDICTION_BATCH, decode_prediction_batch, encode_prediction_batch),
            (topics.OUTCOME_BATCH, decode_outcome_batch, encode_outcome_batch),
        ):
            path = resources.files("driftline.schemas").joinpath("history", name, "v1.avsc")
            v1_batch = canonical(path.read_text())
            if fast_paths and self._local_canonical[qualify(name)] == v1_batch:
                self._batch[v1_batch] = decoder
                self._fast_encoders[name] = encoder

    # -- encode -------------------------------------------------------------------------------

    def schema_id(self, schema_name: str) -> int:
        """Registry id that ``encode`` frames ``schema_name`` with (registers on first use)."""
        return int.from_bytes(self._writer(schema_name).header[1:], "big")

    def _writer(self, schema_name: str) -> _Writer:
        writer = self._writers.get(schema_name)
        if writer is not None:
            return writer
        fullname = qualify(schema_name)
        schema = self._local.get(fullname)
        if schema is None:
            raise EncodeError(f"unknown schema {schema_name!r}; known: {sorted(SCHEMA_FILES)}")
        schema_id = self.registry.register(topics.subject_for(_short(fullname)), schema)
        writer = _Writer(bytes([MAGIC]) + schema_id.to_bytes(4, "big"), parse_schema(schema))
        self._writers[schema_name] = writer
        return writer

    def encode(self, schema_name: str, record: Mapping[str, Any]) -> bytes:
        """Confluent-framed Avro bytes of ``record``; raises EncodeError if it does not fit.

        Unknown fields and missing fields without a default are errors (they are typos).
        """
        writer = self._writer(schema_name)
        buf = BytesIO()
        buf.write(writer.header)
        try:
            schemaless_writer(buf, writer.parsed, record, strict_allow_default=True)
        except Exception as exc:  # fastavro raises ValueError/TypeError/AttributeError/...
            raise EncodeError(f"{schema_name}: {exc}") from exc
        return buf.getvalue()

    # -- decode -------------------------------------------------------------------------------

    def _reader(self, schema_id: int) -> _Reader:
        try:
            schema = self.registry.schema_by_id(schema_id)
        except UnknownSchemaId:
            raise DecodeError(topics.UNKNOWN_SCHEMA_ID, f"schema id {schema_id}") from None
        try:
            fullname = full_name(schema) if schema.get("type") == "record" else "?"
            writer = parse_schema(strip_time_types(schema))
        except Exception as exc:  # a registry can hold schemas fastavro rejects
            raise DecodeError(
                topics.UNKNOWN_SCHEMA_ID, f"schema id {schema_id} unusable: {exc}"
            ) from None
        reader = None
        if fullname in self._local and canonical(schema) != self._local_canonical[fullname]:
            # Another version of one of our records: resolve it into the version we ship.
            reader = self._local_reader[fullname]
        elif fullname in self._local:
            writer = self._local_reader[fullname]
        fast = self._fast.get(canonical(schema)) if reader is None else None
        batch = self._batch.get(canonical(schema)) if reader is None else None
        result = _Reader(_short(fullname), fullname, writer, reader, fast, batch)
        self._readers[schema_id] = result
        return result

    def _frame(self, data: bytes) -> tuple[_Reader, int]:
        """The reader for framed ``data``; DecodeError if it is not framed or too large."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(topics.NOT_CONFLUENT_FRAMED, f"value is {type(data).__name__}")
        size = len(data)
        if size > self.max_message_bytes:
            raise DecodeError(
                topics.TOO_LARGE, f"{size} bytes > max_message_bytes={self.max_message_bytes}"
            )
        if size < _HEADER_SIZE or data[0] != MAGIC:
            raise DecodeError(
                topics.NOT_CONFLUENT_FRAMED,
                f"{size} bytes, first byte {data[0] if size else None}",
            )
        schema_id = int.from_bytes(data[1:5], "big")
        reader = self._readers.get(schema_id)
        if reader is None:
            reader = self._reader(schema_id)
        return reader, schema_id

    def _read(self, data: bytes, reader: _Reader, schema_id: int) -> dict[str, Any]:
        """The record in ``data`` read by fastavro, the reference; DecodeError if unreadable."""
        size = len(data)
        fo = BytesIO(data)
        fo.seek(_HEADER_SIZE)
        try:
            record = schemaless_reader(fo, reader.writer, reader.reader)
        except SchemaResolutionError as exc:
            raise DecodeError(topics.MISSING_FIELD, f"schema id {schema_id}: {exc}") from None
        except Exception as exc:  # truncated/garbage Avro surfaces as many exception types
            raise DecodeError(
                topics.UNDECODABLE, f"schema id {schema_id}: {type(exc).__name__}: {exc}"
            ) from None
        if fo.tell() != size:
            raise DecodeError(
                topics.UNDECODABLE, f"{size - fo.tell()} trailing bytes after the record"
            )
        if not isinstance(record, dict):
            raise DecodeError(topics.WRONG_SCHEMA_FOR_TOPIC, f"schema id {schema_id} not a record")
        return record

    def decode(self, data: bytes, expected: str | None = None) -> tuple[str, dict[str, Any]]:
        """``(schema_name, record)`` from framed bytes, or DecodeError with a DLQ reason.

        ``expected`` (short or full record name) turns a valid message of another record type
        into ``wrong_schema_for_topic``. A batch record decodes to fastavro's dict of lists
        here; :meth:`decode_columns` is the way to read batches.
        """
        reader, schema_id = self._frame(data)
        if expected is not None and expected != reader.name and expected != reader.fullname:
            raise DecodeError(
                topics.WRONG_SCHEMA_FOR_TOPIC,
                f"expected {expected}, got {reader.fullname} (schema id {schema_id})",
            )
        if reader.fast is not None:
            try:
                return reader.name, reader.fast(bytes(data), _HEADER_SIZE)
            except Exception:
                pass  # fastavro, the reference, decodes it or names the reason below
        return reader.name, self._read(data, reader, schema_id)

    def decode_columns(
        self,
        data: bytes,
        expected_topic: str,
        *,
        max_features: int = DEFAULT_MAX_FEATURES,
        max_segments: int = DEFAULT_MAX_SEGMENTS,
        max_classes: int = DEFAULT_MAX_CLASSES,
        max_string_length: int = DEFAULT_MAX_STRING_LENGTH,
    ) -> tuple[str, PredictionColumns | OutcomeColumns | dict[str, Any], list[RowError]]:
        """Decode a message of ``expected_topic``, a batch into columns.

        For a PredictionBatch/OutcomeBatch: ``(name, columns, row_errors)``, where each
        RowError names a row of ``columns`` that the caller must drop (dead-letter) and the
        reason that row would get as a single event; the other rows are valid (the caps are
        those of ``validation.py``). For a single PredictionEvent/OutcomeEvent:
        ``(name, record, [])`` exactly as :meth:`decode` returns it (not yet validated). A
        problem of the whole message raises DecodeError(reason, detail): not framed, too
        large, unknown schema id, undecodable, a record this topic does not carry, columns
        that cannot be aligned (``invalid_value``), an empty or too long ``model_id``.

        >>> from driftline.schemas.columns import OutcomeColumns
        >>> codec = Codec()
        >>> cols = OutcomeColumns.from_records("churn", [{"event_id": "o1",
        ...     "prediction_id": "p1", "event_time": 5, "label": "yes"}])
        >>> name, decoded, errors = codec.decode_columns(
        ...     codec.encode_columns(cols), topics.OUTCOMES)
        >>> name, decoded.label.to_pylist(), errors
        ('OutcomeBatch', ['yes'], [])
        """
        accepted = topics.TOPIC_RECORDS.get(expected_topic)
        if accepted is None:
            raise ValueError(f"{expected_topic!r} is not an Avro topic of driftline")
        reader, schema_id = self._frame(data)
        if reader.name not in accepted:
            raise DecodeError(
                topics.WRONG_SCHEMA_FOR_TOPIC,
                f"{expected_topic} carries {sorted(accepted)}, got {reader.fullname} "
                f"(schema id {schema_id})",
            )
        if reader.name not in topics.BATCH_RECORDS:
            name, record = self.decode(data)
            return name, record, []
        raw = None
        if reader.batch is not None:
            # Anything the fast path refuses, fastavro (the reference) decodes or names below.
            with contextlib.suppress(Exception):
                raw = reader.batch(bytes(data), _HEADER_SIZE)
        if raw is None:
            raw = raw_from_record(reader.name, self._read(data, reader, schema_id))
        try:
            if reader.name == topics.PREDICTION_BATCH:
                cols, errors = prediction_columns_from_raw(
                    raw,
                    max_features=max_features,
                    max_segments=max_segments,
                    max_classes=max_classes,
                    max_string_length=max_string_length,
                )
                return reader.name, cols, errors
            outcomes, errors = outcome_columns_from_raw(raw, max_string_length=max_string_length)
            return reader.name, outcomes, errors
        except InvalidEvent as exc:
            raise DecodeError(exc.reason, exc.detail) from None

    # -- columns ------------------------------------------------------------------------------

    def encode_columns(self, columns: PredictionColumns | OutcomeColumns) -> bytes:
        """One framed PredictionBatch/OutcomeBatch of ``columns``; EncodeError if it cannot be.

        Refuses null ids or versions and a result over ``max_message_bytes`` (split first:
        :func:`~driftline.schemas.columns.split_columns`). Values are not validated here:
        producers call ``validate_*_columns`` first. NaN is written as null.
        """
        name = (
            topics.OUTCOME_BATCH if isinstance(columns, OutcomeColumns) else topics.PREDICTION_BATCH
        )
        ids = (
            ("event_id", columns.event_id), ("prediction_id", columns.prediction_id)
        ) if isinstance(columns, OutcomeColumns) else (
            ("event_id", columns.event_id), ("model_version", columns.model_version)
        )  # fmt: skip
        for field, array in ids:
            if array.null_count:
                raise EncodeError(f"{name}: {field} has {array.null_count} nulls")
        writer = self._writer(name)
        encode = self._fast_encoders.get(name)
        if encode is not None:
            data = encode(columns, writer.header)
        else:
            data = self.encode(name, record_from_columns(columns)[1])
        if len(data) > self.max_message_bytes:
            raise EncodeError(
                f"{name} of {len(columns)} rows is {len(data)} bytes > max_message_bytes="
                f"{self.max_message_bytes}; split it with split_columns"
            )
        return data

    def encode_columns_split(
        self,
        columns: PredictionColumns | OutcomeColumns,
        *,
        max_rows: int = 1000,
        max_bytes: int = 900_000,
    ) -> list[bytes]:
        """``columns`` as framed batch records of at most ``max_rows`` rows / ~``max_bytes``."""
        return [
            self.encode_columns(part)
            for part in split_columns(columns, max_rows=max_rows, max_bytes=max_bytes)
        ]
