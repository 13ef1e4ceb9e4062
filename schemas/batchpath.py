"""Numba fast paths for the columnar records PredictionBatch v1 and OutcomeBatch v1.

A batch record is a handful of Avro arrays, so decoding is a walk over each array's bytes:
zigzag varints, blocks (a negative count is followed by the block's byte size), union branch
indexes, strings gathered straight into Arrow's offsets/data buffers
(``pa.StringArray.from_buffers``), doubles copied as bytes and viewed as float64. Each array
is read in one pass into buffers sized from the block counts (grown only when an array has
several blocks); no per-event Python object is made. Union branches are read as one byte:
a longer (non-canonical) encoding is left to fastavro. Encoding writes the same layout into
one preallocated byte buffer.

Contract, as in ``fastpath.py``: :func:`decode_prediction_batch` / :func:`decode_outcome_batch`
either return exactly what :func:`driftline.schemas.batches.raw_from_record` makes of
fastavro's record for the same bytes, or raise (any exception); the codec then decodes with
fastavro, which is the reference and decides the DLQ reason. The encoders produce exactly
fastavro's bytes for :func:`~driftline.schemas.batches.record_from_columns`. Only the v1
writer schemas are served. ``tests/schemas/test_batchpath.py`` checks both on generated,
mutated and truncated messages.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from driftline.schemas.columns import OutcomeColumns, PredictionColumns
from driftline.schemas.fastpath import _string as _py_string
from driftline.schemas.fastpath import _varint as _py_varint
from numba import njit

__all__ = [
    "decode_outcome_batch",
    "decode_prediction_batch",
    "encode_outcome_batch",
    "encode_prediction_batch",
]

_U8 = np.empty(0, np.uint8)
_BOOL = np.empty(0, np.bool_)


class _Mismatch(Exception):
    """Bytes the fast path does not accept; fastavro decides."""


# -- decode kernels --------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _varint(b, p, end):  # noqa: ANN001, ANN202 - Numba kernel
    """(zigzag-decoded value, next position); position -1 if malformed or > 64 bits."""
    if p < end and b[p] < 0x80:  # one byte: nearly every count, length and branch
        c = np.int64(b[p])
        return (c >> 1) ^ -(c & 1), np.int64(p + 1)
    result = np.uint64(0)
    shift = 0
    while True:
        if p >= end:
            return np.int64(0), np.int64(-1)
        c = b[p]
        p += 1
        if shift == 63 and c > 1:
            return np.int64(0), np.int64(-1)
        result |= np.uint64(c & 0x7F) << np.uint64(shift)
        if c < 0x80:
            break
        shift += 7
        if shift > 63:
            return np.int64(0), np.int64(-1)
    value = np.int64(result >> np.uint64(1)) ^ -np.int64(result & np.uint64(1))
    return value, np.int64(p)


@njit(cache=True, inline="always")
def _block(b, p, end):  # noqa: ANN001, ANN202
    """Item count of the next array block (0 ends the array); a negative count is followed
    by the block's byte size, which readers skip (as fastavro does)."""
    count, p = _varint(b, p, end)
    if p < 0:
        return np.int64(0), p
    if count < 0:
        count = -count
        if count < 0:  # -2**63
            return np.int64(0), np.int64(-1)
        _, p = _varint(b, p, end)
    return count, p


@njit(cache=True, inline="always")
def _grow(array, n, capacity):  # noqa: ANN001, ANN202
    """``array`` with room for ``capacity`` items, the first ``n`` kept."""
    if capacity <= len(array):
        return array
    out = np.empty(max(capacity, 2 * len(array)), array.dtype)
    out[:n] = array[:n]
    return out


@njit(cache=True)
def _read_strings(b, p, end, nullable):  # noqa: ANN001, ANN202
    """array<string> (``nullable``: array<union{null,string}>) in one pass.

    Returns (offsets, data, valid, next position or -1).
    """
    offsets = np.zeros(1, np.int32)
    data = np.empty(0, np.uint8)
    valid = np.empty(0, np.bool_)
    n = 0
    total = 0
    while True:
        count, p = _block(b, p, end)
        if p < 0 or count > end - p:  # every item takes at least one byte
            return offsets, data, valid, np.int64(-1)
        if count == 0:
            break
        offsets = _grow(offsets, n + 1, n + count + 1)
        valid = _grow(valid, n, n + count)
        for _ in range(count):
            if nullable:
                if p >= end:
                    return offsets, data, valid, np.int64(-1)
                branch = b[p]  # one byte; a longer encoding of 0 or 1 goes to fastavro
                p += 1
                if branch == 0:
                    valid[n] = False
                    offsets[n + 1] = total
                    n += 1
                    continue
                if branch != 2:
                    return offsets, data, valid, np.int64(-1)
            length, p = _varint(b, p, end)
            if p < 0 or length < 0 or length > end - p:
                return offsets, data, valid, np.int64(-1)
            data = _grow(data, total, total + length)
            for i in range(length):  # a loop: slicing costs more for short strings
                data[total + i] = b[p + i]
            total += length
            p += length
            valid[n] = True
            offsets[n + 1] = total
            n += 1
    return offsets[: n + 1], data[:total], valid[:n], p


@njit(cache=True)
def _read_doubles(b, p, end):  # noqa: ANN001, ANN202
    """array<union{null,double}> in one pass: (8 bytes per value, null -> 0.0; valid; p)."""
    out = np.empty(0, np.uint8)
    valid = np.empty(0, np.bool_)
    n = 0
    while True:
        count, p = _block(b, p, end)
        if p < 0 or count > end - p:
            return out, valid, np.int64(-1)
        if count == 0:
            break
        out = _grow(out, 8 * n, 8 * (n + count))
        valid = _grow(valid, n, n + count)
        for _ in range(count):
            if p >= end:
                return out, valid, np.int64(-1)
            branch = b[p]
            if branch == 2:
                if end - p < 9:
                    return out, valid, np.int64(-1)
                valid[n] = True
                for i in range(8):
                    out[8 * n + i] = b[p + 1 + i]
                p += 9
            elif branch == 0:
                valid[n] = False
                for i in range(8):
                    out[8 * n + i] = 0
                p += 1
            else:
                return out, valid, np.int64(-1)
            n += 1
    return out[: 8 * n], valid[:n], p


@njit(cache=True)
def _read_longs(b, p, end):  # noqa: ANN001, ANN202
    out = np.empty(0, np.int64)
    n = 0
    while True:
        count, p = _block(b, p, end)
        if p < 0 or count > end - p:
            return out, np.int64(-1)
        if count == 0:
            break
        out = _grow(out, n, n + count)
        for _ in range(count):
            value, p = _varint(b, p, end)
            if p < 0:
                return out, np.int64(-1)
            out[n] = value
            n += 1
    return out[:n], p


# -- decode drivers ----------------------------------------------------------------------------


def _strings(b: np.ndarray, p: int, end: int, nullable: bool) -> tuple[pa.Array, int]:
    offsets, data, valid, q = _read_strings(b, p, end, nullable)
    if q < 0:
        raise _Mismatch("string array")
    n = len(valid)
    nulls = n - int(np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    array = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data), bitmap, nulls)
    array.validate(full=True)  # UTF-8, as fastavro's str decoding demands
    return array, int(q)


def _doubles(b: np.ndarray, p: int, end: int) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    out, valid, q = _read_doubles(b, p, end)
    if q < 0:
        raise _Mismatch("double array")
    return (out.view("<f8").astype(np.float64, copy=False), valid), int(q)


def _longs(b: np.ndarray, p: int, end: int) -> tuple[np.ndarray, int]:
    out, q = _read_longs(b, p, end)
    if q < 0:
        raise _Mismatch("long array")
    return out, int(q)


def _columns(
    data: bytes, b: np.ndarray, p: int, end: int, numeric: bool
) -> tuple[list[tuple[Any, ...]], int]:
    """array<NumericColumn> or array<StringColumn>: [(name, values...)]."""
    out: list[tuple[Any, ...]] = []
    while True:
        count, p = _py_varint(data, p)
        if count == 0:
            return out, p
        if count < 0:
            count = -count
            _, p = _py_varint(data, p)
        for _ in range(count):
            name, p = _py_string(data, p, end)
            if numeric:
                (values, valid), p = _doubles(b, p, end)
                out.append((name, values, valid))
            else:
                strings, p = _strings(b, p, end, True)
                out.append((name, strings))


def _branch(data: bytes, p: int) -> tuple[bool, int]:
    """Union {null, X}: True if X follows."""
    branch, p = _py_varint(data, p)
    if branch not in (0, 1):
        raise _Mismatch("union branch")
    return branch == 1, p


def decode_prediction_batch(data: bytes, p: int = 5) -> dict[str, Any]:
    """The raw PredictionBatch v1 in ``data`` from offset ``p`` (see ``batches.py``)."""
    b = np.frombuffer(data, np.uint8)
    end = len(data)
    model_id, p = _py_string(data, p, end)
    event_id, p = _strings(b, p, end, False)
    model_version, p = _strings(b, p, end, False)
    event_time, p = _longs(b, p, end)
    numeric, p = _columns(data, b, p, end, True)
    categorical, p = _columns(data, b, p, end, False)
    segments, p = _columns(data, b, p, end, False)
    label = score = value = None
    present, p = _branch(data, p)
    if present:
        label, p = _strings(b, p, end, True)
    present, p = _branch(data, p)
    if present:
        score, p = _doubles(b, p, end)
    present, p = _branch(data, p)
    if present:
        value, p = _doubles(b, p, end)
    probabilities, p = _columns(data, b, p, end, True)
    if p != end:
        raise _Mismatch("trailing bytes")
    return {
        "model_id": model_id,
        "event_id": event_id,
        "model_version": model_version,
        "event_time": event_time,
        "numeric_features": numeric,
        "categorical_features": categorical,
        "segments": segments,
        "prediction_label": label,
        "prediction_score": score,
        "prediction_value": value,
        "probabilities": probabilities,
    }


def decode_outcome_batch(data: bytes, p: int = 5) -> dict[str, Any]:
    """The raw OutcomeBatch v1 in ``data`` from offset ``p``."""
    b = np.frombuffer(data, np.uint8)
    end = len(data)
    model_id, p = _py_string(data, p, end)
    event_id, p = _strings(b, p, end, False)
    prediction_id, p = _strings(b, p, end, False)
    event_time, p = _longs(b, p, end)
    label = value = None
    present, p = _branch(data, p)
    if present:
        label, p = _strings(b, p, end, True)
    present, p = _branch(data, p)
    if present:
        value, p = _doubles(b, p, end)
    if p != end:
        raise _Mismatch("trailing bytes")
    return {
        "model_id": model_id,
        "event_id": event_id,
        "prediction_id": prediction_id,
        "event_time": event_time,
        "label": label,
        "value": value,
    }


# -- encode kernels ----------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _put_varint(out, p, value):  # noqa: ANN001, ANN202
    n = np.uint64((value << 1) ^ (value >> 63))
    while n >= 0x80:
        out[p] = np.uint8((n & np.uint64(0x7F)) | np.uint64(0x80))
        p += 1
        n >>= np.uint64(7)
    out[p] = np.uint8(n)
    return p + 1


@njit(cache=True, nogil=True)
def _put_strings(out, p, offsets, data, valid, nullable):  # noqa: ANN001, ANN202
    """array<string> (``nullable``: array<union{null,string}>); ``valid`` empty = no nulls."""
    n = len(offsets) - 1
    if n > 0:
        p = _put_varint(out, p, np.int64(n))
        check = len(valid) > 0
        for i in range(n):
            if nullable:
                if check and not valid[i]:
                    out[p] = 0
                    p += 1
                    continue
                out[p] = 2
                p += 1
            start = offsets[i]
            length = offsets[i + 1] - start
            p = _put_varint(out, p, np.int64(length))
            for c in range(length):
                out[p + c] = data[start + c]
            p += length
    out[p] = 0
    return p + 1


@njit(cache=True, nogil=True)
def _put_doubles(out, p, values, raw, j):  # noqa: ANN001, ANN202
    """Column ``j`` of ``values`` (n, k) as array<union{null,double}>; NaN -> null.

    ``raw`` is ``values`` viewed as bytes (n, 8k), so doubles are copied, not converted.
    """
    n = values.shape[0]
    if n > 0:
        p = _put_varint(out, p, np.int64(n))
        for i in range(n):
            v = values[i, j]
            if v != v:
                out[p] = 0
                p += 1
            else:
                out[p] = 2
                for c in range(8):
                    out[p + 1 + c] = raw[i, 8 * j + c]
                p += 9
    out[p] = 0
    return p + 1


@njit(cache=True, nogil=True)
def _put_longs(out, p, values):  # noqa: ANN001, ANN202
    n = len(values)
    if n > 0:
        p = _put_varint(out, p, np.int64(n))
        for i in range(n):
            p = _put_varint(out, p, values[i])
    out[p] = 0
    return p + 1


@njit(cache=True, nogil=True)
def _put_numeric_columns(out, p, name_offsets, name_data, values, raw):  # noqa: ANN001, ANN202
    """array<NumericColumn>: one column per name, values from the matrix."""
    k = len(name_offsets) - 1
    if k > 0:
        p = _put_varint(out, p, np.int64(k))
        for j in range(k):
            start = name_offsets[j]
            length = name_offsets[j + 1] - start
            p = _put_varint(out, p, np.int64(length))
            out[p : p + length] = name_data[start : start + length]
            p += length
            p = _put_doubles(out, p, values, raw, j)
    out[p] = 0
    return p + 1


# -- encode drivers ----------------------------------------------------------------------------


def _string_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets rebased to the array's slice, data, valid or empty when there are no nulls)."""
    n = len(array)
    buffers = array.buffers()
    if n == 0:
        return np.zeros(1, np.int32), _U8, _BOOL
    offsets = np.frombuffer(buffers[1], np.int32, n + 1, array.offset * 4)
    data = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else _U8
    valid = array.is_valid().to_numpy(zero_copy_only=False) if array.null_count else _BOOL
    return offsets, data, valid


def _string_size(array: pa.Array) -> int:
    n = len(array)
    if n == 0:
        return 1
    offsets = np.frombuffer(array.buffers()[1], np.int32, n + 1, array.offset * 4)
    return 11 + 11 * n + int(offsets[-1] - offsets[0])


def _names(names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    encoded = [name.encode() for name in names]
    offsets = np.zeros(len(encoded) + 1, np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return offsets, np.frombuffer(b"".join(encoded), np.uint8), int(offsets[-1])


def _matrix_size(matrix: np.ndarray, name_bytes: int) -> int:
    n, k = matrix.shape
    return 11 + k * (11 + 11 + 9 * n) + name_bytes


class _Out:
    """A preallocated byte buffer and a write position."""

    def __init__(self, size: int, header: bytes) -> None:
        self.buf = np.empty(size, np.uint8)
        self.buf[: len(header)] = np.frombuffer(header, np.uint8)
        self.p = len(header)

    def string(self, text: str) -> None:
        raw = text.encode()
        self.p = _put_varint(self.buf, self.p, np.int64(len(raw)))
        self.buf[self.p : self.p + len(raw)] = np.frombuffer(raw, np.uint8)
        self.p += len(raw)

    def strings(self, array: pa.Array, nullable: bool) -> None:
        offsets, data, valid = _string_buffers(array)
        self.p = _put_strings(self.buf, self.p, offsets, data, valid, nullable)

    def string_columns(self, columns: dict[str, pa.Array]) -> None:
        if columns:
            self.p = _put_varint(self.buf, self.p, np.int64(len(columns)))
            for name, array in columns.items():
                self.string(name)
                self.strings(array, True)
        self.buf[self.p] = 0
        self.p += 1

    def matrix(self, names: tuple[str, ...], matrix: np.ndarray) -> None:
        offsets, data, _ = _names(names)
        values = np.ascontiguousarray(matrix, dtype=np.float64)
        raw = values.view(np.uint8).reshape(values.shape[0], 8 * values.shape[1])
        self.p = _put_numeric_columns(self.buf, self.p, offsets, data, values, raw)

    def optional_strings(self, array: pa.Array) -> None:
        if array.null_count == len(array):
            self.buf[self.p] = 0
            self.p += 1
        else:
            self.buf[self.p] = 2
            self.p += 1
            self.strings(array, True)

    def optional_doubles(self, values: np.ndarray) -> None:
        if np.isnan(values).all():
            self.buf[self.p] = 0
            self.p += 1
        else:
            self.buf[self.p] = 2
            column = np.ascontiguousarray(values, dtype=np.float64).reshape(-1, 1)
            raw = column.view(np.uint8).reshape(len(column), 8)
            self.p = _put_doubles(self.buf, self.p + 1, column, raw, 0)

    def bytes(self) -> bytes:
        return self.buf[: self.p].tobytes()


def encode_prediction_batch(cols: PredictionColumns, header: bytes) -> bytes:
    """``header`` + PredictionBatch v1 Avro of ``cols`` (fastavro's exact bytes)."""
    cat = sum(_string_size(a) + 11 + len(k) * 4 for k, a in cols.categorical.items())
    seg = sum(_string_size(a) + 11 + len(k) * 4 for k, a in cols.segments.items())
    size = (
        len(header) + 11 + 4 * len(cols.model_id)
        + _string_size(cols.event_id) + _string_size(cols.model_version)
        + 11 + 10 * len(cols) + cat + 1 + seg + 1
        + 1 + _string_size(cols.prediction_label) + 2 * (1 + 11 + 9 * len(cols))
        + _matrix_size(cols.numeric, 4 * sum(map(len, cols.numeric_names)))
        + _matrix_size(cols.probabilities, 4 * sum(map(len, cols.probability_names)))
    )  # fmt: skip
    out = _Out(size, header)
    out.string(cols.model_id)
    out.strings(cols.event_id, False)
    out.strings(cols.model_version, False)
    out.p = _put_longs(out.buf, out.p, np.ascontiguousarray(cols.event_time, dtype=np.int64))
    out.matrix(cols.numeric_names, cols.numeric)
    out.string_columns(cols.categorical)
    out.string_columns(cols.segments)
    out.optional_strings(cols.prediction_label)
    out.optional_doubles(cols.prediction_score)
    out.optional_doubles(cols.prediction_value)
    out.matrix(cols.probability_names, cols.probabilities)
    return out.bytes()


def encode_outcome_batch(cols: OutcomeColumns, header: bytes) -> bytes:
    """``header`` + OutcomeBatch v1 Avro of ``cols`` (fastavro's exact bytes)."""
    size = (
        len(header) + 11 + 4 * len(cols.model_id)
        + _string_size(cols.event_id) + _string_size(cols.prediction_id)
        + 11 + 10 * len(cols) + 1 + _string_size(cols.label) + 1 + 11 + 9 * len(cols)
    )  # fmt: skip
    out = _Out(size, header)
    out.string(cols.model_id)
    out.strings(cols.event_id, False)
    out.strings(cols.prediction_id, False)
    out.p = _put_longs(out.buf, out.p, np.ascontiguousarray(cols.event_time, dtype=np.int64))
    out.optional_strings(cols.label)
    out.optional_doubles(cols.value)
    return out.bytes()
