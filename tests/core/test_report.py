"""``driftline report`` on a store filled by the worker's own logic (a drifting model).

PNG output is not offered: it would need a rasteriser (cairosvg, librsvg) as a new dependency.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from driftline.sinks import EmbeddedStore, Store

from driftline.report import (
    add_report_command,
    handler,
    load_report_data,
    render_svg,
    write_report,
)
from driftline.synthetic import SyntheticStream

_spec = importlib.util.spec_from_file_location(
    "documented_queries_fill",
    Path(__file__).resolve().parents[1] / "sinks" / "test_documented_queries.py",
)
assert _spec and _spec.loader
_fill = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fill)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Store, dict]]:
    path = tmp_path_factory.mktemp("chdb")
    store = EmbeddedStore(path, "driftline")
    try:
        store.migrate()
        rows = _fill.fill_store(store)
        yield path, store, rows
    finally:
        store.close()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_report_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_report_html_has_the_metric_series_and_the_drift_markers(filled, tmp_path):
    path, store, rows = filled
    data = load_report_data(store, "churn", 24)
    out = tmp_path / "churn.html"
    args = _parse(["report", "--model", "churn", "--out", str(out), "--hours", "24"])
    # the handler opens the store itself through open_store; chdb shares the engine per path
    settings = SimpleNamespace(clickhouse_url=None, clickhouse_database="driftline", chdb_path=path)
    assert args.handler is handler
    assert args.handler(args, settings) == 0
    page = out.read_text("utf-8")

    # the chart, and the per-feature drift over time
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 2
    for series in ("accuracy", "error_rate", "label_coverage", "predictions"):
        assert f'data-series="{series}"' in page
    # one point per minute with labels: the lines really carry the data
    accuracy_path = re.search(r'data-series="accuracy" d="([^"]+)"', page)[1]
    assert accuracy_path.count("M") + accuracy_path.count("L") == len(data.minutes)
    bars = re.search(r'data-series="predictions">(.*?)</g>', page, re.S)[1]
    assert bars.count("<rect") == len(data.minutes) > 30

    drifted = {(d["stream_kind"], d["stream_name"]) for d in rows["drift_events"]
               if d["model_id"] == "churn"}  # fmt: skip
    assert ("FEATURE", "f00") in drifted
    markers = set(re.findall(r'class="drift" data-stream-kind="(\w+)" data-stream="(\w+)"', page))
    assert markers == drifted
    assert "feature:f00</text>" in page
    retrain = [r for r in rows["retraining_requests"] if r["model_id"] == "churn"]
    assert page.count('<g class="retrain"') == len(retrain) > 0


def test_quiet_model_has_no_markers_and_svg_output(filled, tmp_path):
    _, store, _ = filled
    svg = render_svg(load_report_data(store, "fraud", 24))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert 'class="drift"' not in svg and 'class="retrain"' not in svg
    assert 'data-series="accuracy"' in svg


def test_unknown_model_says_so(filled):
    _, store, _ = filled
    data = load_report_data(store, "nobody", 1)
    assert data.minutes == [] and "no data" in data.note
    assert "no data for model" in render_svg(data)


def test_report_through_clickhouse_connect(filled, tmp_path):
    # --clickhouse-url goes through ServerStore (clickhouse-connect), here on the same engine
    path, _, _ = filled
    out = tmp_path / "churn.svg"
    args = _parse(["report", "--model", "churn", "--out", str(out),
                   "--clickhouse-url", f"chdb://{path}"])  # fmt: skip
    settings = SimpleNamespace(clickhouse_url=None, clickhouse_database="driftline", chdb_path=path)
    assert handler(args, settings) == 0
    svg = out.read_text("utf-8")
    assert svg.startswith("<svg")
    assert 'data-stream="f00"' in svg and 'data-series="accuracy"' in svg


def test_a_short_span_is_shown_in_buckets_of_seconds(filled):
    """A demo or a new model has minutes of traffic: per-minute points would be one or two."""
    _, store, _ = filled
    stream = SyntheticStream("fresh", n_features=2, seed=3, step_ms=500)  # 300 steps = 2.5 min
    store.insert_rows("predictions", [p for p, _ in stream.events(300)])
    data = load_report_data(store, "fresh", 24)
    assert data.bucket.total_seconds() == 5
    assert data.start == data.minutes[0].minute and data.end - data.start <= timedelta(minutes=4)
    assert sum(r.predictions for r in data.minutes) == 300
    assert "per 5 s" in render_svg(data)


# -- `driftline report` while a worker holds the embedded store --------------------------------


def unique(prefix: str) -> str:
    """A name no other test on the shared broker uses (worker ids, model ids)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _report(data_dir: Path, out: Path, model_id: str, bootstrap: str) -> subprocess.Popen:
    env = dict(os.environ, DRIFTLINE_DATA_DIR=str(data_dir), DRIFTLINE_KAFKA_BOOTSTRAP=bootstrap)
    env.pop("DRIFTLINE_CLICKHOUSE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "driftline.cli", "report", "--model", model_id, "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_report_reads_a_running_workers_store_through_its_endpoint(kafka_broker, tmp_path):
    from e2e_support import start_worker, stop_worker, wait_for, worker_env

    from driftline.client import DriftlineProducer
    from driftline.local_kafka import free_port
    from driftline.store_endpoint import ENDPOINT_FILE

    data_dir, model_id = tmp_path / "data", unique("report-live")
    env = worker_env(kafka_broker.bootstrap, data_dir, unique("report-worker"),
                     DRIFTLINE_CLICKHOUSE_HTTP_PORT=str(free_port()))  # fmt: skip
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        wait_for(lambda: (data_dir / ENDPOINT_FILE).exists(), 120, "the worker's endpoint",
                 worker, tmp_path / "worker.log")  # fmt: skip
        with DriftlineProducer(kafka_broker.bootstrap) as producer:
            for i in range(50):
                producer.log_prediction(model_id, {"x": float(i)}, "yes")
        out = tmp_path / "live.html"
        answers: list[subprocess.CompletedProcess] = []

        def reported_all() -> bool:
            answers.append(_report(data_dir, out, model_id, kafka_broker.bootstrap))
            return answers[-1].returncode == 0 and ": 50 predictions" in answers[-1].stdout

        wait_for(reported_all, 120, "the report to show the 50 predictions", worker,
                 tmp_path / "worker.log")  # fmt: skip
        assert answers[-1].stderr.strip() == "" and out.read_text().startswith("<!DOCTYPE html>")
    finally:
        assert stop_worker(worker) == 0
    assert not (data_dir / ENDPOINT_FILE).exists()  # removed on a clean stop


def test_report_says_in_one_line_what_to_pass_when_the_worker_serves_nothing(
    kafka_broker, tmp_path
):
    from e2e_support import start_worker, stop_worker, wait_for, worker_env

    data_dir = tmp_path / "data"
    worker = start_worker(worker_env(kafka_broker.bootstrap, data_dir, unique("report-worker")),
                          tmp_path / "worker.log")  # fmt: skip
    try:
        # the worker holds the store once it logged where it keeps it
        wait_for(lambda: "embedded store in" in (tmp_path / "worker.log").read_text(), 120,
                 "the worker to open its store", worker, tmp_path / "worker.log")  # fmt: skip
        answer = _report(data_dir, tmp_path / "r.html", "m", kafka_broker.bootstrap)
    finally:
        assert stop_worker(worker) == 0
    assert answer.returncode == 2
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1, answer.stderr
    assert "DRIFTLINE_CLICKHOUSE_HTTP_PORT" in lines[0] and "--clickhouse-url" in lines[0]
    assert not (tmp_path / "r.html").exists()


def test_report_shows_per_feature_drift_over_time(filled, tmp_path):
    """From feature_drift: a row per column, a cell per window, red where the window drifted
    (only the shifted f00, and perhaps the multivariate test it moves), and a summary row per
    column that agrees with the rows."""
    _, store, rows = filled
    data = load_report_data(store, "churn", 24)
    windows = data.feature_windows
    stored = {(r["feature"], r["window_index"]) for r in rows["feature_drift"] if r["model_id"] == "churn"}
    assert {(w.feature, w.window_index) for w in windows} == stored
    # the synthetic stream: five numeric features and the categorical "plan"
    assert {w.feature for w in windows if w.stream_kind == "FEATURE"} == {*(f"f0{i}" for i in range(5)), "plan"}
    drifted = {w.feature for w in windows if w.drifted}
    assert "f00" in drifted and drifted <= {"f00", "multivariate"}
    # the first drifted f00 window is the first after the change (n/2 = 1500, windows of 250)
    assert min(w.window_index for w in windows if w.drifted and w.feature == "f00") == 2
    assert all(w.closeness == 1.0 for w in windows if w.drifted)

    out = tmp_path / "churn.html"
    write_report(data, out)
    page = out.read_text("utf-8")
    cells = re.findall(r'<rect class="window( drifted)?" data-feature="(\w+)" data-window="(\d+)"', page)
    assert len(cells) == len(windows)
    assert {(f, int(i)) for d, f, i in cells if d} == {(w.feature, w.window_index) for w in windows if w.drifted}
    summary = re.search(r"Per-feature drift against the reference</h2>.*?<tbody>(.*?)</tbody>", page, re.S)[1]
    f00 = re.search(r"<tr><td>f00</td><td>(\d+)</td><td>(\d+)</td>", summary)
    assert int(f00[1]) == sum(w.feature == "f00" for w in windows)
    assert int(f00[2]) == sum(w.feature == "f00" and w.drifted for w in windows) > 0


def test_report_without_windows_says_why() -> None:
    from datetime import UTC, datetime

    from driftline.report import MinuteRow, ReportData, render_html

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    page = render_html(ReportData("m", t0, t0 + timedelta(minutes=3), [MinuteRow(t0, 1, 1, 1.0, 0.0, 1.0)], [], []))
    assert page.count("<svg") == 1 and "No window of this model was tested" in page


def test_a_segments_window_drift_is_marked_with_its_segment(filled):
    from datetime import UTC, datetime

    _, store, _ = filled
    at = int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000)
    drift = {"event_id": "seg-report-1", "model_id": "seg-report", "model_version": "1",
             "stream_kind": "FEATURE", "stream_name": "x", "detector": "ks", "detected_at": at,
             "position": 2999, "evidence": {"segment": "region=eu"}, "source_event_id": "p"}  # fmt: skip
    store.insert_rows("drift_events", [drift, {**drift, "event_id": "seg-report-2", "evidence": {}}])
    data = load_report_data(store, "seg-report", 24)
    assert sorted(d.stream_name for d in data.drifts) == ["x", "x [region=eu]"]
