"""ClickHouse side: insert throughput through each store, and latency of the documented queries.

    .venv/bin/python benchmarks/clickhouse.py [--rows 10000000] [--fill-seconds 180]
                                              [--insert-rows 200000] [--runs 5]

* insert: rows/s of ``store.insert`` with the worker's batch sizes (5k and 50k rows), for
  ``predictions`` (20 numeric features in a Map, segments, probabilities) and ``joined_labels``,
  from the columns the worker's Sink holds (``columns_for`` of decoded events). Through
  ``EmbeddedStore`` directly, and through ``ServerStore`` (clickhouse-connect, Native format,
  over HTTP) into the embedded store served by ``serve_store`` in a subprocess (chdb allows one
  data path per process). The embedded path is the peer the HTTP path is compared with.
* queries: p50 (and min/max) over ``--runs`` runs, after one warm-up, of every ```sql block of
  docs/queries.md, on an embedded store holding up to ``--rows`` predictions (generated as
  numpy/Arrow columns in 500k-row chunks and inserted with ``store.insert``), half as many
  joined labels, and proportional detector stats, drift events, retraining requests, alerts
  and rule versions. Filling stops at ``--fill-seconds``: the table says how many rows it holds.

Prints markdown tables. Times are wall-clock on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from driftline.sinks import EmbeddedStore, ServerStore, Store, columns_for, dense_map, joined_label

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "queries.md"
DATABASE = "bench"
MODELS = [f"m{i}" for i in range(5)]
FEATURES = [f"f{j:02d}" for j in range(20)]
REGIONS = ["eu", "us", "apac"]
CHUNK = 500_000


# -- data --------------------------------------------------------------------------------------


def _events(n: int, start_ms: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Decoded prediction events (20 features) and their joined-label rows, as the worker has them."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, 20)).tolist()
    scores = rng.random(n).tolist()
    wrong = (rng.random(n) < 0.2).tolist()
    predictions, joined = [], []
    for i in range(n):
        label = "yes" if scores[i] >= 0.5 else "no"
        p = {
            "event_id": f"p{seed}-{i}",
            "model_id": MODELS[i % len(MODELS)],
            "model_version": "1",
            "event_time": start_ms + i,
            "numeric_features": dict(zip(FEATURES, feats[i], strict=True)),
            "categorical_features": {"plan": "basic" if i % 3 else "pro"},
            "segments": {"region": REGIONS[i % 3]},
            "prediction_label": label,
            "prediction_score": scores[i],
            "prediction_value": None,
            "probabilities": {"yes": scores[i], "no": 1 - scores[i]},
        }
        o = {
            "event_id": f"o{seed}-{i}",
            "prediction_id": p["event_id"],
            "model_id": p["model_id"],
            "event_time": start_ms + i + 20_000,
            "label": ({"yes": "no", "no": "yes"}[label] if wrong[i] else label),
            "value": None,
        }
        predictions.append(p)
        joined.append(joined_label(p, o))
    return predictions, joined


def _string_map(key: str, values: np.ndarray) -> pa.MapArray:
    n = len(values)
    return pa.MapArray.from_arrays(
        pa.array(np.arange(n + 1, dtype=np.int32)),
        pa.array(np.full(n, key, dtype=object), pa.string()),
        pa.array(values.astype(object), pa.string()),
    )


def _prediction_chunk(first: int, n: int, start_ms: int, step_ms: float, rng) -> dict[str, Any]:
    idx = np.arange(first, first + n)
    score = rng.random(n)
    return {
        "event_id": pa.array(np.char.add("p", idx.astype(str)).astype(object), pa.string()),
        "model_id": np.array(MODELS, dtype=object)[idx % len(MODELS)],
        "model_version": np.where(idx % 10 == 0, "2", "1").astype(object),
        "event_time": (start_ms + idx * step_ms).astype(np.int64),
        "numeric_features": dense_map(FEATURES, rng.normal(size=(n, len(FEATURES)))),
        "segments": _string_map("region", np.array(REGIONS, dtype=object)[idx % 3]),
        "prediction_label": np.where(score >= 0.5, "yes", "no").astype(object),
        "prediction_score": score,
        "probabilities": dense_map(["yes", "no"], np.column_stack([score, 1 - score])),
    }


def _joined_chunk(pred: dict[str, Any], rng) -> dict[str, Any]:
    """Every other prediction of the chunk gets its label 20-120 s later."""
    take = np.arange(0, len(pred["prediction_score"]), 2)
    n = len(take)
    delay = rng.integers(20_000, 120_000, n)
    correct = (rng.random(n) >= 0.2).astype(np.uint8)
    labels = np.asarray(pred["prediction_label"])[take]
    flipped = np.where(labels == "yes", "no", "yes")
    event_ids = pred["event_id"].take(pa.array(take))
    return {
        "prediction_id": event_ids,
        "outcome_id": pa.compute.binary_join_element_wise("o", event_ids, ""),
        "model_id": pred["model_id"][take],
        "model_version": pred["model_version"][take],
        "segments": pred["segments"].take(pa.array(take)),
        "prediction_time": pred["event_time"][take],
        "outcome_time": pred["event_time"][take] + delay,
        "label_delay_ms": delay.astype(np.int64),
        "prediction_label": labels,
        "prediction_score": pred["prediction_score"][take],
        "label": np.where(correct == 1, labels, flipped).astype(object),
        "correct": correct,
        "error": (1 - correct).astype(np.float64),
        "squared_error": (1 - correct).astype(np.float64),
    }


def _side_tables(store: Store, n_predictions: int, start_ms: int, end_ms: int, rng) -> None:
    """Detector stats (one row per model, stream and 5000-prediction batch), a drift event per
    ~20k predictions, alerts for them, retraining requests, rule versions."""
    batches = max(1, n_predictions // 5000)
    streams = [("FEATURE", f) for f in FEATURES] + [("PREDICTION", "score"), ("ERROR", "error")]
    times = np.linspace(start_ms, end_ms, batches).astype(np.int64)
    n = batches * len(streams)
    store.insert(
        "detector_stats",
        {
            "model_id": np.array(MODELS, dtype=object)[np.arange(n) % len(MODELS)],
            "stream_kind": np.array([k for k, _ in streams] * batches, dtype=object),
            "stream_name": np.array([s for _, s in streams] * batches, dtype=object),
            "detector": np.full(n, "ADWIN", dtype=object),
            "time": np.repeat(times, len(streams)),
            "n_values": np.repeat(np.arange(1, batches + 1) * 1000, len(streams)).astype(np.uint64),
            "estimate": rng.normal(size=n),
            "drift": (rng.random(n) < 0.01).astype(np.uint8),
        },
    )
    drifts, alerts, retraining = [], [], []
    for i in range(max(10, n_predictions // 20_000)):
        model = MODELS[i % len(MODELS)]
        at = int(rng.integers(start_ms, end_ms))
        kind, name = (
            ("ERROR", "error") if i % 7 == 0 else ("FEATURE", f"f{int(rng.zipf(1.5)) % 20:02d}")
        )
        drift_id = f"d{i}"
        drifts.append({
            "event_id": drift_id, "model_id": model, "model_version": "1", "stream_kind": kind,
            "stream_name": name, "detector": "ADWIN", "detected_at": at, "position": i * 1000,
            "statistic": None, "p_value": None, "threshold": 0.002,
            "evidence": {"value": "2.1", "params": "delta=0.002"}, "source_event_id": f"p{i}",
        })  # fmt: skip
        fp = f"fp-{model}-{name}"
        for state, dt in (("pending", 0), ("firing", 30_000), ("resolved", 600_000)):
            alerts.append({
                "fingerprint": fp, "rule_id": "feature", "rule_version": 1,
                "alertname": "feature drift", "model_id": model, "severity": "warning",
                "state": state, "labels": {"model_id": model, "stream_name": name},
                "annotations": {}, "value": 1.0, "starts_at": at,
                "ends_at": at + dt if state == "resolved" else None, "updated_at": at + dt,
                "trigger_event_ids": [drift_id], "event_id": f"a{i}-{state}", "silenced": 0,
                "silence_ids": [], "acknowledged": 0, "notify": ["ops"] if dt else [],
                "inhibited_by": None,
            })  # fmt: skip
        if kind == "ERROR":
            retraining.append({
                "event_id": f"r{i}", "model_id": model, "model_version": "1",
                "requested_at": at, "reason": "error drift", "trigger_event_ids": [drift_id],
                "window_start": at - 3_600_000, "window_end": at, "priority": "NORMAL",
                "policy": "error-drift",
            })  # fmt: skip
    store.insert_rows("drift_events", drifts)
    store.insert_rows("alerts", alerts)
    store.insert_rows("retraining_requests", retraining)
    from datetime import UTC, datetime

    store.insert_rows(
        "rule_versions",
        [
            {
                "kind": "rule", "id": rid, "version": v, "op": "create" if v == 1 else "update",
                "updated_at": datetime.fromtimestamp((start_ms + v * 60_000) / 1000, UTC),
                "updated_by": "bench",
                "value": json.dumps({"data": {"name": rid, "condition": {"type": "drift_detected"}}}),
            }
            for rid in ("feature", "error", "err-rate")
            for v in (1, 2)
        ],
    )  # fmt: skip


# -- the HTTP server subprocess ----------------------------------------------------------------


def _serve(path: str) -> None:
    from driftline.sinks.clickhouse_http import serve_store

    store = EmbeddedStore(Path(path), DATABASE)
    store.migrate()
    handle = serve_store(store, "127.0.0.1", 0, max_execution_time=None)
    print(handle.port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    handle.stop()
    store.close()


def _start_server(path: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout
    port = int(proc.stdout.readline())
    return proc, port


# -- measurements ------------------------------------------------------------------------------


def _insert_rate(store: Store, table: str, batches: list[dict]) -> float:
    store.command(f"TRUNCATE TABLE {table}")
    store.insert(table, batches[0])  # warm-up: first parts, insert context
    store.command(f"TRUNCATE TABLE {table}")
    t = time.perf_counter()
    for cols in batches:
        store.insert(table, cols)
    wall = time.perf_counter() - t
    rows = sum(len(next(iter(c.values()))) for c in batches)
    (count,) = store.query(f"SELECT count() FROM {table}")[0]
    assert count == rows, (table, count, rows)
    return rows / wall


def insert_benchmark(total: int, tmp: Path) -> list[tuple[str, int, str, float, float]]:
    start = int(time.time() * 1000) - 3_600_000
    data: dict[int, dict[str, list[dict]]] = {}
    for batch in (5_000, 50_000):
        preds, joined = [], []
        for k in range(max(1, total // batch)):
            p, j = _events(batch, start + k * batch, seed=k)
            preds.append(columns_for("predictions", p))
            joined.append(columns_for("joined_labels", j))
        data[batch] = {"predictions": preds, "joined_labels": joined}

    results: dict[tuple[str, int, str], float] = {}
    with EmbeddedStore(tmp / "insert", DATABASE) as store:
        store.migrate()
        for batch, tables in data.items():
            for table, batches in tables.items():
                results[(table, batch, "embedded")] = _insert_rate(store, table, batches)
    proc, port = _start_server(tmp / "served")
    try:
        server = ServerStore(f"http://127.0.0.1:{port}", DATABASE)
        for batch, tables in data.items():
            for table, batches in tables.items():
                results[(table, batch, "http")] = _insert_rate(server, table, batches)
        server.close()
    finally:
        assert proc.stdin
        proc.stdin.close()
        proc.wait(30)
    out = []
    for (table, batch, kind), rate in results.items():
        if kind == "embedded":
            http = results[(table, batch, "http")]
            out.append((table, batch, "EmbeddedStore (chdb, Python(arrow))", rate, 1.0))
            out.append((table, batch, "ServerStore -> HTTP -> serve_store", http, http / rate))
    return out


def fill(store: Store, target: int, budget_s: float) -> tuple[int, int, float]:
    """Up to ``target`` predictions (and half as many joined labels) over the last 20 hours,
    stopping when ``budget_s`` is spent. Returns (predictions, joined labels, seconds)."""
    rng = np.random.default_rng(0)
    end_ms = int(time.time() * 1000) - 300_000
    start_ms = end_ms - 20 * 3_600_000
    step = (end_ms - start_ms) / target
    t = time.perf_counter()
    done = joined = 0
    while done < target and time.perf_counter() - t < budget_s:
        n = min(CHUNK, target - done)
        pred = _prediction_chunk(done, n, start_ms, step, rng)
        store.insert("predictions", pred)
        labels = _joined_chunk(pred, rng)
        store.insert("joined_labels", labels)
        done += n
        joined += len(labels["label_delay_ms"])
    reached_ms = int(start_ms + done * step)
    _side_tables(store, done, start_ms, reached_ms, rng)
    return done, joined, time.perf_counter() - t


def documented_queries() -> list[tuple[str, str]]:
    text = DOC.read_text("utf-8")
    out, title = [], ""
    for match in re.finditer(r"^### ([^\n]+)$|^```sql\n(.*?)^```", text, re.M | re.S):
        if match[1]:
            title = match[1].strip()
        else:
            out.append((title, match[2].strip().rstrip(";")))
    return out


def query_benchmark(store: Store, runs: int) -> list[tuple[str, int, float, float, float]]:
    params = {"model_id": MODELS[0], "hours": 24}
    out = []
    for title, sql in documented_queries():
        bound = {k: params[k] for k in re.findall(r"\{(\w+):[^}]+\}", sql)}
        t = time.perf_counter()
        rows = store.query(sql, bound)  # warm-up (and the row count)
        first = time.perf_counter() - t
        times = []
        for _ in range(runs if first < 10 else 2):
            t = time.perf_counter()
            store.query(sql, bound)
            times.append(time.perf_counter() - t)
        out.append((title, len(rows), statistics.median(times), min(times), max(times)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="predictions to query")
    parser.add_argument("--fill-seconds", type=float, default=180.0)
    parser.add_argument("--insert-rows", type=int, default=200_000, help="rows per insert case")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--skip-insert", action="store_true")
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve)
        return

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_insert:
            print(f"\n### Insert throughput ({args.insert_rows:,} rows per case)\n")
            print("| table | batch rows | path | rows/s | vs embedded |")
            print("|---|---:|---|---:|---:|")
            for table, batch, path, rate, ratio in insert_benchmark(args.insert_rows, tmp):
                print(f"| {table} | {batch:,} | {path} | {rate:,.0f} | {ratio:.2f}x |")

        with EmbeddedStore(tmp / "query", DATABASE) as store:
            store.migrate()
            n, joined, seconds = fill(store, args.rows, args.fill_seconds)
            (parts,) = store.query(
                "SELECT count() FROM system.parts WHERE database = {db:String} AND active",
                {"db": DATABASE},
            )[0]
            note = "" if n >= args.rows else f" (stopped at the {args.fill_seconds:g} s budget)"
            print(
                f"\n### Documented queries (docs/queries.md), embedded store: {n:,} predictions"
                f"{note}, {joined:,} joined labels, {len(MODELS)} models (model_id = "
                f"{MODELS[0]!r}: {n // len(MODELS):,} predictions), filled in {seconds:.0f} s "
                f"({n / seconds:,.0f} predictions/s incl. labels), {parts} active parts\n"
            )
            print(
                f"| query | rows | p50 ms | min ms | max ms |  (runs: {args.runs} after 1 warm-up)"
            )
            print("|---|---:|---:|---:|---:|")
            for title, rows, p50, lo, hi in query_benchmark(store, args.runs):
                print(
                    f"| {title} | {rows:,} | {p50 * 1000:,.0f} | {lo * 1000:,.0f} | {hi * 1000:,.0f} |"
                )


if __name__ == "__main__":
    main()
