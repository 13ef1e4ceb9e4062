"""Many single-event messages (PredictionEvent v1 / OutcomeEvent v1) straight into columns.

Producers in other languages send one event per Kafka message. Decoding each to a dict,
validating it in Python and then building columns with ``from_records`` costs ~130 µs per
prediction+outcome; here a whole poll of messages is concatenated into one byte buffer and a
Numba kernel walks it once, recording where each string lies (offsets into the buffer) and
copying numbers into preallocated arrays. Columns are then gathered from those positions and
validated with the vectorised ``validate_*_columns``.

What the kernel takes, per message: the Confluent header with the schema id of the v1 record
(only when the registry's schema for that id, and ours, are exactly v1), a fully consumed
record, strict UTF-8 strings, single-byte union branches, and numeric features whose names
are, byte for byte, those of a template (the first accepted message's names; a model sends
the same names in the same order every time). Probabilities are null/empty or follow their
own template. Messages with another layout are retried in a few more passes with a new
template (interleaved models); the rest - other schema, truncated, garbage, duplicate map
keys, layouts beyond those passes - are returned in ``rest`` for ``Codec.decode``, which
stays the reference and names DLQ reasons.

Contract, as in ``fastpath.py``: for every message taken, the run's columns are exactly
``from_records(model_id, [Codec.decode(m)[1] for m in run])`` and ``row_errors`` holds exactly
the ``InvalidEvent`` reason/detail ``validate_prediction`` / ``validate_outcome`` raise for that
record. Rows the vectorised checks flag are re-checked with the single-event validator (rare,
and it guarantees identical reasons where the vectorised order could differ). Runs whose
model_id itself is invalid go to ``rest`` (the single-event path reports the right field).
``tests/schemas/test_singlepath.py`` checks parity on generated, mutated and truncated input.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import pyarrow as pa
from driftline.schemas.batchpath import _block, _varint
from driftline.schemas.codec import Codec
from driftline.schemas.columns import OutcomeColumns, PredictionColumns, RowError
from driftline.schemas.registry import RegistryError, UnknownSchemaId, canonical, qualify
from driftline.schemas.validation import (
    DEFAULT_MAX_CLASSES,
    DEFAULT_MAX_FEATURES,
    DEFAULT_MAX_SEGMENTS,
    DEFAULT_MAX_STRING_LENGTH,
    InvalidEvent,
    validate_outcome,
    validate_outcome_columns,
    validate_prediction,
    validate_prediction_columns,
)
from numba import njit

__all__ = ["DecodedRun", "decode_outcomes", "decode_predictions"]

_OK, _LAYOUT, _OTHER = 0, 1, 2
_MAX_PASSES = 4  # layouts (models) per call served; more go to rest
_MAX_MODELS = 256  # distinct model ids per pass (a linear search: usually one per partition)
_MAX_KEYS = 64  # distinct categorical / segment names per pass
_STRING = pa.string()
_I64 = np.empty(0, np.int64)
# Per codec: (prediction schema id, outcome schema id), each None if the fast path is off.
_ids: weakref.WeakKeyDictionary[Codec, dict[str, int | None]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class DecodedRun:
    """Consecutive-in-input rows of one model, decoded and validated."""

    columns: PredictionColumns | OutcomeColumns  # rows in input order, all of one model
    indices: np.ndarray  # int64: index in the input of each row
    row_errors: list[RowError]  # rows the caller must dead-letter (row = row in columns)


# -- kernels -------------------------------------------------------------------------------------


@njit(cache=True)
def _utf8(b, s, n):  # noqa: ANN001, ANN202 - Numba kernel
    """Strict UTF-8 as Python's ``bytes.decode`` (no overlongs, surrogates, > U+10FFFF)."""
    i = s
    e = s + n
    while i < e:
        c = b[i]
        if c < 0x80:
            i += 1
            continue
        lo = 0x80
        hi = 0xBF
        if c < 0xC2:
            return False
        if c < 0xE0:
            need = 1
        elif c < 0xF0:
            need = 2
            if c == 0xE0:
                lo = 0xA0
            elif c == 0xED:
                hi = 0x9F
        elif c < 0xF5:
            need = 3
            if c == 0xF0:
                lo = 0x90
            elif c == 0xF4:
                hi = 0x8F
        else:
            return False
        if i + need >= e:
            return False
        c1 = b[i + 1]
        if c1 < lo or c1 > hi:
            return False
        for j in range(2, need + 1):
            if b[i + j] & 0xC0 != 0x80:
                return False
        i += need + 1
    return True


@njit(cache=True, inline="always")
def _string(b, p, end):  # noqa: ANN001, ANN202
    """(start, length, next position) of a UTF-8 string; next position -1 if not accepted."""
    n, p = _varint(b, p, end)
    if p < 0 or n < 0 or n > end - p or not _utf8(b, p, n):
        return np.int64(0), np.int64(0), np.int64(-1)
    return p, n, p + n


@njit(cache=True, inline="always")
def _same(b, s1, n1, s2, n2):  # noqa: ANN001, ANN202
    if n1 != n2:
        return False
    for i in range(n1):  # noqa: SIM110 - Numba compiles loops, not generator expressions
        if b[s1 + i] != b[s2 + i]:
            return False
    return True


@njit(cache=True)
def _header(b, p, end, schema_id, max_bytes):  # noqa: ANN001, ANN202
    if end - p < 5 or end - p > max_bytes or b[p] != 0:
        return False
    got = (np.int64(b[p + 1]) << 24) | (np.int64(b[p + 2]) << 16)
    got |= (np.int64(b[p + 3]) << 8) | np.int64(b[p + 4])
    return got == schema_id


@njit(cache=True)
def _model(b, s, n, models, nm):  # noqa: ANN001, ANN202
    """Index of model id bytes (s, n) in ``models`` (rows of start, length), added if new;
    -1 when the table is full. ``nm`` is a one-item array: the table's size."""
    count = nm[0]
    for j in range(count - 1, -1, -1):  # the last one added is the likely one
        if _same(b, s, n, models[j, 0], models[j, 1]):
            return j
    if count == len(models):
        return -1
    models[count, 0] = s
    models[count, 1] = n
    nm[0] = count + 1
    return count


@njit(cache=True)
def _double_map(b, p, end, names, values):  # noqa: ANN001, ANN202
    """map<double>: names (start, length rows) and values into scratch arrays (grown as
    needed); returns (count, next position or -1, names, values)."""
    m = 0
    while True:
        count, p = _block(b, p, end)
        if p < 0 or count > end - p:
            return m, np.int64(-1), names, values
        if count == 0:
            return m, p, names, values
        if m + count > len(values):
            grown_names = np.empty((2 * (m + count), 2), np.int64)
            grown_names[:m] = names[:m]
            names = grown_names
            grown = np.empty(2 * (m + count), np.float64)
            grown[:m] = values[:m]
            values = grown
        for _ in range(count):
            s, n, p = _string(b, p, end)
            if p < 0 or end - p < 8:
                return m, np.int64(-1), names, values
            names[m, 0] = s
            names[m, 1] = n
            values[m] = b[p : p + 8].view(np.float64)[0]
            p += 8
            m += 1


@njit(cache=True)
def _matches(b, names, m, template, k):  # noqa: ANN001, ANN202
    if m != k:
        return False
    for j in range(m):  # noqa: SIM110 - Numba compiles loops, not generator expressions
        if not _same(b, names[j, 0], names[j, 1], template[j, 0], template[j, 1]):
            return False
    return True


@njit(cache=True)
def _unique(b, names, m):  # noqa: ANN001, ANN202
    # Quadratic, but only for a template (once per pass): a repeated key would make the
    # record's dict shorter than the map on the wire.
    for i in range(m):
        for j in range(i):
            if _same(b, names[i, 0], names[i, 1], names[j, 0], names[j, 1]):
                return False
    return True


@njit(cache=True)
def _string_map(b, p, end, row, field, entries, ne, keys, nk):  # noqa: ANN001, ANN202
    """map<string> of message ``row`` into ``entries`` rows (row, field, key index, value
    start, value length); key names are interned per field in ``keys[field]`` (start, length;
    ``nk[field]`` used). Returns (next position or -1, entries, ne); a repeated key or a full
    key table is -1 (the single-event path decides)."""
    first = ne
    while True:
        count, p = _block(b, p, end)
        if p < 0 or count > end - p:
            return np.int64(-1), entries, ne
        if count == 0:
            return p, entries, ne
        if ne + count > len(entries):
            grown = np.empty((2 * (ne + count), 5), np.int64)
            grown[:ne] = entries[:ne]
            entries = grown
        for _ in range(count):
            ks, kn, p = _string(b, p, end)
            if p < 0:
                return np.int64(-1), entries, ne
            vs, vn, p = _string(b, p, end)
            if p < 0:
                return np.int64(-1), entries, ne
            key = -1
            for j in range(nk[field]):
                if _same(b, ks, kn, keys[field, j, 0], keys[field, j, 1]):
                    key = j
                    break
            if key < 0:
                if nk[field] == keys.shape[1]:
                    return np.int64(-1), entries, ne
                key = nk[field]
                keys[field, key, 0] = ks
                keys[field, key, 1] = kn
                nk[field] += 1
            for e in range(first, ne):
                if entries[e, 2] == key:
                    return np.int64(-1), entries, ne
            entries[ne, 0] = row
            entries[ne, 1] = field
            entries[ne, 2] = key
            entries[ne, 3] = vs
            entries[ne, 4] = vn
            ne += 1


@njit(cache=True)
def _optional_double(b, p, end):  # noqa: ANN001, ANN202
    """(value, present, next position or -1) of union {null, double} (one-byte branch)."""
    if p >= end:
        return 0.0, False, np.int64(-1)
    if b[p] == 0:
        return 0.0, False, p + 1
    if b[p] != 2 or end - p < 9:
        return 0.0, False, np.int64(-1)
    return b[p + 1 : p + 9].view(np.float64)[0], True, p + 9


@njit(cache=True)
def _scan_predictions(b, starts, todo, schema_id, max_bytes, max_models, max_keys):  # noqa: ANN001, ANN202, PLR0915
    n = len(todo)
    status = np.full(n, _OTHER, np.int8)
    # (start, length) of event_id, model_id, model_version, prediction_label
    strs = np.zeros((n, 8), np.int64)
    times = np.zeros(n, np.int64)
    model = np.full(n, -1, np.int64)
    # label present, score present, value present, probabilities non-empty
    flags = np.zeros((n, 4), np.bool_)
    score = np.zeros(n, np.float64)
    value = np.zeros(n, np.float64)
    models = np.zeros((max_models, 2), np.int64)
    nm = np.zeros(1, np.int64)
    keys = np.zeros((2, max_keys, 2), np.int64)
    nk = np.zeros(2, np.int64)
    entries = np.empty((max(16, 4 * n), 5), np.int64)
    ne = 0
    num_names = np.empty((32, 2), np.int64)
    num_values = np.empty(32, np.float64)
    prob_names = np.empty((32, 2), np.int64)
    prob_values = np.empty(32, np.float64)
    template = np.empty((0, 2), np.int64)
    k = -1  # numeric template size, -1 until a message sets it
    numeric = np.empty((0, 0), np.float64)
    prob_template = np.empty((0, 2), np.int64)
    kp = -1
    probs = np.empty((0, 0), np.float64)
    for t in range(n):
        i = todo[t]
        p = starts[i]
        end = starts[i + 1]
        if not _header(b, p, end, schema_id, max_bytes):
            continue
        p += 5
        ne0 = ne
        bad = False
        for f in range(3):
            s, ln, p = _string(b, p, end)
            if p < 0:
                bad = True
                break
            strs[t, 2 * f] = s
            strs[t, 2 * f + 1] = ln
        if bad:
            continue
        mi = _model(b, strs[t, 2], strs[t, 3], models, nm)
        if mi < 0:
            continue
        model[t] = mi
        when, p = _varint(b, p, end)
        if p < 0:
            continue
        times[t] = when
        m, p, num_names, num_values = _double_map(b, p, end, num_names, num_values)
        if p < 0:
            continue
        if k >= 0 and not _matches(b, num_names, m, template, k):
            status[t] = _LAYOUT
            continue
        p, entries, ne = _string_map(b, p, end, t, 0, entries, ne, keys, nk)
        if p < 0:
            ne = ne0
            continue
        p, entries, ne = _string_map(b, p, end, t, 1, entries, ne, keys, nk)
        if p < 0 or p >= end:
            ne = ne0
            continue
        if b[p] == 2:
            s, ln, p = _string(b, p + 1, end)
            if p < 0:
                ne = ne0
                continue
            strs[t, 6] = s
            strs[t, 7] = ln
            flags[t, 0] = True
        elif b[p] == 0:
            p += 1
        else:
            ne = ne0
            continue
        x, present, p = _optional_double(b, p, end)
        if p < 0:
            ne = ne0
            continue
        score[t] = x
        flags[t, 1] = present
        x, present, p = _optional_double(b, p, end)
        if p < 0 or p >= end:
            ne = ne0
            continue
        value[t] = x
        flags[t, 2] = present
        mp = 0
        if b[p] == 2:
            mp, p, prob_names, prob_values = _double_map(b, p + 1, end, prob_names, prob_values)
            if p < 0:
                ne = ne0
                continue
        elif b[p] == 0:
            p += 1
        else:
            ne = ne0
            continue
        if p != end:  # trailing bytes: the reference refuses them
            ne = ne0
            continue
        if mp > 0 and kp >= 0 and not _matches(b, prob_names, mp, prob_template, kp):
            status[t] = _LAYOUT
            ne = ne0
            continue
        if k < 0 or (mp > 0 and kp < 0):
            # Adopt templates from this message, unless a name repeats.
            if (k < 0 and not _unique(b, num_names, m)) or (
                mp > 0 and kp < 0 and not _unique(b, prob_names, mp)
            ):
                ne = ne0
                continue
            if k < 0:
                k = m
                template = num_names[:m].copy()
                numeric = np.empty((n, k), np.float64)
            if mp > 0 and kp < 0:
                kp = mp
                prob_template = prob_names[:mp].copy()
                probs = np.empty((n, kp), np.float64)
        numeric[t, :] = num_values[:k]
        if mp > 0:
            probs[t, :] = prob_values[:kp]
            flags[t, 3] = True
        status[t] = _OK
    return (
        status, strs, times, model, flags, score, value, models[: nm[0]], keys, nk,
        entries[:ne], template, numeric, prob_template, probs,
    )  # fmt: skip


@njit(cache=True)
def _scan_outcomes(b, starts, todo, schema_id, max_bytes, max_models):  # noqa: ANN001, ANN202
    n = len(todo)
    status = np.full(n, _OTHER, np.int8)
    strs = np.zeros((n, 8), np.int64)  # event_id, prediction_id, model_id, label
    times = np.zeros(n, np.int64)
    model = np.full(n, -1, np.int64)
    flags = np.zeros((n, 2), np.bool_)  # label present, value present
    value = np.zeros(n, np.float64)
    models = np.zeros((max_models, 2), np.int64)
    nm = np.zeros(1, np.int64)
    for t in range(n):
        i = todo[t]
        p = starts[i]
        end = starts[i + 1]
        if not _header(b, p, end, schema_id, max_bytes):
            continue
        p += 5
        bad = False
        for f in range(3):
            s, ln, p = _string(b, p, end)
            if p < 0:
                bad = True
                break
            strs[t, 2 * f] = s
            strs[t, 2 * f + 1] = ln
        if bad:
            continue
        mi = _model(b, strs[t, 4], strs[t, 5], models, nm)
        if mi < 0:
            continue
        model[t] = mi
        when, p = _varint(b, p, end)
        if p < 0 or p >= end:
            continue
        times[t] = when
        if b[p] == 2:
            s, ln, p = _string(b, p + 1, end)
            if p < 0:
                continue
            strs[t, 6] = s
            strs[t, 7] = ln
            flags[t, 0] = True
        elif b[p] == 0:
            p += 1
        else:
            continue
        x, present, p = _optional_double(b, p, end)
        if p != end:
            continue
        value[t] = x
        flags[t, 1] = present
        status[t] = _OK
    return status, strs, times, model, flags, value, models[: nm[0]]


@njit(cache=True)
def _gather(b, starts, lengths):  # noqa: ANN001, ANN202
    """Arrow string buffers (int32 offsets, data) of the byte ranges; length 0 for nulls."""
    n = len(starts)
    offsets = np.empty(n + 1, np.int32)
    offsets[0] = 0
    total = 0
    for i in range(n):
        total += lengths[i]
        offsets[i + 1] = total
    data = np.empty(total, np.uint8)
    q = 0
    for i in range(n):
        s = starts[i]
        for c in range(lengths[i]):  # a loop: slicing costs more for short strings
            data[q + c] = b[s + c]
        q += lengths[i]
    return offsets, data


# -- drivers -------------------------------------------------------------------------------------


def _strings(b: np.ndarray, starts: np.ndarray, lengths: np.ndarray, valid: Any = None) -> pa.Array:
    """A string array of byte ranges of ``b`` (UTF-8 already checked by the kernel)."""
    if valid is not None:
        lengths = np.where(valid, lengths, 0)
    offsets, data = _gather(b, np.ascontiguousarray(starts), np.ascontiguousarray(lengths))
    n = len(starts)
    nulls = 0 if valid is None else n - int(np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data), bitmap, nulls)


def _text(b: np.ndarray, start: int, length: int) -> str:
    return b[start : start + length].tobytes().decode()


def _concat(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(buffer, offsets of n+1, indices of values that are not bytes-like)."""
    if all(type(v) is bytes for v in values):
        parts: list[bytes] = list(values)
        skipped = _I64
    else:
        parts = []
        skip: list[int] = []
        for i, v in enumerate(values):
            if isinstance(v, bytes | bytearray | memoryview):
                parts.append(bytes(v))
            else:  # None (a tombstone) or a foreign type: Codec.decode names the reason
                parts.append(b"")
                skip.append(i)
        skipped = np.array(skip, np.int64)
    starts = np.zeros(len(parts) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)), out=starts[1:])
    return np.frombuffer(b"".join(parts), np.uint8), starts, skipped


def _schema_id(codec: Codec, name: str) -> int | None:
    """The id ``codec`` frames ``name`` with, if both it and our schema are exactly v1."""
    known = _ids.setdefault(codec, {})
    if name in known:
        return known[name]
    path = resources.files("driftline.schemas").joinpath("history", name, "v1.avsc")
    v1 = canonical(path.read_text())
    schema_id: int | None = None
    if canonical(codec._local[qualify(name)]) == v1:
        try:
            candidate = codec.schema_id(name)
            if canonical(codec.registry.schema_by_id(candidate)) == v1:
                schema_id = candidate
        except (RegistryError, UnknownSchemaId):
            schema_id = None
    known[name] = schema_id
    return schema_id


def _setup(
    values: Sequence[Any], codec: Codec, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None]:
    b, starts, skipped = _concat(values)
    schema_id = _schema_id(codec, name)
    todo = np.arange(len(values), dtype=np.int64)
    if skipped.size:
        todo = np.setdiff1d(todo, skipped)
    if schema_id is None or len(b) >= 2**31:  # int32 Arrow offsets
        todo = _I64
    return b, starts, todo, schema_id


def _valid_model_id(model_id: str, max_len: int) -> bool:
    return model_id != "" and len(model_id) <= max_len


def _recheck(
    errors: list[RowError], indices: np.ndarray, values: Sequence[Any], codec: Codec, check: Any
) -> list[RowError]:
    """The single-event validator's exact reason for each flagged row (rare rows only)."""
    out = []
    for err in errors:
        record = codec.decode(values[int(indices[err.row])])[1]
        try:
            check(record)
        except InvalidEvent as exc:
            out.append(RowError(err.row, exc.reason, exc.detail))
    return out


def _choose_passes(
    passes: list[tuple[np.ndarray, np.ndarray, list[str]]],
) -> tuple[dict[str, tuple[int, np.ndarray]], list[np.ndarray]]:
    """Per model the pass holding its earliest message (one layout per run); the model's
    messages in other passes go to rest. ``passes``: (todo, model index, model names)."""
    first: dict[str, tuple[int, int]] = {}
    for pi, (todo, model, names) in enumerate(passes):
        ok = model >= 0
        if not ok.any():
            continue
        uniq, where = np.unique(model[ok], return_index=True)
        for mi, w in zip(uniq.tolist(), where.tolist(), strict=True):
            idx = int(todo[ok][w])
            name = names[mi]
            if name not in first or idx < first[name][1]:
                first[name] = (pi, idx)
    chosen: dict[str, tuple[int, np.ndarray]] = {}
    rest: list[np.ndarray] = []
    for pi, (todo, model, names) in enumerate(passes):
        for mi, name in enumerate(names):
            local = np.flatnonzero(model == mi)
            if local.size == 0:
                continue
            if first[name][0] == pi:
                chosen[name] = (pi, local)
            else:
                rest.append(todo[local])
    return chosen, rest


def decode_predictions(
    values: Sequence[bytes],
    codec: Codec,
    *,
    max_features: int = DEFAULT_MAX_FEATURES,
    max_segments: int = DEFAULT_MAX_SEGMENTS,
    max_classes: int = DEFAULT_MAX_CLASSES,
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH,
) -> tuple[list[DecodedRun], np.ndarray]:
    """Runs (one per model, in order of first message) and ``rest`` (int64 input indices the
    caller decodes one by one with ``Codec.decode``). See the module docstring."""
    b, starts, todo, schema_id = _setup(values, codec, "PredictionEvent")
    rest: list[np.ndarray] = [np.setdiff1d(np.arange(len(values), dtype=np.int64), todo)]
    scans: list[tuple[Any, ...]] = []
    passes: list[tuple[np.ndarray, np.ndarray, list[str]]] = []
    for _ in range(_MAX_PASSES):
        if todo.size == 0:
            break
        scan = _scan_predictions(
            b, starts, todo, schema_id, codec.max_message_bytes, _MAX_MODELS, _MAX_KEYS
        )
        status, model, models = scan[0], scan[3], scan[7]
        rest.append(todo[status == _OTHER])
        names = [_text(b, s, n) for s, n in models.tolist()]
        passes.append((todo, np.where(status == _OK, model, -1), names))
        scans.append(scan)
        todo = todo[status == _LAYOUT]
    rest.append(todo)
    chosen, more = _choose_passes(passes)
    rest.extend(more)
    runs: list[DecodedRun] = []
    for model_id, (pi, local) in chosen.items():
        indices = passes[pi][0][local]
        if not _valid_model_id(model_id, max_string_length):
            rest.append(indices)
            continue
        cols, hidden = _prediction_columns(b, scans[pi], local, model_id)
        errors = validate_prediction_columns(
            cols,
            non_finite=hidden,
            max_features=max_features,
            max_segments=max_segments,
            max_classes=max_classes,
            max_string_length=max_string_length,
        )
        if errors:
            errors = _recheck(
                errors,
                indices,
                values,
                codec,
                lambda r: validate_prediction(
                    r,
                    max_features=max_features,
                    max_segments=max_segments,
                    max_classes=max_classes,
                    max_string_length=max_string_length,
                ),
            )
        runs.append(DecodedRun(cols, indices, errors))
    return _finish(runs, rest)


def _finish(runs: list[DecodedRun], rest: list[np.ndarray]) -> tuple[list[DecodedRun], np.ndarray]:
    runs.sort(key=lambda run: int(run.indices[0]))
    return runs, np.sort(np.concatenate(rest)) if rest else _I64


def _string_columns(
    b: np.ndarray,
    entries: np.ndarray,
    keys: np.ndarray,
    nk: np.ndarray,
    field: int,
    row_in_run: np.ndarray,
    m: int,
) -> dict[str, pa.Array]:
    """``from_records``' dict of string columns: names in first-appearance order over the
    run's rows (then map order), None where a row lacks the name."""
    if entries.shape[0] == 0:
        return {}
    rows = row_in_run[entries[:, 0]]
    sel = np.flatnonzero((rows >= 0) & (entries[:, 1] == field))
    if sel.size == 0:
        return {}
    key = entries[sel, 2]
    uniq, first = np.unique(key, return_index=True)
    order = uniq[np.argsort(first)]
    values = _strings(b, entries[sel, 3], entries[sel, 4])
    position = np.full((int(nk[field]), m), -1, np.int64)
    position[key, rows[sel]] = np.arange(sel.size)
    out: dict[str, pa.Array] = {}
    for j in order.tolist():
        pos = position[j]
        name = _text(b, int(keys[field, j, 0]), int(keys[field, j, 1]))
        out[name] = values.take(pa.array(pos, mask=pos < 0))
    return out


def _prediction_columns(
    b: np.ndarray, scan: tuple[Any, ...], local: np.ndarray, model_id: str
) -> tuple[PredictionColumns, dict[str, np.ndarray]]:
    (
        _status, strs, times, _model, flags, score, value, _models, keys, nk,
        entries, template, numeric, prob_template, probs,
    ) = scan  # fmt: skip
    m = len(local)
    s = strs[local]
    f = flags[local]
    hidden: dict[str, np.ndarray] = {}
    k = len(template)
    if k:
        matrix = numeric[local]
        nan = np.isnan(matrix)
        if nan.any():  # every template name is present: a NaN was on the wire
            hidden["numeric_features"] = nan
    else:
        matrix = np.empty((m, 0), np.float64)
    numeric_names = tuple(_text(b, int(a), int(n)) for a, n in template.tolist())
    present = f[:, 3]
    if present.any():
        probabilities = np.where(present[:, None], probs[local], np.nan)
        probability_names = tuple(_text(b, int(a), int(n)) for a, n in prob_template.tolist())
        nan = np.isnan(probabilities) & present[:, None]
        if nan.any():
            hidden["probabilities"] = nan
    else:
        probabilities = np.empty((m, 0), np.float64)
        probability_names = ()
    optional = {}
    for field, column, valid in (
        ("prediction_score", score[local], f[:, 1]),
        ("prediction_value", value[local], f[:, 2]),
    ):
        optional[field] = np.where(valid, column, np.nan)
        nan = valid & np.isnan(column)
        if nan.any():
            hidden[field] = nan
    row_in_run = np.full(len(strs), -1, np.int64)
    row_in_run[local] = np.arange(m)
    cols = PredictionColumns(
        model_id=model_id,
        event_id=_strings(b, s[:, 0], s[:, 1]),
        model_version=_strings(b, s[:, 4], s[:, 5]),
        event_time=times[local],
        numeric_names=numeric_names,
        numeric=np.ascontiguousarray(matrix),
        categorical=_string_columns(b, entries, keys, nk, 0, row_in_run, m),
        segments=_string_columns(b, entries, keys, nk, 1, row_in_run, m),
        prediction_label=_strings(b, s[:, 6], s[:, 7], f[:, 0]),
        prediction_score=optional["prediction_score"],
        prediction_value=optional["prediction_value"],
        probability_names=probability_names,
        probabilities=np.ascontiguousarray(probabilities),
    )
    return cols, hidden


def decode_outcomes(
    values: Sequence[bytes],
    codec: Codec,
    *,
    max_string_length: int = DEFAULT_MAX_STRING_LENGTH,
) -> tuple[list[DecodedRun], np.ndarray]:
    """Like :func:`decode_predictions`, for OutcomeEvent v1 messages."""
    b, starts, todo, schema_id = _setup(values, codec, "OutcomeEvent")
    rest: list[np.ndarray] = [np.setdiff1d(np.arange(len(values), dtype=np.int64), todo)]
    runs: list[DecodedRun] = []
    if todo.size == 0:
        return _finish(runs, rest)
    status, strs, times, model, flags, value, models = _scan_outcomes(
        b, starts, todo, schema_id, codec.max_message_bytes, _MAX_MODELS
    )
    rest.append(todo[status != _OK])
    model = np.where(status == _OK, model, -1)
    for mi, (start, length) in enumerate(models.tolist()):
        local = np.flatnonzero(model == mi)
        if local.size == 0:
            continue
        indices = todo[local]
        model_id = _text(b, start, length)
        if not _valid_model_id(model_id, max_string_length):
            rest.append(indices)
            continue
        s = strs[local]
        f = flags[local]
        column = value[local]
        nan = f[:, 1] & np.isnan(column)
        cols = OutcomeColumns(
            model_id=model_id,
            event_id=_strings(b, s[:, 0], s[:, 1]),
            prediction_id=_strings(b, s[:, 2], s[:, 3]),
            event_time=times[local],
            label=_strings(b, s[:, 6], s[:, 7], f[:, 0]),
            value=np.where(f[:, 1], column, np.nan),
        )
        errors = validate_outcome_columns(
            cols,
            non_finite={"value": nan} if nan.any() else None,
            max_string_length=max_string_length,
        )
        if errors:
            errors = _recheck(
                errors,
                indices,
                values,
                codec,
                lambda r: validate_outcome(r, max_string_length=max_string_length),
            )
        runs.append(DecodedRun(cols, indices, errors))
    return _finish(runs, rest)
