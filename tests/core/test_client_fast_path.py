"""The SDK's per-event fast paths (``log_prediction`` / ``log_outcome`` on a batching
producer) against the general path and the bulk path: same records, byte for byte; same
validation; nothing lost or reordered under concurrent callers.

No broker: the producer points at an unreachable address and a recording codec keeps every
encoded batch record. The general path is forced by passing the features as a dict subclass
(the fast path takes plain dicts only).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from driftline.schemas import Codec, topics
from driftline.schemas.columns import OutcomeColumns

from driftline.client import DriftlineProducer


class RecordingCodec(Codec):
    """A codec that keeps every encoded batch record, in the order the producer made them."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.topics: list[str] = []
        self._sent_lock = threading.Lock()

    def encode(self, name: str, record: dict[str, Any]) -> bytes:  # single-event records
        data = super().encode(name, record)
        topic = topics.OUTCOMES if name == "OutcomeEvent" else topics.PREDICTIONS
        with self._sent_lock:
            self.sent.append(data)
            self.topics.append(topic)
        return data

    def encode_columns(self, columns: Any) -> bytes:
        data = super().encode_columns(columns)
        topic = topics.OUTCOMES if isinstance(columns, OutcomeColumns) else topics.PREDICTIONS
        with self._sent_lock:
            self.sent.append(data)
            self.topics.append(topic)
        return data


class General(dict):
    """Features the fast path does not take (not exactly a dict): the general path's result."""


def recording_producer(**options: Any) -> tuple[DriftlineProducer, RecordingCodec]:
    codec = RecordingCodec()
    # Linger an hour: batches leave at batch_rows and on flush only, so every run of the same
    # events makes the same batch records.
    options = {"batch_rows": 500, "linger": 3600.0, **options}
    return DriftlineProducer("127.0.0.1:1", codec, log_level=0, **options), codec


@pytest.fixture
def recording() -> Iterator[Any]:
    made: list[DriftlineProducer] = []

    def make(**options: Any) -> tuple[DriftlineProducer, RecordingCodec]:
        producer, codec = recording_producer(**options)
        made.append(producer)
        return producer, codec

    yield make
    for producer in made:
        producer._producer.purge()  # nothing will ever be delivered; do not wait for it
        producer.close(0)


def sent_of(producer: DriftlineProducer, codec: RecordingCodec) -> list[bytes]:
    producer.flush(0)
    return list(codec.sent)


def records_of(sent: list[bytes], topic: str = topics.PREDICTIONS) -> list[dict[str, Any]]:
    out = []
    for data in sent:
        _, decoded, errors = Codec().decode_columns(data, topic)
        assert errors == []
        out.extend([decoded] if isinstance(decoded, dict) else decoded.to_records())
    return out


NAMES = [f"f{j:02d}" for j in range(6)]


def mixed_events(n: int, *, reorder: bool, seed: int = 1) -> list[dict[str, Any]]:
    """Mostly all-float events of one model, with everything the fast path must hand over or
    handle: ints, bools, strings, None, missing and extra names, numpy scalars, huge finite
    values; with ``reorder``, also the same names in another order."""
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        features: dict[str, Any] = dict(
            zip(NAMES, rng.normal(size=len(NAMES)).tolist(), strict=True)
        )
        if i % 7 == 3:
            features["f02"] = int(i)  # an int: numeric
        if 1200 <= i < 1500:
            features["f01"] = i  # a stretch of batches where every event holds an int
        if i % 11 == 5:
            features["f03"] = bool(i % 2)  # a bool: categorical
        if reorder and i % 13 == 6:
            features = dict(reversed(features.items()))  # same names, another order
        if i % 17 == 7:
            features["f04"] = None  # missing
        if i % 19 == 8:
            features["f05"] = "text"  # categorical
        if i % 23 == 9:
            del features["f00"]  # a name short
        if i % 29 == 10:
            features["extra"] = 1.5  # a name more
        if i % 31 == 11:
            features["f01"] = np.float64(0.25)
        if i % 37 == 12:
            features["f00"] = features["f01"] = 1.5e308  # finite; their sum is not
        if i % 41 == 13:
            features["f02"] = -0.0
        events.append(features)
    return events


def log_all(producer: DriftlineProducer, events: list[dict[str, Any]], wrap: type) -> list[str]:
    ids = []
    for i, features in enumerate(events):
        ids.append(
            producer.log_prediction(
                "m",
                wrap(features),
                None if i % 9 == 0 else ("yes" if i % 3 else "no"),
                score=None if i % 5 == 0 else i / len(events),
                model_version="2" if 700 <= i < 710 else "1",
                event_id=f"p{i}",
                event_time=1_700_000_000_000 + i,
            )
        )
    return ids


def test_fast_path_sends_the_bytes_of_the_general_path(recording) -> None:
    events = mixed_events(2600, reorder=False)
    fast, fast_codec = recording()
    general, general_codec = recording()
    assert log_all(fast, events, dict) == log_all(general, events, General)
    fast_sent, general_sent = sent_of(fast, fast_codec), sent_of(general, general_codec)
    assert len(fast_sent) == 6  # 2600 events in batches of 500
    assert fast_sent == general_sent
    records = records_of(fast_sent)
    assert [r["event_id"] for r in records] == [f"p{i}" for i in range(2600)]
    assert records[3]["numeric_features"]["f02"] == 3.0
    assert records[5]["categorical_features"] == {"f03": "true"}
    assert "f04" not in records[7]["numeric_features"]
    assert records[12]["numeric_features"]["f00"] == 1.5e308


def test_fast_path_sends_the_records_of_the_general_path_in_any_key_order(recording) -> None:
    # The fast path reads a dict's values in the order of the model's first names: a batch
    # holding events of several layouts may list its numeric columns in another order than
    # the general path's, and the records are the same.
    events = mixed_events(2600, reorder=True)
    fast, fast_codec = recording()
    general, general_codec = recording()
    log_all(fast, events, dict)
    log_all(general, events, General)
    fast_records = records_of(sent_of(fast, fast_codec))
    assert fast_records == records_of(sent_of(general, general_codec))
    assert [r["event_id"] for r in fast_records] == [f"p{i}" for i in range(2600)]


def test_fast_path_takes_the_usual_events(recording, monkeypatch: pytest.MonkeyPatch) -> None:
    # The comparisons above would also pass if every event took the general path.
    general_calls = 0
    record = DriftlineProducer._prediction_record

    def counting(self: DriftlineProducer, *args: Any) -> dict[str, Any]:
        nonlocal general_calls
        general_calls += 1
        return record(self, *args)

    monkeypatch.setattr(DriftlineProducer, "_prediction_record", counting)
    producer, _ = recording()
    rng = np.random.default_rng(2)
    for i in range(1000):
        features = dict(zip(NAMES, rng.normal(size=len(NAMES)).tolist(), strict=True))
        if i % 10 == 0:
            features["f01"] = 7  # ints stay on the fast path
        producer.log_prediction("m", features, "yes", score=0.5)
    assert general_calls == 1  # the model's first event, which sets its fast layout


def test_fast_path_sends_the_bytes_of_the_bulk_path(recording) -> None:
    n = 2300
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, len(NAMES)))
    x[::50, 2] = np.round(x[::50, 2] * 100)  # integral values (sent as ints below)
    labels = [None if i % 9 == 0 else ("yes" if i % 3 else "no") for i in range(n)]
    scores = [None if i % 5 == 0 else float(rng.random()) for i in range(n)]
    ids = [f"p{i}" for i in range(n)]
    times = 1_700_000_000_000 + np.arange(n)
    one, one_codec = recording()
    for i, row in enumerate(x.tolist()):
        features = dict(zip(NAMES, row, strict=True))
        if i % 50 == 0:
            features["f02"] = int(features["f02"])
        one.log_prediction(
            "m", features, labels[i], score=scores[i], event_id=ids[i], event_time=int(times[i])
        )
    bulk, bulk_codec = recording()
    bulk.log_predictions(
        "m",
        {name: x[:, j] for j, name in enumerate(NAMES)},
        event_ids=ids,
        event_time=times,
        labels=labels,
        scores=[math.nan if s is None else s for s in scores],
    )
    assert sent_of(one, one_codec) == sent_of(bulk, bulk_codec)


@pytest.mark.parametrize(
    ("features", "options", "message"),
    [
        ({"x": math.nan, "y": 1.0}, {}, "non_finite_value"),
        ({"x": math.inf, "y": 1.0}, {}, "non_finite_value"),
        ({"x": 1.0, "y": -math.inf}, {}, "non_finite_value"),
        ({"x": 1e308, "y": math.nan}, {}, "non_finite_value"),
        ({"x": 1, "y": math.nan}, {}, "non_finite_value"),  # an int row
        ({"x": [1.0], "y": 1.0}, {}, "must be a number"),
        ({"x": 1.0, "y": 2.0}, {"score": math.nan}, "prediction_score"),
        ({"x": 1.0, "y": 2.0}, {"event_time": -1}, "event_time"),
        ({"x": 1.0, "y": 2.0}, {"event_id": ""}, "event_id is empty"),
        ({"x": 1.0, "y": 2.0}, {"model_version": ""}, "model_version"),
    ],
)
def test_fast_path_refuses_what_the_general_path_refuses(
    recording, features: dict[str, Any], options: dict[str, Any], message: str
) -> None:
    producer, codec = recording()
    producer.log_prediction("m", {"x": 0.5, "y": 1.5}, "a")  # the model's fast layout
    producer.log_prediction("m", {"x": 2.5, "y": 3.5}, "b")
    assert producer.pending == 2
    with pytest.raises(ValueError, match=message):
        producer.log_prediction("m", features, "c", **options)
    assert producer.pending == 2  # nothing queued
    assert [r["prediction_label"] for r in records_of(sent_of(producer, codec))] == ["a", "b"]


def test_fast_path_types(recording) -> None:
    producer, codec = recording()
    producer.log_prediction("m", {"x": 0.5, "y": 1.5}, "a")
    producer.log_prediction("m", {"x": True, "y": 1.5}, "b")  # a bool is categorical
    producer.log_prediction("m", {"x": 3, "y": 1.5}, "c")  # an int is numeric
    producer.log_prediction("m", {"x": np.float32(0.5), "y": 2.0}, "d")
    producer.log_prediction("m", {"x": None, "y": 2.5}, "e")
    producer.log_prediction("m", {"x": "s", "y": 3.5}, "f")
    producer.log_prediction("m", {"y": 4.5, "x": 5.5}, "g")  # another order: the layout's
    got = {r["prediction_label"]: r for r in records_of(sent_of(producer, codec))}
    assert got["b"]["categorical_features"] == {"x": "true"}
    assert got["b"]["numeric_features"] == {"y": 1.5}
    assert got["c"]["numeric_features"] == {"x": 3.0, "y": 1.5}
    assert got["d"]["numeric_features"] == {"x": 0.5, "y": 2.0}
    assert got["e"]["numeric_features"] == {"y": 2.5}
    assert got["f"]["categorical_features"] == {"x": "s"}
    assert list(got["g"]["numeric_features"].items()) == [("x", 5.5), ("y", 4.5)]


def test_every_layout_in_one_batch_keeps_its_records(recording) -> None:
    # Events of many layouts buffered together (the general path, and the fast path between
    # them) leave as the records single-event PredictionEvents carry.
    events: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"x": 1.0, "y": 2.0}, {"prediction": "a"}),
        ({"plan": "gold"}, {"prediction": "b"}),  # no numeric feature
        ({"x": 3.0}, {"prediction": 1.5}),  # one feature, a regression value
        ({"x": 4.0, "y": 5.0}, {"prediction": "c", "score": 0.25}),  # fast
        ({}, {"prediction": True}),  # no feature at all, a bool label
        ({"x": 6.0, "y": 7.0}, {"segments": {"region": "eu"}}),
        ({"x": 8.0, "y": 9.0}, {"probabilities": {"a": 0.5, "b": 0.5}, "prediction": "a"}),
        ({"x": 10, "y": 11.0}, {"prediction": "d", "model_version": "2"}),  # fast, an int
        ({"x": 12.0, "y": 13.0, "vip": False}, {}),
        ({"x": 14.0, "y": 15.0}, {"prediction": "e", "event_time": 5}),  # fast
    ]
    batched, batched_codec = recording()
    single, single_codec = recording(batch_records=False)
    for i, (features, options) in enumerate(events):
        options = {"event_id": f"p{i}", "event_time": 1_700_000_000_000 + i, **options}
        batched.log_prediction("m", features, **options)
        single.log_prediction("m", features, **options)
    batched_sent = sent_of(batched, batched_codec)
    assert len(batched_sent) == 1
    single_records = records_of(sent_of(single, single_codec))
    assert len(single_records) == len(events)
    assert records_of(batched_sent) == single_records
    assert single_records[1]["categorical_features"] == {"plan": "gold"}
    assert single_records[7]["numeric_features"] == {"x": 10.0, "y": 11.0}


def test_outcome_fast_path_sends_the_bytes_of_the_general_and_bulk_paths(recording) -> None:
    n = 1200
    labels = [None if i % 4 == 0 else ("yes" if i % 3 else "no") for i in range(n)]
    values = [float(i) / 7 if i % 4 == 0 or i % 5 == 0 else None for i in range(n)]
    fast, fast_codec = recording()
    general, general_codec = recording()
    for i in range(n):
        args = (f"p{i}", "m", labels[i], values[i])
        options = {"event_id": f"o{i}", "event_time": 1_700_000_000_000 + i}
        assert fast.log_outcome(*args, **options) == f"o{i}"
        # An int value (where it is integral) takes the general path.
        value = int(values[i]) if values[i] is not None and values[i].is_integer() else None
        general.log_outcome(
            f"p{i}", "m", labels[i], value if value is not None else values[i], **options
        )
    bulk, bulk_codec = recording()
    bulk.log_outcomes(
        "m",
        [f"p{i}" for i in range(n)],
        labels=labels,
        values=[math.nan if v is None else v for v in values],
        event_ids=[f"o{i}" for i in range(n)],
        event_time=1_700_000_000_000 + np.arange(n),
    )
    fast_sent = sent_of(fast, fast_codec)
    assert len(fast_sent) == 3
    assert fast_sent == sent_of(general, general_codec) == sent_of(bulk, bulk_codec)
    records = records_of(fast_sent, topics.OUTCOMES)
    assert records[1] == {
        "event_id": "o1", "prediction_id": "p1", "model_id": "m",
        "event_time": 1_700_000_000_001, "label": "yes", "value": None,
    }  # fmt: skip


def test_outcome_fast_path_validation_and_generated_ids(recording) -> None:
    producer, codec = recording()
    for call, message in [
        (lambda: producer.log_outcome("p", "m"), "needs a label or a value"),
        (lambda: producer.log_outcome("", "m", label="a"), "prediction_id is empty"),
        (lambda: producer.log_outcome("p", "", label="a"), "model_id is empty"),
        (lambda: producer.log_outcome("p", "m", value=math.nan), "non_finite_value"),
        (lambda: producer.log_outcome("p", "m", label="a", event_time=-5), "event_time"),
        (lambda: producer.log_outcome("p", "m", label="a", event_id=""), "event_id is empty"),
        (lambda: producer.log_outcome("p", "m", label="x" * 2000), "label"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()
    assert producer.pending == 0
    first = producer.log_outcome("p1", "m", label=True)
    second = producer.log_outcome("p2", "m", value=0.5)
    records = records_of(sent_of(producer, codec), topics.OUTCOMES)
    assert [(r["event_id"], r["label"], r["value"]) for r in records] == [
        (first, "true", None),
        (second, None, 0.5),
    ]
    assert first != second and len(first) == 36


def test_concurrent_callers_lose_and_reorder_nothing(recording) -> None:
    # Small batches and a short linger: buffers leave from the callers' threads and from the
    # background thread while other threads append.
    producer, codec = recording(batch_rows=64, linger=0.002)
    threads, per_thread = 4, 3000

    def work(t: int) -> None:
        rng = np.random.default_rng(t)
        for i in range(per_thread):
            features = dict(zip(NAMES, rng.normal(size=len(NAMES)).tolist(), strict=True))
            if i % 97 == 0:
                features["f03"] = True  # now and then the general path
            producer.log_prediction(f"m{t % 2}", features, "y", event_id=f"t{t}-{i}")
            if i % 3 == 0:
                producer.log_outcome(f"t{t}-{i}", f"m{t % 2}", label="y", event_id=f"o{t}-{i}")

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    sent = sent_of(producer, codec)
    predictions, outcomes = [], []
    for data, topic in zip(sent, codec.topics, strict=True):
        ids = [r["event_id"] for r in records_of([data], topic)]
        (outcomes if topic == topics.OUTCOMES else predictions).extend(ids)
    assert len(predictions) == len(set(predictions)) == threads * per_thread
    assert len(outcomes) == len(set(outcomes)) == threads * len(range(0, per_thread, 3))
    for t in range(threads):  # one caller's events leave in the order it logged them
        mine = [int(e.split("-")[1]) for e in predictions if e.startswith(f"t{t}-")]
        assert mine == sorted(mine)
