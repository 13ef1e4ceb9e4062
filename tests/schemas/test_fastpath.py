"""The specialised PredictionEvent v1 decoder returns exactly what fastavro returns, or raises.

fastavro (through a Codec with fast paths off) is the reference, as river is for detectors.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from driftline.schemas import Codec, DecodeError, load_schema
from driftline.schemas.fastpath import decode_prediction_v1
from driftline.schemas.registry import StaticRegistry
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FAST = Codec()
REFERENCE = Codec(fast_paths=False)
HYP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def norm(obj: Any) -> Any:
    """Comparable form: floats by their bits, so NaN equals NaN and -0.0 differs from 0.0."""
    if isinstance(obj, float):
        return struct.pack("<d", obj)
    if isinstance(obj, dict):
        return {k: norm(v) for k, v in obj.items()}
    return obj


def reference(data: bytes) -> dict[str, Any] | None:
    try:
        return REFERENCE.decode(data)[1]
    except DecodeError:
        return None


def check_parity(data: bytes) -> bool:
    """True if the fast path accepted ``data``; fails the test on any disagreement."""
    expected = reference(data)
    try:
        got = decode_prediction_v1(data, 5)
    except Exception:
        return False  # the codec falls back to fastavro: always safe
    assert expected is not None, "fast path accepted bytes fastavro rejects"
    assert norm(got) == norm(expected)
    assert list(got) == list(expected)
    assert list(got["numeric_features"]) == list(expected["numeric_features"])
    return True


names = st.text(max_size=70)  # past 63 bytes a length takes two varint bytes
floats = st.floats(allow_nan=True, allow_infinity=True)
double_maps = st.dictionaries(names, floats, max_size=25)
string_maps = st.dictionaries(names, st.text(max_size=70), max_size=4)
predictions = st.fixed_dictionaries(
    {
        "event_id": st.text(max_size=80),
        "model_id": st.text(max_size=20),
        "model_version": st.text(max_size=5),
        "event_time": st.integers(-(2**63), 2**63 - 1),
        "numeric_features": double_maps,
        "categorical_features": string_maps,
        "segments": string_maps,
        "prediction_label": st.none() | st.text(max_size=10),
        "prediction_score": st.none() | floats,
        "prediction_value": st.none() | floats,
        "probabilities": st.none() | double_maps,
    }
)


@HYP
@given(predictions)
def test_valid_events_decode_identically(record: dict[str, Any]) -> None:
    data = FAST.encode("PredictionEvent", record)
    assert check_parity(data)
    assert check_parity(data)  # second time through a remembered key layout
    assert norm(FAST.decode(data)[1]) == norm(record)


@HYP
@given(predictions, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4))
def test_mutated_events_never_disagree(
    record: dict[str, Any], flips: list[tuple[int, int]]
) -> None:
    data = bytearray(FAST.encode("PredictionEvent", record))
    check_parity(bytes(data))  # remember its layout, so mutations also hit the layout path
    for at, value in flips:
        data[5 + at % (len(data) - 5)] = value
    check_parity(bytes(data))


def sample(**overrides: Any) -> dict[str, Any]:
    record = {
        "event_id": "p-1",
        "model_id": "churn",
        "model_version": "3",
        "event_time": 1_700_000_000_000,
        "numeric_features": {f"f{i}": i / 3 for i in range(20)},
        "categorical_features": {"plan": "gold"},
        "segments": {"region": "eu"},
        "prediction_score": 0.5,
    }
    record.update(overrides)
    return record


def test_every_truncation_is_refused_by_both() -> None:
    data = FAST.encode("PredictionEvent", sample(probabilities={"a": 0.1, "b": 0.9}))
    check_parity(data)
    for cut in range(5, len(data)):
        assert not check_parity(data[:cut])
        with pytest.raises(DecodeError):
            FAST.decode(data[:cut])


def test_layouts_with_the_same_first_key_and_count_are_told_apart() -> None:
    a = FAST.encode("PredictionEvent", sample(numeric_features={"age": 1.0, "income": 2.0}))
    b = FAST.encode("PredictionEvent", sample(numeric_features={"age": 3.0, "height": 4.0}))
    c = FAST.encode("PredictionEvent", sample(numeric_features={"age": 5.0, "incomf": 6.0}))
    for data in (a, b, c, a, b, c):
        assert check_parity(data)
    assert FAST.decode(c)[1]["numeric_features"] == {"age": 5.0, "incomf": 6.0}


def zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def avro_string(s: str) -> bytes:
    raw = s.encode()
    return zigzag(len(raw)) + raw


def test_multi_block_and_sized_block_maps() -> None:
    # Other Avro writers (Java, with a block size) may split maps: legal, and must decode.
    entry = lambda k, v: avro_string(k) + struct.pack("<d", v)  # noqa: E731
    block2 = entry("c", 3.0)
    numeric = (
        zigzag(2) + entry("a", 1.0) + entry("b", 2.0)
        + zigzag(-1) + zigzag(len(block2)) + block2
        + b"\x00"
    )  # fmt: skip
    body = (
        avro_string("p-9") + avro_string("m") + avro_string("1") + zigzag(1234)
        + numeric
        + zigzag(-1) + zigzag(len(avro_string("k") + avro_string("v")))
        + avro_string("k") + avro_string("v") + b"\x00"
        + b"\x00"  # segments: empty
        + b"\x00\x00\x00\x00"  # four null unions
    )  # fmt: skip
    data = b"\x00\x00\x00\x00\x01" + body
    assert check_parity(data)
    assert FAST.decode(data)[1]["numeric_features"] == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert FAST.decode(data)[1]["categorical_features"] == {"k": "v"}


def test_non_minimal_varints_fall_back_and_still_decode() -> None:
    data = bytearray(FAST.encode("PredictionEvent", sample(prediction_score=None)))
    # prediction_score is the third-to-last field; rewrite the final null as a 2-byte zero.
    assert data[-3:] == b"\x00\x00\x00"
    padded = bytes(data[:-1]) + b"\x80\x00"
    assert not check_parity(padded)
    assert FAST.decode(padded)[1] == REFERENCE.decode(padded)[1]


def test_fast_path_serves_only_the_exact_v1_writer() -> None:
    assert FAST._readers.get(1) is None or FAST._readers[1].fast is decode_prediction_v1
    FAST.decode(FAST.encode("PredictionEvent", sample()))
    assert FAST._readers[1].fast is decode_prediction_v1
    assert REFERENCE._readers.get(1) is None or REFERENCE._readers[1].fast is None

    class Older(StaticRegistry):
        def schema_by_id(self, schema_id: int) -> dict[str, Any]:
            if schema_id == 70:
                old = load_schema("PredictionEvent")
                old["fields"] = [f for f in old["fields"] if f["name"] != "probabilities"]
                return old
            return super().schema_by_id(schema_id)

    codec = Codec(Older())
    data = REFERENCE.encode("PredictionEvent", sample())
    body = data[5:-1]  # the same bytes minus the trailing probabilities null
    name, record = codec.decode(b"\x00\x00\x00\x00\x46" + body)
    assert name == "PredictionEvent" and record["probabilities"] is None
    assert codec._readers[70].fast is None
