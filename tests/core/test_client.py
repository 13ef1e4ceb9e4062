"""Client SDK and replay, end to end against the real local Kafka broker.

Each test uses its own model_id and reads the shared topics back from the beginning, keeping
only its model's messages (key = model_id).
"""

from __future__ import annotations

import argparse
import math
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from driftline.schemas import Codec, event_id, topics

from driftline.client import DriftlineProducer, to_millis
from driftline.replay import add_replay_command, replay_file
from driftline.settings import Settings

pytestmark = pytest.mark.e2e


def consume(bootstrap: str, topic: str, model_id: str, expected: int) -> list[tuple[str, dict]]:
    """Decoded values of ``model_id``'s messages on ``topic`` (waits for ``expected`` of them)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    # Assign every partition from the start: no consumer-group rebalance to wait for.
    partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    codec = Codec()
    out: list[tuple[str, dict]] = []

    def add(value: bytes) -> None:
        # Batch records come back as columns: one (single-event name, record) per row.
        name, decoded, errors = codec.decode_columns(value, topic)
        assert errors == []
        if isinstance(decoded, dict):
            out.append((name, decoded))
        else:
            single = topics.TOPIC_SCHEMAS[topic]
            out.extend((single, record) for record in decoded.to_records())

    try:
        for _ in range(120):
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None or message.key() != model_id.encode():
                    continue
                add(message.value())
            if len(out) >= expected:
                break
        # Anything beyond the expected count would be a duplicate: read a little longer.
        for message in consumer.consume(1000, 0.5):
            if message.error() is None and message.key() == model_id.encode():
                add(message.value())
    finally:
        consumer.close()
    return out


def model() -> str:
    return f"model-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def producer(kafka_broker) -> DriftlineProducer:
    with DriftlineProducer(kafka_broker.bootstrap, linger_ms=5) as p:
        yield p


def test_predictions_and_outcomes_round_trip(kafka_broker, producer: DriftlineProducer) -> None:
    model_id = model()
    sent: dict[str, int] = {}
    for i in range(50):
        pid = producer.log_prediction(
            model_id,
            {"age": 30 + i, "income": 1000.5 * i, "plan": "gold" if i % 2 else "basic",
             "vip": i % 3 == 0, "missing": None},
            "yes" if i % 2 else "no",
            score=i / 50,
            model_version="7",
            segments={"region": "eu", "channel": "web", "unknown": None},
            probabilities={"yes": i / 50, "no": 1 - i / 50},
            event_time=1_700_000_000_000 + i,
        )  # fmt: skip
        sent[pid] = i
        if i % 5 == 0:
            producer.log_outcome(pid, model_id, label="yes", event_time=1_700_000_000_500 + i)
    assert producer.flush(30) == 0
    assert producer.stats.delivered == 60 and producer.stats.failed == 0
    assert producer.pending == 0

    predictions = consume(kafka_broker.bootstrap, topics.PREDICTIONS, model_id, 50)
    assert len(predictions) == 50
    by_id = {record["event_id"]: record for _, record in predictions}
    assert set(by_id) == set(sent)
    for pid, i in sent.items():
        record = by_id[pid]
        uuid.UUID(pid)  # generated ids are uuid4s
        assert record == {
            "event_id": pid,
            "model_id": model_id,
            "model_version": "7",
            "event_time": 1_700_000_000_000 + i,
            "numeric_features": {"age": float(30 + i), "income": 1000.5 * i},
            "categorical_features": {
                "plan": "gold" if i % 2 else "basic",
                "vip": "true" if i % 3 == 0 else "false",
            },
            "segments": {"region": "eu", "channel": "web"},
            "prediction_label": "yes" if i % 2 else "no",
            "prediction_score": i / 50,
            "prediction_value": None,
            "probabilities": {"yes": i / 50, "no": 1 - i / 50},
        }
    outcomes = consume(kafka_broker.bootstrap, topics.OUTCOMES, model_id, 10)
    assert len(outcomes) == 10
    for name, record in outcomes:
        assert name == "OutcomeEvent"
        assert record["model_id"] == model_id and record["label"] == "yes"
        assert record["event_time"] == 1_700_000_000_500 + sent[record["prediction_id"]]
        assert sent[record["prediction_id"]] % 5 == 0


def test_regression_and_explicit_ids(kafka_broker, producer: DriftlineProducer) -> None:
    model_id = model()
    when = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert (
        producer.log_prediction(model_id, {"x": 1.5}, 3.25, event_id="p-1", event_time=when)
        == "p-1"
    )
    assert (
        producer.log_outcome("p-1", model_id, value=3.0, event_id="o-1", event_time=when) == "o-1"
    )
    producer.flush(30)
    [(_, prediction)] = consume(kafka_broker.bootstrap, topics.PREDICTIONS, model_id, 1)
    assert prediction["prediction_value"] == 3.25 and prediction["prediction_label"] is None
    assert prediction["event_time"] == to_millis(when) == 1_767_323_045_678
    [(_, outcome)] = consume(kafka_broker.bootstrap, topics.OUTCOMES, model_id, 1)
    assert outcome == {
        "event_id": "o-1", "prediction_id": "p-1", "model_id": model_id,
        "event_time": 1_767_323_045_678, "label": None, "value": 3.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p.log_prediction("m", {"x": math.nan}, "a"), "non_finite_value"),
        (lambda p: p.log_prediction("m", {"x": [1, 2]}, "a"), "must be a number"),
        (lambda p: p.log_prediction("", {"x": 1.0}, "a"), "model_id is empty"),
        (lambda p: p.log_prediction("m", {"x": 1.0}, "a", score=math.inf), "prediction_score"),
        (lambda p: p.log_prediction("m", {"x": 1.0}, "a", event_time=1.5), "event_time"),
        (lambda p: p.log_prediction("m", {f"f{i}": 1.0 for i in range(11)}), "max_features=10"),
        (lambda p: p.log_outcome("p", "m"), "needs a label or a value"),
        (lambda p: p.log_outcome("", "m", label="a"), "prediction_id is empty"),
    ],
)
def test_invalid_events_raise_value_error_and_send_nothing(call: Any, message: str) -> None:
    # No broker needed: validation happens before anything is queued.
    producer = DriftlineProducer("127.0.0.1:1", max_features=10, log_level=0)  # quiet: no broker
    with pytest.raises(ValueError, match=message):
        call(producer)
    assert producer.pending == 0


def test_delivery_failures_are_counted_with_the_last_error(kafka_broker) -> None:
    # A topic name Kafka refuses: the broker is real, the failure comes back through callbacks.
    producer = DriftlineProducer(
        kafka_broker.bootstrap, predictions_topic="bad topic name!", message_timeout_ms=5000
    )
    producer.log_prediction(model(), {"x": 1.0}, "a")
    producer.flush(15)
    stats = producer.stats
    assert stats.delivered == 0 and stats.failed == 1
    assert stats.last_error and stats.last_error.startswith("bad topic name!")
    assert producer.close() == 0
    with pytest.raises(RuntimeError, match="closed"):
        producer.log_prediction("m", {"x": 1.0}, "a")


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "ts": pd.date_range("2026-01-01", periods=n, freq="min", tz="UTC"),
            "age": [20.0 + i for i in range(n)],
            "plan": ["gold" if i % 2 else "basic" for i in range(n)],
            "region": ["eu" if i % 3 else "us" for i in range(n)],
            "pred": ["yes" if i % 2 else "no" for i in range(n)],
            "score": [i / n for i in range(n)],
            # Outcomes are known for only some rows.
            "label": [("yes" if i % 4 else "no") if i % 2 == 0 else None for i in range(n)],
        }
    )


def test_replay_csv(kafka_broker, producer: DriftlineProducer, tmp_path: Path) -> None:
    model_id = model()
    df = frame(40)
    df.loc[3, "age"] = None  # a missing feature value
    path = tmp_path / "scored.csv"
    df.to_csv(path, index=False)
    stats = replay_file(
        path, producer, model_id, prediction_col="pred", label_col="label", id_col="id",
        time_col="ts", segment_cols=["region"], score_col="score", progress=False,
    )  # fmt: skip
    assert (stats.rows, stats.predictions, stats.outcomes, stats.skipped) == (40, 40, 20, 0)
    assert stats.delivered == 60 and stats.failed == 0 and stats.ok
    predictions = dict(
        (r["event_id"], r)
        for _, r in consume(kafka_broker.bootstrap, topics.PREDICTIONS, model_id, 40)
    )
    assert len(predictions) == 40
    r5 = predictions["r5"]
    assert r5["event_time"] == to_millis(datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    assert r5["numeric_features"] == {"age": 25.0}
    assert r5["categorical_features"] == {"plan": "gold"}
    assert r5["segments"] == {"region": "eu"}
    assert r5["prediction_label"] == "yes" and r5["prediction_score"] == 5 / 40
    assert predictions["r3"]["numeric_features"] == {}
    outcomes = [r for _, r in consume(kafka_broker.bootstrap, topics.OUTCOMES, model_id, 20)]
    assert len(outcomes) == 20
    assert {o["prediction_id"] for o in outcomes} == {f"r{i}" for i in range(0, 40, 2)}
    assert all(o["event_id"] == event_id("replay-outcome", o["prediction_id"]) for o in outcomes)
    assert {o["prediction_id"]: o["label"] for o in outcomes}["r2"] == "yes"


def test_replay_parquet_with_derived_ids_rate_and_progress(
    kafka_broker, producer: DriftlineProducer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_id = model()
    df = frame(30).drop(columns=["id", "plan", "pred"])
    df["pred"] = [0.5 * i for i in range(30)]  # a regressor...
    df["label"] = [0.5 * i + 0.1 if i % 3 else None for i in range(30)]  # ...and its truth
    df.loc[7, "ts"] = None  # an unusable row: skipped, reported, the replay goes on
    path = tmp_path / "scored.parquet"
    df.to_parquet(path)
    stats = replay_file(
        path, producer, model_id, prediction_col="pred", label_col="label", time_col="ts",
        model_version="2", rate=1000.0, progress=True, chunk_rows=8,
    )  # fmt: skip
    assert (stats.rows, stats.predictions, stats.skipped) == (30, 29, 1)
    assert stats.outcomes == 19  # labels on 20 rows, one of them the skipped row 7
    assert stats.errors == ["row 7: empty or unparseable time"] and not stats.ok
    assert "30/30 rows" in capsys.readouterr().err
    predictions = consume(kafka_broker.bootstrap, topics.PREDICTIONS, model_id, 29)
    assert len(predictions) == 29
    expected_ids = {
        event_id("replay", model_id, "scored.parquet", str(i)) for i in range(30) if i != 7
    }
    assert {r["event_id"] for _, r in predictions} == expected_ids
    for _, r in predictions:
        assert r["model_version"] == "2" and r["prediction_value"] is not None
        assert r["segments"] == {} and "score" in r["numeric_features"]
    outcomes = consume(kafka_broker.bootstrap, topics.OUTCOMES, model_id, 19)
    assert sorted(o["value"] for _, o in outcomes) == sorted(
        0.5 * i + 0.1 for i in range(30) if i % 3 and i != 7
    )


def test_replay_command(kafka_broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_replay_command(parser.add_subparsers(dest="command"))
    model_id = model()
    path = tmp_path / "s.csv"
    frame(5).to_csv(path, index=False)
    args = parser.parse_args(
        ["replay", str(path), "--model-id", model_id, "--prediction-col", "pred",
         "--label-col", "label", "--segment-col", "region", "--segment-col", "plan",
         "--id-col", "id", "--no-progress"]
    )  # fmt: skip
    status = args.handler(args, Settings(kafka_bootstrap=kafka_broker.bootstrap))
    assert status == 0
    assert "5 predictions, 3 outcomes, 8 delivered, 0 failed" in capsys.readouterr().out
    predictions = consume(kafka_broker.bootstrap, topics.PREDICTIONS, model_id, 5)
    assert {r["event_id"]: r["segments"] for _, r in predictions}["r1"] == {
        "region": "eu",
        "plan": "gold",
    }
    with (
        pytest.raises(ValueError, match="no column"),
        DriftlineProducer(kafka_broker.bootstrap) as p,
    ):
        replay_file(path, p, model_id, prediction_col="nope", progress=False)


def test_bulk_predictions_and_outcomes_from_frames_and_tables(kafka_broker) -> None:
    import numpy as np
    import pyarrow as pa

    model_id = model()
    n = 2500  # more than one batch record
    frame_ = pd.DataFrame(
        {"age": np.arange(n, dtype=float), "plan": ["gold", None] * (n // 2),
         "vip": [True, False] * (n // 2)}
    )  # fmt: skip
    frame_.loc[3, "age"] = np.nan  # NaN = missing in the bulk path
    with DriftlineProducer(kafka_broker.bootstrap, batch_rows=1000) as producer:
        ids = producer.log_predictions(
            model_id, frame_, model_version="2", event_time=1_700_000_000_000,
            labels=["yes", "no"] * (n // 2), scores=np.linspace(0, 1, n),
            segments={"region": "eu"}, probabilities={"yes": np.full(n, 0.25)},
        )  # fmt: skip
        assert isinstance(ids, pa.Array) and len(ids) == n
        table = pa.table({"x": [1.0, 2.0]})
        more = producer.log_predictions(model_id, table, event_ids=["t1", "t2"], values=[1, 2])
        assert more.to_pylist() == ["t1", "t2"]
        out_ids = producer.log_outcomes(model_id, ids[:10], labels=["yes"] * 10)
        assert len(out_ids) == 10
        assert producer.flush(30) == 0
        assert producer.stats.delivered == n + 12
    got = {
        r["event_id"]: r
        for _, r in consume(kafka_broker.bootstrap, topics.PREDICTIONS, model_id, n + 2)
    }
    assert len(got) == n + 2
    r3 = got[ids[3].as_py()]
    assert r3["numeric_features"] == {} and r3["categorical_features"] == {"vip": "false"}
    r4 = got[ids[4].as_py()]
    assert r4 == {
        "event_id": ids[4].as_py(), "model_id": model_id, "model_version": "2",
        "event_time": 1_700_000_000_000, "numeric_features": {"age": 4.0},
        "categorical_features": {"plan": "gold", "vip": "true"}, "segments": {"region": "eu"},
        "prediction_label": "yes", "prediction_score": r4["prediction_score"],
        "prediction_value": None, "probabilities": {"yes": 0.25},
    }  # fmt: skip
    assert got["t2"]["prediction_value"] == 2.0
    outcomes = consume(kafka_broker.bootstrap, topics.OUTCOMES, model_id, 10)
    assert {o["prediction_id"] for _, o in outcomes} == set(ids[:10].to_pylist())


def test_bulk_validation_refuses_the_whole_call() -> None:
    producer = DriftlineProducer("127.0.0.1:1", log_level=0)
    with pytest.raises(ValueError, match="row 1: non_finite_value"):
        producer.log_predictions("m", {"x": [1.0, math.inf]})
    with pytest.raises(ValueError, match="row 0: missing_field"):
        producer.log_outcomes("m", ["p1"])
    with pytest.raises(ValueError, match="model_id is empty"):
        producer.log_predictions("", {"x": [1.0]})
    assert producer.pending == 0


def test_linger_sends_without_flush_and_single_records_option(kafka_broker) -> None:
    import time as _time

    model_id = model()
    producer = DriftlineProducer(kafka_broker.bootstrap, linger=0.05)
    producer.log_prediction(model_id, {"x": 1.0, "y": 2.0}, "a")
    producer.log_prediction(model_id, {"x": 3.0, "y": 4.0}, "b")  # the fast path
    deadline = _time.monotonic() + 20
    while producer.stats.delivered < 2 and _time.monotonic() < deadline:
        _time.sleep(0.05)
    assert producer.stats.delivered == 2  # sent by the linger thread, no flush
    producer.close()
    singles = DriftlineProducer(kafka_broker.bootstrap, batch_records=False)
    singles.log_prediction(model_id, {"x": 5.0}, "c")
    singles.close()
    got = consume(kafka_broker.bootstrap, topics.PREDICTIONS, model_id, 3)
    assert sorted(r["prediction_label"] for _, r in got) == ["a", "b", "c"]
    assert [r["numeric_features"] for _, r in got if r["prediction_label"] == "b"] == [
        {"x": 3.0, "y": 4.0}
    ]
