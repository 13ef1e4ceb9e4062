"""decode_predictions / decode_outcomes agree with the reference path: for every message they
take, the run's columns are exactly ``Codec.decode`` (fastavro) + ``from_records`` and the row
errors exactly the single-event validators'; everything else is handed back in ``rest``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from driftline.schemas import Codec, DecodeError
from driftline.schemas.columns import OutcomeColumns, PredictionColumns
from driftline.schemas.singlepath import DecodedRun, decode_outcomes, decode_predictions
from driftline.schemas.validation import InvalidEvent, validate_outcome, validate_prediction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CODEC = Codec()
REFERENCE = Codec(fast_paths=False)
HYP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(a: Any, b: Any) -> bool:
    """Equal as columns: Arrow by value and validity, numpy by dtype, shape and bits."""
    if isinstance(a, pa.Array):
        return isinstance(b, pa.Array) and a.type == b.type and a.equals(b)
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )  # fmt: skip
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def check(
    values: list[Any],
    decode: Callable[..., tuple[list[DecodedRun], np.ndarray]],
    name: str,
    kind: type[PredictionColumns] | type[OutcomeColumns],
    validate: Callable[[dict[str, Any]], None],
) -> int:
    """Fails on any disagreement with the reference; returns how many messages were taken."""
    runs, rest = decode(values, CODEC)
    assert rest.dtype == np.int64
    seen = [int(i) for run in runs for i in run.indices] + rest.tolist()
    assert sorted(seen) == list(range(len(values)))  # every message once
    assert [int(run.indices[0]) for run in runs] == sorted(int(run.indices[0]) for run in runs)
    taken = 0
    for run in runs:
        assert run.indices.dtype == np.int64 and list(run.indices) == sorted(run.indices)
        records = []
        for i in run.indices:
            got, record = REFERENCE.decode(values[int(i)])  # taken => the reference decodes it
            assert got == name and record["model_id"] == run.columns.model_id
            records.append(record)
        expected = kind.from_records(run.columns.model_id, records)
        for field in expected.__dataclass_fields__:
            assert same(getattr(run.columns, field), getattr(expected, field)), field
        errors = []
        for row, record in enumerate(records):
            try:
                validate(record)
            except InvalidEvent as exc:
                errors.append((row, exc.reason, exc.detail))
        assert [(e.row, e.reason, e.detail) for e in run.row_errors] == errors
        taken += len(records)
    return taken


def check_predictions(values: list[Any]) -> int:
    return check(values, decode_predictions, "PredictionEvent", PredictionColumns,
                 validate_prediction)  # fmt: skip


def check_outcomes(values: list[Any]) -> int:
    return check(values, decode_outcomes, "OutcomeEvent", OutcomeColumns, validate_outcome)


floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.5, -0.0, 1e300])
# Few names, so that layouts repeat (the template) and also differ (other passes, rest).
LAYOUTS = [("age", "income"), ("income", "age"), ("x",), (), tuple(f"f{j}" for j in range(20))]
KEYS = st.sampled_from(["plan", "region", "chan", "", "é", "k" * 70])
TEXT = st.text(max_size=8) | st.sampled_from(["", "x" * 1030])


@st.composite
def prediction(draw: st.DrawFn) -> dict[str, Any]:
    layout = draw(st.sampled_from(LAYOUTS))
    probs = draw(st.sampled_from([None, {}, ("yes", "no"), ("no", "yes")]))
    return {
        "event_id": draw(st.text(max_size=40) | st.just("")),
        "model_id": draw(st.sampled_from(["churn", "fraud", "", "m" * 1030])),
        "model_version": draw(st.sampled_from(["1", "2", ""])),
        "event_time": draw(st.integers(-5, 2**63 - 1) | st.integers(-(2**63), 0)),
        "numeric_features": {name: draw(floats) for name in layout},
        "categorical_features": draw(st.dictionaries(KEYS, TEXT, max_size=3)),
        "segments": draw(st.dictionaries(KEYS, TEXT, max_size=3)),
        "prediction_label": draw(st.none() | TEXT),
        "prediction_score": draw(st.none() | floats),
        "prediction_value": draw(st.none() | floats),
        "probabilities": (
            probs if not isinstance(probs, tuple) else {k: draw(floats) for k in probs}
        ),
    }


outcome = st.fixed_dictionaries(
    {
        "event_id": st.text(max_size=20) | st.just(""),
        "prediction_id": st.text(max_size=20) | st.just(""),
        "model_id": st.sampled_from(["churn", "fraud", "", "m" * 1030]),
        "event_time": st.integers(-(2**63), 2**63 - 1),
        "label": st.none() | TEXT,
        "value": st.none() | floats,
    }
)


@HYP
@given(st.lists(prediction(), min_size=1, max_size=12))
def test_predictions_match_reference(records: list[dict[str, Any]]) -> None:
    values = [CODEC.encode("PredictionEvent", r) for r in records]
    check_predictions(values)


@HYP
@given(st.lists(outcome, min_size=1, max_size=12))
def test_outcomes_match_reference(records: list[dict[str, Any]]) -> None:
    values = [CODEC.encode("OutcomeEvent", r) for r in records]
    assert check_outcomes(values) == sum(r["model_id"] not in ("", "m" * 1030) for r in records)


def mutate(values: list[bytes], data: Any) -> list[Any]:
    out: list[Any] = []
    for v in values:
        raw = bytearray(v)
        action = data.draw(st.sampled_from(["keep", "flip", "cut", "extend"]))
        if action == "flip":
            for _ in range(data.draw(st.integers(1, 3))):
                raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        elif action == "cut":
            raw = raw[: data.draw(st.integers(0, len(raw)))]
        elif action == "extend":
            raw += bytes(data.draw(st.binary(min_size=1, max_size=3)))
        out.append(bytes(raw))
    return out


@HYP
@given(st.lists(prediction(), min_size=1, max_size=8), st.data())
def test_mutated_and_truncated_predictions_never_disagree(
    records: list[dict[str, Any]], data: Any
) -> None:
    values = mutate([CODEC.encode("PredictionEvent", r) for r in records], data)
    check_predictions(values)


@HYP
@given(st.lists(outcome, min_size=1, max_size=8), st.data())
def test_mutated_and_truncated_outcomes_never_disagree(
    records: list[dict[str, Any]], data: Any
) -> None:
    values = mutate([CODEC.encode("OutcomeEvent", r) for r in records], data)
    check_outcomes(values)


def base_prediction(i: int, model: str = "churn") -> dict[str, Any]:
    return {
        "event_id": f"p{i}",
        "model_id": model,
        "model_version": "3",
        "event_time": 1_700_000_000_000 + i,
        "numeric_features": {f"f{j}": float(i + j) for j in range(20)},
        "categorical_features": {"plan": "gold"},
        "segments": {"region": "eu"} if i % 2 else {},
        "prediction_label": "yes",
        "prediction_score": 0.5,
        "prediction_value": None,
        "probabilities": None,
    }


def test_interleaved_models_and_foreign_messages() -> None:
    records = [base_prediction(i, ["churn", "fraud"][i % 2]) for i in range(10)]
    for r in records[1::2]:  # the second model has its own layout: a second pass
        r["numeric_features"] = {"amount": 1.0}
    values: list[Any] = [CODEC.encode("PredictionEvent", r) for r in records]
    outcome_msg = CODEC.encode(
        "OutcomeEvent",
        {"event_id": "o", "prediction_id": "p", "model_id": "churn", "event_time": 1},
    )
    values += [outcome_msg, None, b"", b"\x00\x00\x00\x00", "text", bytearray(values[0])]
    runs, rest = decode_predictions(values, CODEC)
    assert [r.columns.model_id for r in runs] == ["churn", "fraud"]
    assert [list(r.indices) for r in runs] == [[0, 2, 4, 6, 8, 15], [1, 3, 5, 7, 9]]
    assert list(rest) == [10, 11, 12, 13, 14]
    assert check_predictions(values) == 11
    for i in rest:  # the caller's fallback still names a reason for each
        try:
            CODEC.decode(values[int(i)], "PredictionEvent")
        except DecodeError:
            pass
        else:
            raise AssertionError(f"message {i} decodes as a PredictionEvent")


def test_other_layout_of_the_same_model_goes_to_rest() -> None:
    records = [base_prediction(i) for i in range(4)]
    records[2]["numeric_features"] = {"f0": 1.0}
    values = [CODEC.encode("PredictionEvent", r) for r in records]
    runs, rest = decode_predictions(values, CODEC)
    assert [list(r.indices) for r in runs] == [[0, 1, 3]] and list(rest) == [2]


def test_nan_and_inf_are_row_errors_with_single_event_reasons() -> None:
    records = [base_prediction(i) for i in range(4)]
    records[1]["numeric_features"]["f3"] = float("nan")
    records[2]["prediction_score"] = float("inf")
    records[3]["event_id"] = ""
    values = [CODEC.encode("PredictionEvent", r) for r in records]
    runs, rest = decode_predictions(values, CODEC)
    assert rest.size == 0
    assert [(e.row, e.reason) for e in runs[0].row_errors] == [
        (1, "non_finite_value"), (2, "non_finite_value"), (3, "missing_field"),
    ]  # fmt: skip
    assert np.isnan(runs[0].columns.numeric[1, 3])
    check_predictions(values)


def test_empty_input() -> None:
    assert decode_predictions([], CODEC)[0] == [] and decode_outcomes([], CODEC)[1].size == 0
