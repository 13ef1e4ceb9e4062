"""BatchWriter / Sink bounds on the real engine, with an injected clock (no sleeping)."""

from __future__ import annotations

import numpy as np
import pytest
from driftline.sinks import BatchWriter, Sink, Store, StoreError
from driftline.sinks.chtypes import dense_map

from .conftest import make_predictions, now_ms


@pytest.fixture
def store(embedded_store: Store) -> Store:
    # The code under test sits above the Store interface; the store tests cover both stores.
    return embedded_store


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _outcomes(n: int, start: int = 0) -> list[dict]:
    t = now_ms()
    return [
        {
            "event_id": f"o{i}",
            "prediction_id": f"p{i}",
            "model_id": "m",
            "event_time": t + i,
            "label": "yes",
            "value": None,
        }
        for i in range(start, start + n)
    ]


def _count(store: Store, table: str) -> int:
    return store.query(f"SELECT count() FROM {table}")[0][0]


def test_size_bound_flushes_inside_add(store: Store) -> None:
    writer = BatchWriter(store, "outcomes", max_rows=10, max_seconds=60, clock=FakeClock())
    assert writer.add(_outcomes(7)) == 0
    assert writer.pending == 7 and _count(store, "outcomes") == 0
    # 7 + 8 crosses the bound: 10 rows go out, 5 stay buffered, never more than max_rows held
    assert writer.add(_outcomes(8, start=7)) == 10
    assert writer.pending == 5 and _count(store, "outcomes") == 10
    # a batch bigger than the bound is split, not held whole
    assert writer.add(_outcomes(25, start=15)) == 30
    assert writer.pending == 0 and _count(store, "outcomes") == 40
    assert writer.rows_written == 40


def test_time_bound_makes_the_writer_due(store: Store) -> None:
    clock = FakeClock()
    writer = BatchWriter(store, "outcomes", max_rows=1000, max_seconds=1.0, clock=clock)
    assert not writer.due()  # empty is never due, however old
    clock.now += 100
    assert not writer.due()
    writer.add(_outcomes(3))
    clock.now += 0.999
    assert not writer.due()
    clock.now += 0.001
    assert writer.due()
    assert writer.flush() == 3
    assert not writer.due() and writer.pending == 0
    assert writer.flush() == 0
    # the age counts from the oldest buffered row, not the newest
    writer.add(_outcomes(1, start=3))
    clock.now += 0.6
    writer.add(_outcomes(1, start=4))
    clock.now += 0.5
    assert writer.due()


def test_columnar_numpy_batches_are_concatenated(store: Store) -> None:
    writer = BatchWriter(store, "detector_stats", max_rows=100, clock=FakeClock())
    t = now_ms()
    for k in range(3):
        n = 4
        writer.add(
            {
                "model_id": ["m"] * n,
                "stream_kind": ["FEATURE"] * n,
                "stream_name": [f"f{k}"] * n,
                "detector": ["psi"] * n,
                "time": np.arange(t + 10 * k, t + 10 * k + n, dtype=np.int64),
                "n_values": np.full(n, 5, dtype=np.uint64),
                "estimate": np.zeros(n),
                "statistic": [None] * n,
                "p_value": np.ones(n),
                "drift": np.zeros(n, dtype=np.uint8),
            }
        )
    assert writer.flush() == 12
    assert store.query("SELECT count(), uniqExact(stream_name) FROM detector_stats") == [(12, 3)]


def test_mismatched_columns_are_refused(store: Store) -> None:
    writer = BatchWriter(store, "outcomes", max_rows=100, clock=FakeClock())
    writer.add(
        {"event_id": ["a"], "prediction_id": ["p"], "model_id": ["m"], "event_time": [now_ms()]}
    )
    with pytest.raises(ValueError, match="differ"):
        writer.add({"event_id": ["b"]})
    with pytest.raises(ValueError, match="ragged"):
        writer.add(
            {"event_id": ["b", "c"], "prediction_id": ["p"], "model_id": ["m"], "event_time": [1]}
        )
    assert writer.pending == 1


def test_failed_flush_keeps_the_buffer(store: Store) -> None:
    writer = BatchWriter(store, "late_table", max_rows=100, clock=FakeClock())
    writer.add([{"id": "a"}, {"id": "b"}])
    with pytest.raises(StoreError):
        writer.flush()
    assert writer.pending == 2
    store.command("CREATE TABLE late_table (id String) ENGINE = MergeTree ORDER BY id")
    assert writer.flush() == 2
    assert store.query("SELECT id FROM late_table ORDER BY id") == [("a",), ("b",)]


def test_invalid_bounds() -> None:
    with pytest.raises(ValueError):
        BatchWriter(None, "t", max_rows=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BatchWriter(None, "t", max_seconds=0)  # type: ignore[arg-type]


def test_sink_writes_every_table_once_per_batch(store: Store) -> None:
    clock = FakeClock()
    sink = Sink(store, max_rows=1000, max_seconds=0.5, clock=clock)
    preds = make_predictions(20)
    sink.add(
        "drift_events",
        [
            {
                "event_id": "d1",
                "model_id": "m1",
                "model_version": "v1",
                "stream_kind": "FEATURE",
                "stream_name": "f0",
                "detector": "ks",
                "detected_at": now_ms(),
                "position": 7,
                "statistic": 0.3,
                "p_value": 0.001,
                "threshold": 0.01,
                "evidence": {},
                "source_event_id": preds[7]["event_id"],
            }
        ],
    )
    sink.add("predictions", preds)
    assert sink.pending == 21 and not sink.due()
    clock.now += 0.5
    assert sink.due()
    # raw events first, then what was derived from them
    assert list(sink.flush_all(dedup_token="predictions.v1:0:0-19")) == [
        "predictions",
        "drift_events",
    ]
    assert sink.pending == 0 and sink.flush_all() == {}
    # the same input batch processed again after a crash: dropped per table by its token
    sink.add("predictions", preds)
    assert sink.flush_all(dedup_token="predictions.v1:0:0-19") == {"predictions": 20}
    assert _count(store, "predictions") == 20


def test_sink_flush_due_only_flushes_due_writers(store: Store) -> None:
    clock = FakeClock()
    sink = Sink(store, max_rows=1000, max_seconds=1.0, clock=clock)
    sink.add("outcomes", _outcomes(2))
    clock.now += 0.7
    sink.add("predictions", make_predictions(2))
    clock.now += 0.3
    assert sink.flush_due() == {"outcomes": 2}
    assert sink.pending == 2


def test_arrow_and_mixed_chunks_are_concatenated(store: Store) -> None:
    names = ["a", "b"]
    t = now_ms()
    writer = BatchWriter(store, "predictions", max_rows=100, clock=FakeClock())

    def batch(k: int, features: object) -> dict:
        return {
            "event_id": [f"e{k}0", f"e{k}1"],
            "model_id": ["m", "m"],
            "model_version": ["1", "1"],
            "event_time": [t + k, t + k],
            "numeric_features": features,
        }

    writer.add(batch(0, dense_map(names, np.array([[1.0, 2.0], [3.0, 4.0]]))))
    writer.add(batch(1, dense_map(names, np.array([[5.0, 6.0], [7.0, 8.0]]))))
    assert writer.flush() == 4
    writer.add(batch(2, dense_map(names, np.array([[9.0, 9.5], [0.0, 0.5]]))))
    writer.add(batch(3, [{"a": -1.0}, {}]))
    assert writer.flush() == 4
    got = store.query("SELECT numeric_features FROM predictions ORDER BY event_id")
    assert [r[0] for r in got] == [
        {"a": 1.0, "b": 2.0},
        {"a": 3.0, "b": 4.0},
        {"a": 5.0, "b": 6.0},
        {"a": 7.0, "b": 8.0},
        {"a": 9.0, "b": 9.5},
        {"a": 0.0, "b": 0.5},
        {"a": -1.0},
        {},
    ]
