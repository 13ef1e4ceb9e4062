"""Every ```sql block of docs/queries.md runs against a store filled by the real pipeline logic.

The store is filled the way the worker fills it: SyntheticStream events, Avro-encoded, through
``BatchProcessor`` (join, detectors) and ``AlertEvaluator`` (rules as the API writes them), the
rows of every table inserted with ``store.insert_rows``. Model ``churn`` drifts (feature f00
shifts, error rate rises) and moves from version 1 to 2; model ``fraud`` is a quiet control.

``fill_store`` is reused by tests/core/test_report.py.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from driftline.api.control_plane import Record, encode_value
from driftline.api.models import RuleCreate, dump
from driftline.api.tables import audit_row
from driftline.detectors.monitor import MonitorConfig
from driftline.schemas import Codec, topics
from driftline.sinks import EmbeddedStore, Store
from driftline.streams.alerting import AlertEvaluator, model_partitions
from driftline.streams.kv import MemoryKV
from driftline.streams.processor import BatchProcessor, ProcessorConfig, SourceMessage
from driftline.streams.rulebook import RuleBook

from driftline.synthetic import SyntheticStream

DOC = Path(__file__).resolve().parents[2] / "docs" / "queries.md"
CODEC = Codec()
EVENT_TABLES = (
    "predictions",
    "outcomes",
    "joined_labels",
    "detector_stats",
    "drift_events",
    "retraining_requests",
    "alerts",
    "rule_versions",
    "feature_drift",
    "data_quality",
    "reference_profiles",
)
PARAMS = {"model_id": "churn", "hours": 24}


# -- filling a store ---------------------------------------------------------------------------


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _rules(stamp_ms: int) -> tuple[RuleBook, list[Record]]:
    """Three rules on churn (feature drift with retrain, error drift, error rate), one rule
    edited once: what an operator would have set up through the API."""
    specs = [
        ("feature", 1, {"name": "feature drift", "models": ["churn"],
                        "signal": {"kind": "drift", "stream_kind": "FEATURE"},
                        "condition": {"type": "drift_detected"}, "repeat_interval": "2m",
                        "for": "30s", "actions": [{"type": "retrain"}]}),
        ("error", 1, {"name": "error drift", "models": ["churn"],
                      "signal": {"kind": "drift", "stream_kind": "ERROR"},
                      "condition": {"type": "drift_detected"}, "repeat_interval": "1m"}),
        ("err-rate", 1, {"name": "error rate", "models": ["churn", "fraud"],
                         "signal": {"kind": "metric", "metric": "error_rate", "window": "5m"},
                         "condition": {"type": "threshold", "op": ">", "value": 0.5},
                         "min_samples": 50, "repeat_interval": "5m"}),
        ("err-rate", 2, {"name": "error rate", "models": ["churn", "fraud"],
                         "signal": {"kind": "metric", "metric": "error_rate", "window": "5m"},
                         "condition": {"type": "threshold", "op": ">", "value": 0.3},
                         "min_samples": 50, "repeat_interval": "5m"}),
    ]  # fmt: skip
    book, records = RuleBook(), []
    for i, (ident, version, fields) in enumerate(specs):
        stamp = _iso(stamp_ms + i * 60_000)
        data = dump(RuleCreate.model_validate(fields))
        record = Record("rule", ident, version, _iso(stamp_ms), stamp, "analyst@example.com", data)
        assert book.apply(f"rule:{ident}".encode(), encode_value(record))
        records.append(record)
    return book, records


def _messages(streams: list[tuple[SyntheticStream, int, int]], outcome_lag: int = 50):
    """Predictions in step order, interleaved across models, each outcome ``outcome_lag``
    steps after its prediction. ``streams``: (stream, first step, last step + 1)."""
    out: list[SourceMessage] = []
    offsets = {topics.PREDICTIONS: 0, topics.OUTCOMES: 0}

    def add(topic: str, name: str, record: dict[str, Any]) -> None:
        value = CODEC.encode(name, record)
        out.append(SourceMessage(topic, 0, offsets[topic], record["model_id"].encode(), value))
        offsets[topic] += 1

    last = max(end for _, _, end in streams)
    for i in range(last + outcome_lag):
        for stream, start, end in streams:
            if start <= i < end:
                add(topics.PREDICTIONS, "PredictionEvent", stream.step(i)[0])
            if start <= i - outcome_lag < end:
                add(topics.OUTCOMES, "OutcomeEvent", stream.step(i - outcome_lag)[1])
    return out


def fill_store(store: Store, *, n: int = 3000, now_ms: int | None = None) -> dict[str, list]:
    """Run ``n`` steps per model (one per second, ending about now) through the worker's
    logic and insert every table's rows; returns the rows by table."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    start = (now_ms - (n + 120) * 1000) // 60_000 * 60_000
    common = {"n_features": 5, "step_ms": 1000, "start_ms": start, "label_delay_ms": 20_000}
    change = n // 2
    churn_v1 = SyntheticStream("churn", seed=1, change_at=change, **common)
    churn_v2 = SyntheticStream("churn", seed=1, change_at=change, model_version="2", **common)
    fraud = SyntheticStream("fraud", seed=2, **common)
    switch = n * 4 // 5  # churn's version 2 takes over late (the retrained model)
    msgs = _messages([(churn_v1, 0, switch), (churn_v2, switch, n), (fraud, 0, n)])

    book, records = _rules(start)
    # Features are watched by window tests against each model's first events (no ADWIN on raw
    # features): windows of 250 after a 1,000-event reference, so the change at n/2 is found.
    config = ProcessorConfig(profiles=MonitorConfig(window_size=250, auto_reference_events=1000))
    processor = BatchProcessor(CODEC, config)
    evaluator = AlertEvaluator(book)
    alert_states = MemoryKV()
    rows: dict[str, list] = defaultdict(list)
    for i in range(0, len(msgs), 500):  # the worker's batches
        chunk = msgs[i : i + 500]
        result = processor.process(chunk)
        alerts = evaluator.evaluate(result, alert_states, model_partitions(chunk))
        for table in {*result.rows, *result.columns}:
            rows[table].extend(result.table_rows(table))
        for table, table_rows in alerts.rows.items():
            rows[table].extend(table_rows)
    rows["rule_versions"] = [audit_row(r, op="create" if r.version == 1 else "update")
                             for r in records]  # fmt: skip
    for table in EVENT_TABLES:
        for j in range(0, len(rows[table]), 5000):
            store.insert_rows(table, rows[table][j : j + 5000])
    return dict(rows)


# -- the documented queries --------------------------------------------------------------------


def documented_queries(text: str | None = None) -> list[tuple[str, str]]:
    """(title of the ``###`` section above it, SQL) for every ```sql block of docs/queries.md."""
    text = DOC.read_text("utf-8") if text is None else text
    out, title = [], ""
    for match in re.finditer(r"^### ([^\n]+)$|^```sql\n(.*?)^```", text, re.M | re.S):
        if match[1]:
            title = match[1].strip()
        else:
            out.append((title, match[2].strip().rstrip(";")))
    return out


def params_for(sql: str) -> dict[str, Any]:
    return {name: PARAMS[name] for name in re.findall(r"\{(\w+):[^}]+\}", sql)}


QUERIES = documented_queries()


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, dict]]:
    store = EmbeddedStore(tmp_path_factory.mktemp("chdb"), "analytics")
    try:
        store.migrate()
        rows = fill_store(store)
        yield store, rows
    finally:
        store.close()


def run(store: Store, title: str) -> pd.DataFrame:
    (sql,) = [sql for t, sql in QUERIES if t == title]
    return store.query_df(sql, params_for(sql))


def test_the_doc_has_the_queries_it_promises():
    titles = [t for t, _ in QUERIES]
    assert len(QUERIES) >= 15 and len(set(titles)) == len(titles), titles
    assert all(titles), "every sql block sits under a ### title"


@pytest.mark.parametrize("title,sql", QUERIES, ids=[t for t, _ in QUERIES])
def test_documented_query_returns_rows(filled, title: str, sql: str):
    store, _ = filled
    assert store.query(sql, params_for(sql)), f"no rows from {title!r}"


@pytest.mark.parametrize("title,sql", QUERIES, ids=[t for t, _ in QUERIES])
def test_event_tables_are_read_deduplicated(title: str, sql: str):
    # ReplacingMergeTree tables count replays until merged: FINAL or a *_dedup view, always
    for table in re.findall(r"\b(?:FROM|JOIN)\s+(\w+)(?!\w)(?:\s+AS\s+\w+)?(\s+FINAL)?", sql):
        name, final = table
        if name in EVENT_TABLES:
            assert final, f"{title!r} reads {name} without FINAL"


def test_the_scenario_drifts(filled):
    _, rows = filled
    churn = {(d["stream_kind"], d["stream_name"]) for d in rows["drift_events"]
             if d["model_id"] == "churn"}  # fmt: skip
    assert ("FEATURE", "f00") in churn
    assert rows["retraining_requests"] and rows["alerts"]
    assert not [d for d in rows["drift_events"] if d["model_id"] == "fraud"]


def test_accuracy_per_minute_matches_pandas(filled):
    store, rows = filled
    got = run(store, "Performance per minute").set_index("minute")
    labels = pd.DataFrame([r for r in rows["joined_labels"] if r["model_id"] == "churn"])
    labels["minute"] = pd.to_datetime(labels["prediction_time"] // 60_000 * 60_000, unit="ms")
    want = labels.groupby("minute")["correct"].mean()
    got.index = pd.to_datetime(got.index).tz_localize(None)
    joined = got.join(want.rename("want"), how="inner")
    assert len(joined) == len(want) and len(want) > 30
    pd.testing.assert_series_equal(
        joined["accuracy"].astype(float), joined["want"].astype(float), check_names=False
    )
    assert (joined["error_rate"] - (1 - joined["want"])).abs().max() < 1e-9


def test_top_drifting_features_match_pandas(filled):
    store, rows = filled
    got = run(store, "Top drifting features per model")
    drifts = pd.DataFrame(rows["drift_events"])
    features = drifts[drifts["stream_kind"] == "FEATURE"]
    want = features.groupby(["model_id", "stream_name"]).size()
    for row in got.itertuples():
        assert row.drift_events == want[(row.model_id, row.feature)]
    assert got.iloc[0]["feature"] == want.idxmax()[1]


def test_prediction_volume_by_version_matches_pandas(filled):
    store, rows = filled
    got = run(store, "Prediction volume by model version")
    want = pd.DataFrame(rows["predictions"]).groupby(["model_id", "model_version"]).size()
    totals = got.groupby(["model_id", "model_version"])["predictions"].sum()
    assert totals.to_dict() == want.to_dict()
    assert set(want.index) == {("churn", "1"), ("churn", "2"), ("fraud", "1")}


def test_feature_drift_over_time_flags_only_the_shifted_feature(filled):
    store, rows = filled
    got = run(store, "Feature drift statistics over time")
    assert set(got[got["drifted"] == 1]["feature"]) == {"f00"}
    # the first drifted window is the first after the change (n/2 = 1500; windows of 250)
    first = got[(got["drifted"] == 1)].sort_values("window_index").iloc[0]
    assert first["window_index"] == 2 and first["reference_source"] == "first_events"
    references = run(store, "Reference profiles of a model")
    assert set(references["feature"]) >= {"f00", "f01", "f02", "f03", "f04"}
    assert set(references["reference_source"]) == {"first_events"}
