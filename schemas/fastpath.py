"""A specialised decoder for PredictionEvent v1, the one record the workers see at full rate.

fastavro reads every map entry through its generic per-type dispatch, which costs about a
microsecond per feature; at 20 features that alone misses the 100k events/s budget. This module
reads the v1 layout directly and, for ``numeric_features`` and ``probabilities``, remembers the
byte layout of each feature-name set it meets: a model sends the same names in the same order
every time, so later events are checked against the remembered key bytes and all doubles are
unpacked with one ``struct`` call.

Contract: :func:`decode_prediction_v1` either returns exactly what fastavro would return for
the same bytes, or raises (any exception). The codec then decodes the message again with
fastavro, which is the reference and decides the DLQ reason. It is used only when the writer
schema is the shipped PredictionEvent v1 byte for byte; ``tests/schemas/test_fastpath.py``
checks parity with fastavro on generated, mutated and truncated messages.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["decode_prediction_v1"]

_unpack_double = struct.Struct("<d").unpack_from
# (count byte + first key bytes) -> layouts seen with that prefix; bounded, cleared when full.
_layouts: dict[bytes, list[tuple[struct.Struct, tuple[bytes, ...], tuple[str, ...]]]] = {}
_MAX_LAYOUT_KEYS = 4096
_MAX_LAYOUTS_PER_KEY = 4
_MAX_TEMPLATE_ENTRIES = 200


class _Mismatch(Exception):
    """Input the fast path does not handle; the caller falls back to fastavro."""


def _varint(b: bytes, p: int) -> tuple[int, int]:
    """Zigzag varint of at most 64 bits (like fastavro); raises on anything longer."""
    c = b[p]
    p += 1
    n = c & 0x7F
    shift = 7
    while c & 0x80:
        c = b[p]
        p += 1
        if shift == 63 and c > 1:
            raise _Mismatch("varint beyond 64 bits")
        n |= (c & 0x7F) << shift
        shift += 7
        if shift > 63 and c & 0x80:
            raise _Mismatch("varint longer than 10 bytes")
    return (n >> 1) ^ -(n & 1), p


def _string(b: bytes, p: int, size: int) -> tuple[str, int]:
    c = b[p]
    if c < 0x80:
        n = (c >> 1) ^ -(c & 1)
        p += 1
    else:
        n, p = _varint(b, p)
    e = p + n
    if n < 0 or e > size:
        raise _Mismatch("string length out of range")
    return b[p:e].decode(), e


def _block_count(b: bytes, p: int) -> tuple[int, int]:
    c = b[p]
    if c < 0x80:
        return (c >> 1) ^ -(c & 1), p + 1
    return _varint(b, p)


def _string_map(b: bytes, p: int, size: int) -> tuple[dict[str, str], int]:
    # Hot: string reads are inlined (one-byte lengths; longer ones take _string).
    out: dict[str, str] = {}
    while True:
        c = b[p]
        if c == 0:
            return out, p + 1
        n, p = _block_count(b, p)
        if n < 0:
            n = -n
            _, p = _varint(b, p)  # block byte size, unused
        for _ in range(n):
            c = b[p]
            if c < 0x80 and not c & 1:
                e = p + 1 + (c >> 1)
                if e > size:
                    raise _Mismatch("string length out of range")
                key = b[p + 1 : e].decode()
                p = e
            else:
                key, p = _string(b, p, size)
            c = b[p]
            if c < 0x80 and not c & 1:
                e = p + 1 + (c >> 1)
                if e > size:
                    raise _Mismatch("string length out of range")
                out[key] = b[p + 1 : e].decode()
                p = e
            else:
                out[key], p = _string(b, p, size)


def _double_map(b: bytes, p: int, size: int) -> tuple[dict[str, float], int]:
    c = b[p]
    if 0 < c < 0x80 and not c & 1 and p + 1 < size:
        # Single block of < 64 entries whose first key is < 64 bytes: try a known layout.
        k = b[p + 1]
        if k < 0x80:
            prefix = b[p : p + 2 + (k >> 1)]
            for layout, raw_keys, names in _layouts.get(prefix, ()):
                end = p + 1 + layout.size
                if end < size and b[end] == 0:
                    values = layout.unpack_from(b, p + 1)
                    if values[0::2] == raw_keys:
                        return dict(zip(names, values[1::2], strict=True)), end + 1
    return _double_map_generic(b, p, size)


def _double_map_generic(b: bytes, p: int, size: int) -> tuple[dict[str, float], int]:
    start = p
    out: dict[str, float] = {}
    raw_keys: list[bytes] = []
    blocks = 0
    while True:
        n, p = _block_count(b, p)
        if n == 0:
            break
        blocks += 1
        if n < 0:
            n = -n
            _, p = _varint(b, p)
        for _ in range(n):
            key_start = p
            key, p = _string(b, p, size)
            if p + 8 > size:
                raise _Mismatch("truncated double")
            raw_keys.append(b[key_start:p])
            out[key] = _unpack_double(b, p)[0]
            p += 8
    if blocks == 1 and len(out) == len(raw_keys) and 0 < len(raw_keys) <= _MAX_TEMPLATE_ENTRIES:
        _remember(b, start, raw_keys, tuple(out))
    return out, p


def _remember(b: bytes, start: int, raw_keys: list[bytes], names: tuple[str, ...]) -> None:
    c = b[start]
    first = raw_keys[0]
    if not (0 < c < 0x80) or first[0] >= 0x80:
        return  # the lookup only handles one-byte counts and key lengths
    if len(_layouts) >= _MAX_LAYOUT_KEYS:
        _layouts.clear()
    layout = struct.Struct("<" + "".join(f"{len(raw)}sd" for raw in raw_keys))
    candidates = _layouts.setdefault(bytes([c]) + first, [])
    if len(candidates) >= _MAX_LAYOUTS_PER_KEY:
        candidates.pop(0)
    candidates.append((layout, tuple(raw_keys), names))


def _optional_string(b: bytes, p: int, size: int) -> tuple[str | None, int]:
    branch = b[p]
    if branch == 0:
        return None, p + 1
    if branch == 2:
        return _string(b, p + 1, size)
    raise _Mismatch("union branch")


def _optional_double(b: bytes, p: int, size: int) -> tuple[float | None, int]:
    branch = b[p]
    if branch == 0:
        return None, p + 1
    if branch == 2 and p + 9 <= size:
        return _unpack_double(b, p + 1)[0], p + 9
    raise _Mismatch("union branch")


def decode_prediction_v1(b: bytes, p: int = 5) -> dict[str, Any]:
    """The PredictionEvent v1 record in ``b`` from offset ``p`` (times as int millis).

    Raises on any input it does not fully accept; see the module docstring.
    """
    size = len(b)
    # The three ids, inlined: one-byte lengths (< 64 bytes) are the common case.
    c = b[p]
    if c < 0x80 and not c & 1:
        e = p + 1 + (c >> 1)
        if e > size:
            raise _Mismatch("string length out of range")
        event_id = b[p + 1 : e].decode()
        p = e
    else:
        event_id, p = _string(b, p, size)
    c = b[p]
    if c < 0x80 and not c & 1:
        e = p + 1 + (c >> 1)
        if e > size:
            raise _Mismatch("string length out of range")
        model_id = b[p + 1 : e].decode()
        p = e
    else:
        model_id, p = _string(b, p, size)
    c = b[p]
    if c < 0x80 and not c & 1:
        e = p + 1 + (c >> 1)
        if e > size:
            raise _Mismatch("string length out of range")
        model_version = b[p + 1 : e].decode()
        p = e
    else:
        model_version, p = _string(b, p, size)
    event_time, p = _varint(b, p)
    numeric, p = _double_map(b, p, size)
    categorical, p = _string_map(b, p, size)
    segments, p = _string_map(b, p, size)
    label, p = _optional_string(b, p, size)
    score, p = _optional_double(b, p, size)
    value, p = _optional_double(b, p, size)
    branch = b[p]
    if branch == 0:
        probabilities = None
        p += 1
    elif branch == 2:
        probabilities, p = _double_map(b, p + 1, size)
    else:
        raise _Mismatch("union branch")
    if p != size:
        raise _Mismatch("trailing bytes")
    return {
        "event_id": event_id,
        "model_id": model_id,
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
