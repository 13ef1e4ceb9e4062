"""Insert throughput into ``predictions`` (20 numeric features in a Map) on embedded chdb.

    .venv/bin/python -m driftline.sinks.bench [--rows 200000] [--batches 5000,50000]

Prints rows/s per batch size for the store's path (``INSERT ... SELECT * FROM
Python(arrow_table)``) from ready columns, from decoded event dicts (what the worker holds),
with a dense feature matrix, and through ServerStore (clickhouse-connect on its chdb backend),
against two peers in the same run: an Arrow IPC stream via ``send_insert`` and JSONEachRow.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from .chtypes import dense_map
from .embedded import EmbeddedStore
from .server import ServerStore
from .tables import columns_for


def _events(n: int, start_ms: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, 20)).tolist()
    names = [f"f{j}" for j in range(20)]
    scores = rng.random(n).tolist()
    return [
        {
            "event_id": f"e{seed}-{i}",
            "model_id": "m1",
            "model_version": "v1",
            "event_time": start_ms + i,
            "numeric_features": dict(zip(names, feats[i], strict=True)),
            "categorical_features": {"plan": "gold"},
            "segments": {"region": "eu", "channel": "web"},
            "prediction_label": "yes",
            "prediction_score": scores[i],
            "prediction_value": None,
            "probabilities": {"yes": scores[i], "no": 1 - scores[i]},
        }
        for i in range(n)
    ]


def _rate(rows: int, seconds: float) -> str:
    return f"{rows / seconds:>12,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batches", default="5000,50000")
    args = parser.parse_args()
    now = int(time.time() * 1000) - 3_600_000
    with tempfile.TemporaryDirectory() as tmp, EmbeddedStore(Path(tmp), "bench") as store:
        store.migrate()
        # CPU rows/s = rows per second of process CPU time (all engine threads included):
        # the machine-load-independent cost, and what one free core would sustain.
        print(f"{'batch':>8} {'path':<40} {'rows/s':>12} {'CPU rows/s':>12} {'vs ours':>8}")
        for batch in [int(b) for b in args.batches.split(",")]:
            n_batches = max(1, args.rows // batch)
            events = [_events(batch, now + k * batch, seed=k) for k in range(n_batches)]
            results: dict[str, tuple[float, float]] = {}
            # warm up (first parts, first merges) so the first measured path is not penalised
            store.insert(
                "predictions", columns_for("predictions", _events(batch, now, seed=999_999))
            )

            store.command("TRUNCATE TABLE predictions")
            t, c = time.perf_counter(), time.process_time()
            for ev in events:
                store.insert("predictions", columns_for("predictions", ev))
            results["events -> columns_for -> insert"] = (
                time.perf_counter() - t,
                time.process_time() - c,
            )
            counts = [store.query("SELECT count() FROM predictions")[0][0]]

            columns = [columns_for("predictions", ev) for ev in events]
            # the worker holds features as a matrix for the detectors anyway
            names20 = [f"f{j}" for j in range(20)]
            dense = [
                {
                    **cols,
                    "numeric_features": dense_map(
                        names20, np.array([list(m.values()) for m in cols["numeric_features"]])
                    ),
                }
                for cols in columns
            ]
            store.command("TRUNCATE TABLE predictions")
            t, c = time.perf_counter(), time.process_time()
            for cols in dense:
                store.insert("predictions", cols)
            results["columns + dense_map -> insert"] = (
                time.perf_counter() - t,
                time.process_time() - c,
            )
            counts.append(store.query("SELECT count() FROM predictions")[0][0])

            store.command("TRUNCATE TABLE predictions")
            t, c = time.perf_counter(), time.process_time()
            for k, cols in enumerate(columns):
                store.insert("predictions", cols, dedup_token=f"{batch}-{k}")
            results["columns -> insert (ours)"] = (time.perf_counter() - t, time.process_time() - c)
            counts.append(store.query("SELECT count() FROM predictions")[0][0])

            server = ServerStore(f"chdb://{tmp}", "bench")
            store.command("TRUNCATE TABLE predictions")
            t, c = time.perf_counter(), time.process_time()
            for cols in columns:
                server.insert("predictions", cols)
            results["ServerStore (clickhouse-connect, chdb)"] = (
                time.perf_counter() - t,
                time.process_time() - c,
            )
            counts.append(store.query("SELECT count() FROM predictions")[0][0])
            server.close()

            store.insert_path = "arrowstream"
            store.command("TRUNCATE TABLE predictions")
            t, c = time.perf_counter(), time.process_time()
            for k, cols in enumerate(columns):
                store.insert("predictions", cols, dedup_token=f"{batch}-{k}")
            results["peer: columns -> Arrow IPC send_insert"] = (
                time.perf_counter() - t,
                time.process_time() - c,
            )
            counts.append(store.query("SELECT count() FROM predictions")[0][0])
            store.insert_path = "python"

            conn = store._connection()
            store.command("TRUNCATE TABLE predictions")
            t, c = time.perf_counter(), time.process_time()
            for ev in events:
                payload = "\n".join(
                    json.dumps({**e, "event_time": e["event_time"] / 1000}) for e in ev
                )
                with conn.send_insert("INSERT INTO predictions", "JSONEachRow") as ins:
                    ins.append(payload)
                    ins.finish()
            results["peer: events -> JSONEachRow"] = (
                time.perf_counter() - t,
                time.process_time() - c,
            )
            counts.append(store.query("SELECT count() FROM predictions")[0][0])

            total = batch * n_batches
            assert counts == [total] * len(results), counts
            ours = results["columns -> insert (ours)"][0]
            for name, (wall, cpu) in results.items():
                print(
                    f"{batch:>8} {name:<40} {_rate(total, wall)} {_rate(total, cpu)}"
                    f" {ours / wall:>7.2f}x"
                )


if __name__ == "__main__":
    main()
