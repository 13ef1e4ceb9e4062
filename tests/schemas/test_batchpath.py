"""The batch fast paths agree with fastavro, the reference: decode returns exactly the raw
columns fastavro's record converts to (or raises, and the codec falls back); encode writes
fastavro's exact bytes. Plus decode_columns' message-level and row-level errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from driftline.schemas import Codec, DecodeError, topics
from driftline.schemas.batches import raw_from_record, record_from_columns
from driftline.schemas.batchpath import decode_outcome_batch, decode_prediction_batch
from driftline.schemas.columns import OutcomeColumns, PredictionColumns, split_columns
from driftline.schemas.validation import validate_outcome, validate_prediction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FAST = Codec()
REFERENCE = Codec(fast_paths=False)
HYP = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DECODERS = {"PredictionBatch": decode_prediction_batch, "OutcomeBatch": decode_outcome_batch}


def same(a: Any, b: Any) -> bool:
    """Raw forms equal: Arrow by value and validity, floats by their bits."""
    if isinstance(a, pa.Array):
        return isinstance(b, pa.Array) and a.type == b.type and a.equals(b)
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )  # fmt: skip
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def reference_raw(name: str, data: bytes) -> dict[str, Any] | None:
    try:
        got, record = REFERENCE.decode(data)
    except DecodeError:
        return None
    assert got == name
    return raw_from_record(name, record)


def check_parity(name: str, data: bytes) -> bool:
    """True if the fast path accepted ``data``; fails the test on any disagreement."""
    expected = reference_raw(name, data)
    try:
        got = DECODERS[name](data, 5)
    except Exception:
        return False  # the codec falls back to fastavro: always safe
    assert expected is not None, "fast path accepted bytes fastavro rejects"
    assert same(got, expected)
    return True


names = st.text(max_size=12)
floats = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def prediction_batches(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 12))
    opt_floats = st.lists(st.none() | floats, min_size=n, max_size=n)
    opt_strings = st.lists(st.none() | st.text(max_size=70), min_size=n, max_size=n)

    def columns(values: Any) -> Any:
        return st.lists(st.fixed_dictionaries({"name": names, "values": values}), max_size=4)

    return {
        "model_id": draw(st.text(max_size=20)),
        "event_id": draw(st.lists(st.text(max_size=70), min_size=n, max_size=n)),
        "model_version": draw(st.lists(st.text(max_size=3), min_size=n, max_size=n)),
        "event_time": draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)),
        "numeric_features": draw(columns(opt_floats)),
        "categorical_features": draw(columns(opt_strings)),
        "segments": draw(columns(opt_strings)),
        "prediction_label": draw(st.none() | opt_strings),
        "prediction_score": draw(st.none() | opt_floats),
        "prediction_value": draw(st.none() | opt_floats),
        "probabilities": draw(columns(opt_floats)),
    }


@st.composite
def outcome_batches(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 12))
    return {
        "model_id": draw(st.text(max_size=20)),
        "event_id": draw(st.lists(st.text(max_size=70), min_size=n, max_size=n)),
        "prediction_id": draw(st.lists(st.text(max_size=10), min_size=n, max_size=n)),
        "event_time": draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n)),
        "label": draw(
            st.none() | st.lists(st.none() | st.text(max_size=5), min_size=n, max_size=n)
        ),
        "value": draw(st.none() | st.lists(st.none() | floats, min_size=n, max_size=n)),
    }


@HYP
@given(prediction_batches())
def test_prediction_batches_decode_like_fastavro(record: dict[str, Any]) -> None:
    data = REFERENCE.encode("PredictionBatch", record)
    assert check_parity("PredictionBatch", data)


@HYP
@given(outcome_batches())
def test_outcome_batches_decode_like_fastavro(record: dict[str, Any]) -> None:
    data = REFERENCE.encode("OutcomeBatch", record)
    assert check_parity("OutcomeBatch", data)


@HYP
@given(prediction_batches(), st.data())
def test_mutated_and_truncated_messages_never_disagree(record: dict[str, Any], data: Any) -> None:
    raw = bytearray(REFERENCE.encode("PredictionBatch", record))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(5, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    check_parity("PredictionBatch", bytes(raw))
    cut = data.draw(st.integers(5, len(raw)))
    check_parity("PredictionBatch", bytes(raw[:cut]))


def test_multi_block_and_negative_block_counts() -> None:
    # A writer may split arrays into blocks; a negative count carries the block's byte size.
    def long(v: int) -> bytes:
        z = (v << 1) ^ (v >> 63)
        out = bytearray()
        while z >= 0x80:
            out.append((z & 0x7F) | 0x80)
            z >>= 7
        return bytes(out + bytes([z]))

    def string(s: str) -> bytes:
        return long(len(s.encode())) + s.encode()

    ids = long(-1) + long(len(string("a"))) + string("a") + long(1) + string("b") + long(0)
    times = long(2) + long(5) + long(6) + long(0)
    values = long(1) + b"\x02" + np.float64(1.5).tobytes() + long(-1) + long(1) + b"\x00" + long(0)
    body = (
        string("m") + ids + long(1) + string("a") + string("1") + long(0)  # event_id
    )
    # event_id with blocks, model_version: two of one block each, event_time in one block.
    body = string("m") + ids + long(2) + string("1") + string("1") + long(0) + times
    body += long(1) + string("x") + values + long(0)  # numeric_features
    body += long(0) + long(0) + b"\x00\x00\x00" + long(0)
    data = FAST.encode("PredictionBatch", {"model_id": "m", "event_id": [], "model_version": [],
        "event_time": [], "numeric_features": [], "categorical_features": [], "segments": []})[:5] + body  # fmt: skip
    assert check_parity("PredictionBatch", data)
    name, cols, errors = FAST.decode_columns(data, topics.PREDICTIONS)
    assert cols.event_id.to_pylist() == ["a", "b"] and errors == []
    assert (
        cols.numeric_names == ("x",)
        and cols.numeric[0, 0] == 1.5
        and math.isnan(cols.numeric[1, 0])
    )


def sample_predictions(n: int = 50) -> PredictionColumns:
    rng = np.random.default_rng(1)
    numeric = rng.normal(size=(n, 5))
    numeric[::7, 2] = np.nan
    probs = rng.random((n, 2))
    probs[::3] = np.nan
    return PredictionColumns(
        model_id="churn",
        event_id=pa.array([f"p{i}" for i in range(n)]),
        model_version=pa.array(["1" if i % 2 else "2" for i in range(n)]),
        event_time=np.arange(n, dtype=np.int64) + 1_700_000_000_000,
        numeric_names=tuple(f"f{j}" for j in range(5)),
        numeric=numeric,
        categorical={"plan": pa.array([None if i % 5 == 0 else "gold" for i in range(n)])},
        segments={"region": pa.array(["eu"] * n), "channel": pa.array([None] * n, pa.string())},
        prediction_label=pa.array([None if i % 4 == 0 else "yes" for i in range(n)]),
        prediction_score=rng.random(n),
        prediction_value=np.full(n, np.nan),
        probability_names=("yes", "no"),
        probabilities=probs,
    )


def sample_outcomes(n: int = 20) -> OutcomeColumns:
    return OutcomeColumns(
        model_id="churn",
        event_id=pa.array([f"o{i}" for i in range(n)]),
        prediction_id=pa.array([f"p{i}" for i in range(n)]),
        event_time=np.arange(n, dtype=np.int64),
        label=pa.array([None if i % 2 else "yes" for i in range(n)]),
        value=np.where(np.arange(n) % 2 == 1, 0.5, np.nan),
    )


@pytest.mark.parametrize("cols", [sample_predictions(), sample_outcomes(), sample_predictions(0)])
def test_encode_writes_fastavros_bytes_and_round_trips(cols: Any) -> None:
    name, record = record_from_columns(cols)
    fast = FAST.encode_columns(cols)
    assert fast == REFERENCE.encode(name, record) == REFERENCE.encode_columns(cols)
    assert fast[1:5] == FAST.schema_id(name).to_bytes(4, "big")
    topic = topics.SCHEMA_TOPICS[name]
    for codec in (FAST, REFERENCE):
        got_name, decoded, errors = codec.decode_columns(fast, topic)
        assert got_name == name and errors == []
        assert decoded.to_records() == cols.to_records()
    # Sliced columns (offsets into shared buffers) encode the same as fresh ones.
    part = cols.slice(1, len(cols)) if len(cols) > 1 else cols
    assert FAST.encode_columns(part) == REFERENCE.encode(*record_from_columns(part))


def test_row_errors_name_what_single_events_would_get() -> None:
    cols = sample_predictions(10)
    numeric = cols.numeric.copy()
    numeric[2, 1] = math.inf
    bad = PredictionColumns(**{
        **vars(cols), "numeric": numeric,
        "event_id": pa.array(["p0", "", *[f"p{i}" for i in range(2, 10)]]),
        "event_time": np.array([0, 1, 2, -5, 4, 5, 6, 7, 8, 9], dtype=np.int64),
    })  # fmt: skip
    # Non-null NaN in a score travels as NaN: only the decoder can tell it from null.
    record = record_from_columns(bad)[1]
    record["prediction_score"][4] = math.nan
    data = REFERENCE.encode("PredictionBatch", record)
    for codec in (FAST, REFERENCE):
        name, decoded, errors = codec.decode_columns(data, topics.PREDICTIONS)
        assert [(e.row, e.reason) for e in errors] == [
            (1, "missing_field"), (2, "non_finite_value"), (3, "invalid_value"),
            (4, "non_finite_value"),
        ]  # fmt: skip
        for error in errors:
            single = {k: v for k, v in record.items()}
            row = error.row
            event = {
                "event_id": single["event_id"][row], "model_id": "churn",
                "model_version": single["model_version"][row],
                "event_time": single["event_time"][row],
                "numeric_features": {
                    c["name"]: c["values"][row] for c in single["numeric_features"]
                    if c["values"][row] is not None
                },
                "prediction_score": single["prediction_score"][row],
            }  # fmt: skip
            with pytest.raises(ValueError) as exc:
                validate_prediction(event)
            assert exc.value.reason == error.reason  # type: ignore[attr-defined]
        assert len(decoded) == 10  # the good rows stay usable


def test_outcome_row_errors() -> None:
    cols = sample_outcomes(4)
    record = record_from_columns(cols)[1]
    record["label"][2] = None
    record["value"][2] = None  # neither label nor value
    record["prediction_id"][3] = ""
    data = REFERENCE.encode("OutcomeBatch", record)
    name, _, errors = FAST.decode_columns(data, topics.OUTCOMES)
    assert [(e.row, e.reason) for e in errors] == [(2, "missing_field"), (3, "missing_field")]
    with pytest.raises(ValueError, match="needs a label or a value"):
        validate_outcome({"event_id": "o", "prediction_id": "p", "model_id": "m", "event_time": 0})


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r["model_version"].pop(), "invalid_value"),  # ragged
        (lambda r: r["numeric_features"][0]["values"].append(1.0), "invalid_value"),
        (lambda r: r["numeric_features"].append(dict(r["numeric_features"][0])), "invalid_value"),
        (lambda r: r.update(model_id=""), "missing_field"),
    ],
)
def test_message_level_problems_raise(mutate: Any, reason: str) -> None:
    record = record_from_columns(sample_predictions(5))[1]
    mutate(record)
    data = REFERENCE.encode("PredictionBatch", record)
    for codec in (FAST, REFERENCE):
        with pytest.raises(DecodeError) as exc:
            codec.decode_columns(data, topics.PREDICTIONS)
        assert exc.value.reason == reason


def test_topic_checks_and_singles_pass_through() -> None:
    outcomes = FAST.encode_columns(sample_outcomes(3))
    with pytest.raises(DecodeError) as exc:
        FAST.decode_columns(outcomes, topics.PREDICTIONS)
    assert exc.value.reason == "wrong_schema_for_topic"
    single = {"event_id": "o", "prediction_id": "p", "model_id": "m", "event_time": 1,
              "label": "a", "value": None}  # fmt: skip
    data = FAST.encode("OutcomeEvent", single)
    assert FAST.decode_columns(data, topics.OUTCOMES) == ("OutcomeEvent", single, [])
    with pytest.raises(DecodeError) as exc:
        FAST.decode_columns(b"\x01garbage", topics.OUTCOMES)
    assert exc.value.reason == "not_confluent_framed"
    small = Codec(max_message_bytes=100)
    with pytest.raises(DecodeError) as exc:
        small.decode_columns(FAST.encode_columns(sample_predictions()), topics.PREDICTIONS)
    assert exc.value.reason == "too_large"


def test_split_keeps_every_message_under_the_cap() -> None:
    cols = sample_predictions(50)
    parts = split_columns(cols, max_rows=1000, max_bytes=2000)
    assert len(parts) > 1 and sum(map(len, parts)) == 50
    encoded = FAST.encode_columns_split(cols, max_rows=1000, max_bytes=2000)
    assert all(len(d) <= 2000 for d in encoded)
    back = PredictionColumns.concat(
        [FAST.decode_columns(d, topics.PREDICTIONS)[1] for d in encoded]
    )
    assert back.to_records() == cols.to_records()
    assert [len(p) for p in split_columns(cols, max_rows=20)] == [20, 20, 10]


def test_concat_unites_names_and_take_reorders() -> None:
    a = PredictionColumns.from_records(
        "m",
        [{"event_id": "1", "model_version": "1", "event_time": 0, "numeric_features": {"x": 1.0}}],
    )
    b = PredictionColumns.from_records("m", [
        {"event_id": "2", "model_version": "1", "event_time": 0, "numeric_features": {"y": 2.0},
         "categorical_features": {"c": "v"}}])  # fmt: skip
    both = PredictionColumns.concat([a, b])
    assert both.numeric_names == ("x", "y") and both.categorical["c"].to_pylist() == [None, "v"]
    assert [r["numeric_features"] for r in both.take(np.array([1, 0])).to_records()] == [
        {"y": 2.0},
        {"x": 1.0},
    ]
