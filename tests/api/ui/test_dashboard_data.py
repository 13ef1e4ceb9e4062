"""The dashboard's data routes (``/ui/data``) on a store filled by the worker's own logic
(``fill_store``: SyntheticStream events through BatchProcessor and AlertEvaluator; ``churn``
drifts and moves from version 1 to 2, ``fraud`` is quiet), and the feed's cursors."""

from __future__ import annotations

import importlib.util
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from driftline.api import ApiConfig, InMemoryControlPlane, create_app, crud
from driftline.api.routes.feed import format_cursor, parse_cursor
from driftline.api.ui.data import bucket_seconds
from driftline.schemas import topics
from driftline.sinks import EmbeddedStore
from fastapi.testclient import TestClient

_spec = importlib.util.spec_from_file_location(
    "documented_queries_fill_ui",
    Path(__file__).resolve().parents[2] / "sinks" / "test_documented_queries.py",
)
assert _spec and _spec.loader
_fill = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fill)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    store = EmbeddedStore(tmp_path_factory.mktemp("chdb"), "driftline")
    try:
        store.migrate()
        rows = _fill.fill_store(store, n=1500)
        control_plane = InMemoryControlPlane()
        token, _ = crud.create_api_key(control_plane=control_plane, name="ui", scopes=["read"],
                                       actor="tests")  # fmt: skip
        app = create_app(ApiConfig(), control_plane=control_plane, store=store)
        yield TestClient(app, headers={"Authorization": f"Bearer {token}"}), rows
    finally:
        store.close()


def test_overview_has_every_model_and_version(filled):
    client, rows = filled
    data = client.get("/ui/data/overview").json()["data"]
    by_key = {(r["model_id"], r["model_version"]): r for r in data}
    predictions = Counter((p["model_id"], p["model_version"]) for p in rows["predictions"])
    assert {k: r["predictions"] for k, r in by_key.items()} == dict(predictions)
    drifts = Counter((d["model_id"], d["model_version"]) for d in rows["drift_events"])
    assert {k: r["drift_events"] for k, r in by_key.items() if r["drift_events"]} == dict(drifts)
    assert by_key[("fraud", "1")]["drift_events"] == 0 and by_key[("fraud", "1")]["accuracy"] > 0.8
    assert by_key[("churn", "1")]["label_coverage"] > 0.9
    assert by_key[("churn", "1")]["open_alerts"] >= 1  # the error-rate rule fires on churn


def test_model_series_carries_metrics_and_markers(filled):
    client, rows = filled
    s = client.get("/ui/data/models/churn/series").json()
    churn = [p for p in rows["predictions"] if p["model_id"] == "churn"]
    assert sum(p["predictions"] for p in s["points"]) == len(churn)
    times = [p["t"] for p in s["points"]]
    assert times == sorted(times) and s["bucket_seconds"] >= 1
    assert {d["event_id"] for d in s["drifts"]} == {
        d["event_id"] for d in rows["drift_events"] if d["model_id"] == "churn"
    }
    assert len(s["retraining"]) == len([r for r in rows["retraining_requests"]
                                        if r["model_id"] == "churn"])  # fmt: skip
    assert [v["model_version"] for v in s["versions"]] == ["1", "2"]
    # accuracy falls after the change (error rate 0.1 -> 0.45)
    accuracies = [p["accuracy"] for p in s["points"] if p["accuracy"] is not None]
    assert sum(accuracies[:5]) / 5 > sum(accuracies[-5:]) / 5 + 0.2


def test_segment_and_version_narrow_the_series(filled):
    client, rows = filled
    all_traffic = client.get("/ui/data/models/churn/series").json()
    dims = client.get("/ui/data/models/churn/dimensions").json()
    assert dims["versions"] == ["1", "2"] and dims["segments"]
    segment = dims["segments"][0]
    key, value = segment.split("=", 1)
    one = client.get("/ui/data/models/churn/series", params={"segment": segment}).json()
    expected = [p for p in rows["predictions"]
                if p["model_id"] == "churn" and p["segments"].get(key) == value]  # fmt: skip
    assert sum(p["predictions"] for p in one["points"]) == len(expected)
    v2 = client.get("/ui/data/models/churn/series", params={"version": "2"}).json()
    total = sum(p["predictions"] for p in all_traffic["points"])
    assert 0 < sum(p["predictions"] for p in v2["points"]) < total


def test_heatmap_rows_are_the_detected_streams(filled):
    client, rows = filled
    h = client.get("/ui/data/models/churn/heatmap", params={"bucket": 60}).json()
    # every stream a detector reported on, and every stream that drifted (window tests
    # against the reference report their drifts without detector_stats rows)
    streams = {f"{r['stream_kind']}:{r['stream_name']}"
               for r in [*rows["detector_stats"], *rows["drift_events"]]
               if r["model_id"] == "churn"}  # fmt: skip
    assert set(h["streams"]) == streams
    drifted = {c["stream"] for c in h["cells"] if c["drifts"]}
    assert drifted == {f"{d['stream_kind']}:{d['stream_name']}" for d in rows["drift_events"]
                       if d["model_id"] == "churn"}  # fmt: skip
    evidence = client.get("/ui/data/models/churn/drifts",
                          params={"stream": sorted(drifted)[0]}).json()["data"]  # fmt: skip
    assert evidence and all(e["evidence"] for e in evidence)


def test_bad_ranges_and_unknown_models(filled):
    client, _ = filled
    now = int(time.time() * 1000)
    response = client.get("/ui/data/overview", params={"since": now, "until": now - 1})
    assert response.status_code == 422 and "since" in response.text
    assert client.get("/ui/data/overview", params={"since": -1}).status_code == 422
    empty = client.get("/ui/data/models/no-such-model/series").json()
    assert empty["points"] == [] and empty["drifts"] == []


def test_without_a_store_the_data_answers_503():
    control_plane = InMemoryControlPlane()
    token, _ = crud.create_api_key(control_plane=control_plane, name="ui", scopes=["read"],
                                   actor="tests")  # fmt: skip
    client = TestClient(create_app(ApiConfig(), control_plane=control_plane))
    response = client.get("/ui/data/overview", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503


def test_bucket_widths_are_round_and_bounded():
    assert bucket_seconds(0, 150_000) == 1
    assert bucket_seconds(0, 7 * 86_400_000) == 7200
    assert bucket_seconds(0, 10_000 * 86_400_000) % 86400 == 0


def test_feed_cursor_round_trip_and_refusals():
    positions = {(topics.ALERTS, 1): 7, (topics.ALERTS, 0): 12, (topics.DRIFT, 3): 0}
    text = format_cursor(positions)
    assert text == "a0-12.a1-7.d3-0" and parse_cursor(text) == positions
    for bad in ("", "x0-1", "a0", "a0-1;d1-2", "a-1-2"):
        with pytest.raises(ValueError):
            parse_cursor(bad)


def test_feed_refuses_a_malformed_last_event_id():
    control_plane = InMemoryControlPlane()
    token, _ = crud.create_api_key(control_plane=control_plane, name="ui", scopes=["read"],
                                   actor="tests")  # fmt: skip
    client = TestClient(create_app(ApiConfig(), control_plane=control_plane))
    response = client.get("/v1/feed", headers={"Authorization": f"Bearer {token}",
                                               "Last-Event-ID": "garbage"})  # fmt: skip
    assert response.status_code == 400 and "cursor" in response.json()["detail"]
