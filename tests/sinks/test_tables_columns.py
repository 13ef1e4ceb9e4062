"""Insert columns built from decoded batch columns store exactly what the single-event path
stores, on every Store implementation (real engine)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from driftline.schemas.columns import OutcomeColumns, PredictionColumns
from driftline.sinks import Sink, Store, columns_for
from driftline.sinks.columns import (
    numeric_map,
    outcome_insert_columns,
    prediction_insert_columns,
    string_map,
)
from driftline.sinks.tables import OUTCOMES, PREDICTIONS

from .conftest import make_predictions, now_ms


def _irregular_predictions(model_id: str) -> list[dict]:
    """Events with absent features, null labels/scores, missing probabilities and segments."""
    events = make_predictions(30, model_id=model_id, n_features=4)
    for i, event in enumerate(events):
        if i % 3 == 0:
            del event["numeric_features"]["f1"]
        if i % 5 == 0:
            event["categorical_features"] = {}
            event["segments"] = {"region": "eu"}
        if i % 7 == 0:
            event["prediction_label"] = None
            event["prediction_score"] = None
            event["prediction_value"] = 1.5 * i
        if i == 4:
            event["numeric_features"] = {}
            event["categorical_features"] = {"only_here": "x"}
            event["probabilities"] = {"maybe": 0.1}
    return events


def _rows(store: Store, table: str, columns: list[str], model_id: str) -> list[tuple]:
    sql = (
        f"SELECT {', '.join(columns)} FROM {table} FINAL "
        "WHERE model_id = {m:String} ORDER BY event_id"
    )
    return store.query(sql, {"m": model_id})


def _as_plain(rows: list[tuple]) -> list[tuple]:
    # Maps come back as dicts; compare them as dicts (entry order is not part of the contract).
    return [tuple(dict(v) if isinstance(v, dict) else v for v in row) for row in rows]


def test_prediction_columns_store_what_the_single_event_path_stores(store: Store) -> None:
    by_rows = _irregular_predictions("by-rows")
    by_columns = [{**event, "model_id": "by-columns"} for event in by_rows]
    sink = Sink(store)
    sink.add("predictions", columns_for("predictions", by_rows))
    cols = PredictionColumns.from_records("by-columns", by_columns)
    sink.add("predictions", prediction_insert_columns(cols))
    sink.flush_all()
    names = [c for c in PREDICTIONS.columns if c != "model_id"]
    expected = _as_plain(_rows(store, "predictions", names, "by-rows"))
    got = _as_plain(_rows(store, "predictions", names, "by-columns"))
    assert len(got) == 30 and got == expected
    # ... and equal to the events themselves, through to_records.
    assert cols.to_records() == [
        {**e, "probabilities": e["probabilities"] or None} for e in by_columns
    ]


def test_outcome_columns_store_what_the_single_event_path_stores(store: Store) -> None:
    t = now_ms()
    by_rows = [
        {"event_id": f"o{i}", "prediction_id": f"p{i}", "model_id": "by-rows",
         "event_time": t + i, "label": None if i % 2 else "yes",
         "value": 0.5 * i if i % 2 else None}
        for i in range(10)
    ]  # fmt: skip
    by_columns = [{**event, "model_id": "by-columns"} for event in by_rows]
    store.insert("outcomes", columns_for("outcomes", by_rows))
    cols = OutcomeColumns.from_records("by-columns", by_columns)
    store.insert("outcomes", outcome_insert_columns(cols))
    names = [c for c in OUTCOMES.columns if c != "model_id"]
    expected = _rows(store, "outcomes", names, "by-rows")
    assert len(expected) == 10
    assert _rows(store, "outcomes", names, "by-columns") == expected
    assert cols.to_records() == by_columns


def test_maps_skip_absent_entries_and_keep_row_alignment() -> None:
    matrix = np.array([[1.0, np.nan], [np.nan, np.nan], [3.0, 4.0]])
    assert numeric_map(("a", "b"), matrix).to_pylist() == [
        [("a", 1.0)],
        [],
        [("a", 3.0), ("b", 4.0)],
    ]
    columns = {"x": pa.array(["1", None, "3"]), "y": pa.array([None, None, "4"])}
    assert string_map(columns, 3).to_pylist() == [[("x", "1")], [], [("x", "3"), ("y", "4")]]
    assert string_map({}, 2).to_pylist() == [[], []]
    # Sliced inputs (offsets into shared buffers) line up too.
    sliced = {"x": pa.array(["0", "1", None, "3"]).slice(1), "y": columns["y"]}
    assert string_map(sliced, 3).to_pylist() == [[("x", "1")], [], [("x", "3"), ("y", "4")]]
