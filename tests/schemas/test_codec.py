"""Codec: round trips, one test per DLQ reason, and bad bytes only ever raise DecodeError."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

import pytest
from driftline.schemas import (
    Codec,
    DecodeError,
    EncodeError,
    InvalidEvent,
    StaticRegistry,
    UnknownSchemaId,
    event_id,
    load_schema,
    topics,
    validate_outcome,
    validate_prediction,
)
from driftline.schemas.registry import SCHEMA_FILES, load_manifest
from fastavro import parse_schema, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

T0 = 1_700_000_000_123


def prediction(**overrides: Any) -> dict[str, Any]:
    record = {
        "event_id": "p-1",
        "model_id": "churn",
        "model_version": "3",
        "event_time": T0,
        "numeric_features": {f"f{i}": i * 0.5 for i in range(20)},
        "categorical_features": {"plan": "gold"},
        "segments": {"region": "eu", "channel": "web"},
        "prediction_label": "yes",
        "prediction_score": 0.83,
        "prediction_value": None,
        "probabilities": {"yes": 0.83, "no": 0.17},
    }
    record.update(overrides)
    return record


def outcome(**overrides: Any) -> dict[str, Any]:
    record = {
        "event_id": "o-1",
        "prediction_id": "p-1",
        "model_id": "churn",
        "event_time": T0 + 5,
        "label": "no",
        "value": None,
    }
    record.update(overrides)
    return record


def drift(**overrides: Any) -> dict[str, Any]:
    record = {
        "event_id": event_id("drift", "churn", "FEATURE", "age", "ADWIN", "1006"),
        "model_id": "churn",
        "model_version": "3",
        "stream_kind": "FEATURE",
        "stream_name": "age",
        "detector": "ADWIN",
        "detected_at": T0,
        "position": 1006,
        "statistic": 0.4,
        "p_value": None,
        "threshold": 0.002,
        "evidence": {"width": "1024"},
        "source_event_id": "p-1",
    }
    record.update(overrides)
    return record


def retraining(**overrides: Any) -> dict[str, Any]:
    record = {
        "event_id": event_id("retrain", "churn", "drift-policy", "d1"),
        "model_id": "churn",
        "model_version": "3",
        "requested_at": T0,
        "reason": "ADWIN drift on age",
        "trigger_event_ids": ["d1", "d2"],
        "window_start": T0 - 86_400_000,
        "window_end": T0,
        "priority": "HIGH",
        "policy": "drift-policy",
    }
    record.update(overrides)
    return record


SAMPLES = {
    "PredictionEvent": prediction,
    "OutcomeEvent": outcome,
    "DriftEvent": drift,
    "RetrainingRequested": retraining,
}


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


# -- contract files ----------------------------------------------------------------------------


def test_every_record_enum_and_field_has_a_doc() -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("record", "enum"):
                assert node.get("doc"), f"{where}: {node['name']} has no doc"
            for field in node.get("fields", ()):
                assert field.get("doc"), f"{where}: field {field['name']} has no doc"
                walk(field["type"], f"{where}.{field['name']}")
            for key in ("items", "values"):
                walk(node.get(key), where)
        elif isinstance(node, list):
            for branch in node:
                walk(branch, where)

    for name in SCHEMA_FILES:
        schema = load_schema(name)
        assert schema["namespace"] == "dev.driftline"
        walk(schema, name)


def test_manifest_subjects_follow_the_topic_layout_with_ids_from_one() -> None:
    # Single events: <topic>-value (TopicNameStrategy); batches: <topic>-<record> on the same
    # topics (TopicRecordNameStrategy).
    subjects = load_manifest()["subjects"]
    assert set(subjects) == {
        topics.subject_for(name) for names in topics.TOPIC_RECORDS.values() for name in names
    }
    ids = sorted(entry["id"] for entry in subjects.values())
    assert ids == list(range(1, len(ids) + 1))
    for subject, entry in subjects.items():
        name = entry["schema"].removeprefix("dev.driftline.")
        assert topics.subject_for(name) == subject
    assert subjects["driftline.predictions.v1-dev.driftline.PredictionBatch"]["id"] == 6
    assert subjects["driftline.outcomes.v1-dev.driftline.OutcomeBatch"]["id"] == 7
    assert topics.TOPIC_RECORDS[topics.PREDICTIONS] == {"PredictionEvent", "PredictionBatch"}


def test_event_id_is_deterministic_hex_and_strict_about_types() -> None:
    a = event_id("drift", "churn", "FEATURE", "age", "ADWIN", "7")
    assert a == event_id("drift", "churn", "FEATURE", "age", "ADWIN", "7")
    assert a != event_id("drift", "churn", "FEATURE", "age", "ADWIN", "8")
    assert len(a) == 32 and int(a, 16) >= 0
    with pytest.raises(TypeError):
        event_id("drift", 7)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        event_id()


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip_every_schema(codec: Codec, name: str) -> None:
    record = SAMPLES[name]()
    data = codec.encode(name, record)
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == codec.schema_id(name)
    decoded_name, decoded = codec.decode(data, expected=name)
    assert decoded_name == name
    assert decoded == record


def test_optional_and_defaulted_fields_may_be_omitted(codec: Codec) -> None:
    minimal = {"event_id": "p", "model_id": "m", "model_version": "1", "event_time": 0}
    _, decoded = codec.decode(codec.encode("PredictionEvent", minimal))
    assert decoded["numeric_features"] == {} and decoded["probabilities"] is None


def test_times_decode_as_int_millis_and_datetimes_encode(codec: Codec) -> None:
    when = datetime.fromtimestamp(T0 / 1000, tz=UTC)
    _, decoded = codec.decode(codec.encode("OutcomeEvent", outcome(event_time=when)))
    assert decoded["event_time"] == T0 and type(decoded["event_time"]) is int


def test_full_names_and_ids_from_the_manifest(codec: Codec) -> None:
    data = codec.encode("dev.driftline.OutcomeEvent", outcome())
    assert data[:5] == b"\x00\x00\x00\x00\x02"
    assert codec.decode(data, expected="dev.driftline.OutcomeEvent")[0] == "OutcomeEvent"
    assert [codec.schema_id(n) for n in SAMPLES] == [1, 2, 3, 4]


def test_encode_rejects_records_that_do_not_fit(codec: Codec) -> None:
    with pytest.raises(EncodeError, match="prediction_scor"):
        codec.encode("PredictionEvent", prediction(prediction_scor=0.1))  # a typo'd field
    with pytest.raises(EncodeError):
        codec.encode("PredictionEvent", prediction(numeric_features={"a": "high"}))
    with pytest.raises(EncodeError):
        codec.encode("OutcomeEvent", {"event_id": "o"})  # required fields missing
    with pytest.raises(EncodeError, match="unknown schema"):
        codec.encode("Nope", {})
    with pytest.raises(ValueError):  # EncodeError is a ValueError for SDK callers
        codec.encode("DriftEvent", drift(stream_kind="SIDEWAYS"))


# -- one test per reason code ------------------------------------------------------------------


def reason_of(codec: Codec, data: Any, expected: str | None = None) -> str:
    with pytest.raises(DecodeError) as info:
        codec.decode(data, expected)
    assert info.value.reason in topics.REASONS
    return info.value.reason


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", b"\x00\x00\x00\x01", b'{"event_id": "p"}', b"\x01\x00\x00\x00\x01abc", None],
)
def test_not_confluent_framed(codec: Codec, data: Any) -> None:
    assert reason_of(codec, data) == topics.NOT_CONFLUENT_FRAMED


def test_unknown_schema_id(codec: Codec) -> None:
    body = codec.encode("OutcomeEvent", outcome())[5:]
    assert reason_of(codec, b"\x00\x00\x00\x00\x63" + body) == topics.UNKNOWN_SCHEMA_ID
    assert reason_of(codec, b"\x00\xff\xff\xff\xff" + body) == topics.UNKNOWN_SCHEMA_ID


def test_truncated_messages_are_undecodable(codec: Codec) -> None:
    data = codec.encode("PredictionEvent", prediction())
    for cut in range(5, len(data)):
        assert reason_of(codec, data[:cut]) == topics.UNDECODABLE, cut


def test_trailing_bytes_are_undecodable(codec: Codec) -> None:
    data = codec.encode("OutcomeEvent", outcome())
    assert reason_of(codec, data + b"\x00") == topics.UNDECODABLE


def test_invalid_utf8_and_bad_enum_index_are_undecodable(codec: Codec) -> None:
    data = bytearray(codec.encode("OutcomeEvent", outcome(event_id="ab")))
    assert data[5:8] == b"\x04ab"
    data[6] = 0xFF  # not UTF-8
    assert reason_of(codec, bytes(data)) == topics.UNDECODABLE
    good = codec.encode("DriftEvent", drift())
    # stream_kind's enum index follows the three leading strings.
    head = BytesIO()
    schemaless_writer(head, parse_schema({"type": "string"}), drift()["event_id"])
    for s in ("churn", "3"):
        schemaless_writer(head, parse_schema({"type": "string"}), s)
    at = 5 + len(head.getvalue())
    bad = bytearray(good)
    bad[at] = 0x7E  # index 63 of a 4-symbol enum
    assert reason_of(codec, bytes(bad)) == topics.UNDECODABLE


def test_too_large() -> None:
    small = Codec(max_message_bytes=200)
    data = small.encode("PredictionEvent", prediction())
    assert len(data) > 200
    assert reason_of(small, data) == topics.TOO_LARGE
    with pytest.raises(ValueError):
        Codec(max_message_bytes=2)


def test_wrong_schema_for_topic(codec: Codec) -> None:
    data = codec.encode("OutcomeEvent", outcome())
    assert reason_of(codec, data, expected="PredictionEvent") == topics.WRONG_SCHEMA_FOR_TOPIC
    expected = topics.TOPIC_SCHEMAS[topics.PREDICTIONS]
    assert reason_of(codec, data, expected=expected) == topics.WRONG_SCHEMA_FOR_TOPIC


class VersionedRegistry(StaticRegistry):
    """The shipped ids plus older writer versions under extra ids (what a real registry holds)."""

    def __init__(self, extra: dict[int, dict[str, Any]]) -> None:
        super().__init__()
        self.extra = extra

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        if schema_id in self.extra:
            return self.extra[schema_id]
        return super().schema_by_id(schema_id)


def frame(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = BytesIO()
    buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
    schemaless_writer(buf, parse_schema(schema), record)
    return buf.getvalue()


def test_missing_field_when_an_old_writer_lacks_a_required_field() -> None:
    old = load_schema("OutcomeEvent")
    old["fields"] = [f for f in old["fields"] if f["name"] != "prediction_id"]
    codec = Codec(VersionedRegistry({50: old}))
    record = outcome()
    del record["prediction_id"]
    assert reason_of(codec, frame(50, old, record)) == topics.MISSING_FIELD


def test_old_writer_without_a_defaulted_field_resolves_to_the_default() -> None:
    old = load_schema("OutcomeEvent")
    old["fields"] = [f for f in old["fields"] if f["name"] != "value"]
    codec = Codec(VersionedRegistry({51: old}))
    record = outcome()
    del record["value"]
    name, decoded = codec.decode(frame(51, old, record), expected="OutcomeEvent")
    assert name == "OutcomeEvent" and decoded == outcome()


def test_foreign_records_decode_under_their_full_name() -> None:
    foreign = {"type": "record", "name": "Thing", "namespace": "other", "fields": []}
    codec = Codec(VersionedRegistry({60: foreign}))
    assert codec.decode(b"\x00\x00\x00\x00\x3c") == ("other.Thing", {})
    assert reason_of(codec, b"\x00\x00\x00\x00\x3c", "OutcomeEvent") == (
        topics.WRONG_SCHEMA_FOR_TOPIC
    )


def test_unknown_schema_id_is_a_registry_error_too() -> None:
    with pytest.raises(UnknownSchemaId):
        StaticRegistry().schema_by_id(12345)


# -- validation (reasons the codec cannot see) -------------------------------------------------


def invalid_reason(fn: Any, record: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(InvalidEvent) as info:
        fn(record, **kwargs)
    assert info.value.reason in topics.REASONS
    return info.value.reason


def test_valid_events_pass_validation() -> None:
    validate_prediction(prediction())
    validate_outcome(outcome())
    validate_outcome(outcome(label=None, value=3.5))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values(bad: float) -> None:
    features = dict(prediction()["numeric_features"], f7=bad)
    cases = [
        (validate_prediction, prediction(numeric_features=features)),
        (validate_prediction, prediction(prediction_score=bad)),
        (validate_prediction, prediction(prediction_value=bad)),
        (validate_prediction, prediction(probabilities={"yes": bad, "no": 0.1})),
        (validate_outcome, outcome(value=bad)),
    ]
    for fn, record in cases:
        assert invalid_reason(fn, record) == topics.NON_FINITE_VALUE


def test_sum_overflow_is_not_mistaken_for_a_non_finite_value() -> None:
    validate_prediction(prediction(numeric_features={"a": 1e308, "b": 1e308}))


@pytest.mark.parametrize("field", ["event_id", "model_id", "model_version"])
def test_empty_or_missing_prediction_ids(field: str) -> None:
    assert invalid_reason(validate_prediction, prediction(**{field: ""})) == topics.MISSING_FIELD
    record = prediction()
    del record[field]
    assert invalid_reason(validate_prediction, record) == topics.MISSING_FIELD


@pytest.mark.parametrize("field", ["event_id", "prediction_id", "model_id"])
def test_empty_outcome_ids(field: str) -> None:
    assert invalid_reason(validate_outcome, outcome(**{field: ""})) == topics.MISSING_FIELD


def test_outcome_needs_label_or_value() -> None:
    assert invalid_reason(validate_outcome, outcome(label=None)) == topics.MISSING_FIELD


def test_too_many_features_segments_or_too_long_strings() -> None:
    many = {f"f{i}": 1.0 for i in range(11)}
    record = prediction(numeric_features=many, categorical_features={})
    assert invalid_reason(validate_prediction, record, max_features=10) == topics.TOO_LARGE
    validate_prediction(record, max_features=11)
    segs = {f"s{i}": "x" for i in range(5)}
    record = prediction(segments=segs)
    assert invalid_reason(validate_prediction, record, max_segments=4) == topics.TOO_LARGE
    record = prediction(categorical_features={"plan": "x" * 2000})
    assert invalid_reason(validate_prediction, record) == topics.TOO_LARGE
    assert invalid_reason(validate_prediction, prediction(event_id="x" * 5000)) == topics.TOO_LARGE


def test_invalid_values() -> None:
    assert invalid_reason(validate_prediction, prediction(event_time=-1)) == topics.INVALID_VALUE
    record = prediction(numeric_features={"a": "high"})
    assert invalid_reason(validate_prediction, record) == topics.INVALID_VALUE
    assert invalid_reason(validate_outcome, outcome(event_time=None)) == topics.MISSING_FIELD


def test_stream_level_reasons_exist_as_constants() -> None:
    # Produced by streams/ (join, dedup, model registry), not by bytes alone.
    assert {topics.UNKNOWN_MODEL, topics.ORPHAN_OUTCOME, topics.DUPLICATE} <= topics.REASONS
    assert len(topics.REASONS) == len(set(topics.REASONS))


# -- fuzz: nothing but DecodeError, whatever the bytes -----------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_or_reason(codec: Codec, data: bytes, expected: str | None = None) -> None:
    try:
        name, record = codec.decode(data, expected)
    except DecodeError as exc:
        assert exc.reason in topics.REASONS
    else:
        assert isinstance(name, str) and isinstance(record, dict)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    decode_or_reason(Codec(max_message_bytes=300), data)


@FUZZ
@given(st.sampled_from([1, 2, 3, 4]), st.binary(max_size=300))
def test_fuzz_valid_header_garbage_body(schema_id: int, body: bytes) -> None:
    decode_or_reason(CODEC, b"\x00" + schema_id.to_bytes(4, "big") + body, "PredictionEvent")


@FUZZ
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.integers(0, 10_000),
)
def test_fuzz_mutated_valid_messages(name: str, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(CODEC.encode(name, SAMPLES[name]()))
    for at, value in flips:
        data[5 + at % (len(data) - 5)] = value
    decode_or_reason(CODEC, bytes(data[: max(5, len(data) - cut % len(data))]))


CODEC = Codec()


def test_decode_accepts_bytearray_and_memoryview(codec: Codec) -> None:
    data = codec.encode("OutcomeEvent", outcome())
    assert codec.decode(bytearray(data))[1] == outcome()
    assert codec.decode(memoryview(data))[1] == outcome()


def test_records_are_json_friendly(codec: Codec) -> None:
    # Times as ints and enums as strings keep records serialisable for the API and sinks.
    _, decoded = codec.decode(codec.encode("DriftEvent", drift()))
    json.dumps(decoded)


# -- the quick acceptance in validate_prediction never accepts what the detailed checks refuse --

_any_value = st.one_of(
    st.floats(), st.integers(-5, 5), st.booleans(), st.text(max_size=10), st.none()
)
_keys = st.text(max_size=10)
_EDGES = [-1, 0, 1, "", "x" * 9, math.nan, math.inf, -math.inf, True, None, 0.5, {}] + [
    {"k": "x" * 9},
    {"x" * 9: 1.0},
    {"a": math.nan},
    {"a": -math.inf, "b": 1.0},
    {"a": 1e308, "b": 1e308},
    {"a": True},
    {"a": "x"},
    {str(i): 1.0 for i in range(6)},
    {"x" * 9: "v"},
    {f"s{i}": "v" for i in range(3)},
]
_edge = st.sampled_from(_EDGES)


_VALID = {
    "event_id": "p",
    "model_id": "m",
    "model_version": "1",
    "event_time": 5,
    "numeric_features": {"a": 1.0, "b": 2},
    "categorical_features": {"c": "x"},
    "segments": {"s": "y"},
    "prediction_label": "l",
    "prediction_score": 0.5,
    "prediction_value": None,
    "probabilities": {"a": 0.5},
}


@FUZZ
@given(
    # A valid record with one to three fields replaced by odd values: near the boundary.
    st.dictionaries(
        st.sampled_from(sorted(_VALID)),
        st.one_of(_edge, _any_value, st.dictionaries(_keys, _any_value, max_size=6)),
        min_size=1,
        max_size=3,
    )
)
def test_quick_validation_agrees_with_detailed_checks(changes: dict[str, Any]) -> None:
    check_quick_validation({**_VALID, **changes})


def test_quick_validation_on_every_single_edge_value() -> None:
    for field in _VALID:
        for value in _EDGES:
            check_quick_validation({**_VALID, field: value})
        record = dict(_VALID)
        del record[field]
        check_quick_validation(record)


def check_quick_validation(record: dict[str, Any]) -> None:
    from driftline.schemas.validation import _check_prediction, _looks_valid_prediction

    limits = (5, 2, 2, 8)  # features, segments, classes, string length: small, to hit them
    try:
        _check_prediction(record, *limits)
        detailed = None
    except InvalidEvent as exc:
        detailed = exc.reason
    if _looks_valid_prediction(record, *limits):
        assert detailed is None, record
    names = ("max_features", "max_segments", "max_classes", "max_string_length")
    kwargs = dict(zip(names, limits, strict=True))
    try:
        validate_prediction(record, **kwargs)
        public = None
    except InvalidEvent as exc:
        public = exc.reason
    assert public == detailed
