"""Codec throughput on one core: PredictionEvents (20 numeric features) and OutcomeEvents.

    .venv/bin/python benchmarks/codec.py [--n 20000] [--features 20]

The peer is plain fastavro reading the shipped schema (timestamps become datetimes), the way
a consumer would use fastavro out of the box. Rows show events per second and the ratio to
that peer in the same run (the machine's load moves absolute numbers, ratios much less).
Target: the worker's decode path (codec + validation) at >= 100k PredictionEvents/s.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any

from driftline.schemas import Codec, load_schema, validate_outcome, validate_prediction
from driftline.schemas.columns import OutcomeColumns, PredictionColumns
from driftline.schemas.singlepath import decode_outcomes, decode_predictions
from fastavro import parse_schema, schemaless_reader

TARGET = 100_000


def predictions(n: int, features: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "event_id": f"{rng.getrandbits(128):032x}",
            "model_id": "churn",
            "model_version": "3",
            "event_time": 1_700_000_000_000 + i,
            "numeric_features": {f"feature_{j}": rng.gauss(0, 1) for j in range(features)},
            "categorical_features": {"plan": rng.choice(["basic", "gold"])},
            "segments": {"region": rng.choice(["eu", "us"]), "channel": "web"},
            "prediction_label": rng.choice(["yes", "no"]),
            "prediction_score": rng.random(),
            "prediction_value": None,
            "probabilities": None,
        }
        for i in range(n)
    ]


def outcomes(n: int) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"o{i}",
            "prediction_id": f"p{i}",
            "model_id": "churn",
            "event_time": 1_700_000_000_000 + i,
            "label": "yes",
            "value": None,
        }
        for i in range(n)
    ]


def rate(fn: Callable[[list[Any]], Any], items: list[Any], repeat: int = 15) -> float:
    """Best of ``repeat`` timed passes over slices of 1000 items: other processes on a shared
    machine only ever slow a pass down, so the fastest pass is the truest."""
    best = float("inf")
    chunks = [items[i : i + 1000] for i in range(0, len(items), 1000)]
    for r in range(repeat):
        chunk = chunks[r % len(chunks)]
        start = time.perf_counter()
        fn(chunk)
        best = min(best, (time.perf_counter() - start) / len(chunk))
    return 1.0 / best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--features", type=int, default=20)
    args = parser.parse_args(argv)

    codec = Codec()
    reference = Codec(fast_paths=False)
    records = predictions(args.n, args.features)
    data = [codec.encode("PredictionEvent", r) for r in records]
    assert [codec.decode(d)[1] for d in data[:100]] == records[:100]
    peer_schema = parse_schema(load_schema("PredictionEvent"))

    def peer(items: list[bytes]) -> None:
        for d in items:
            fo = BytesIO(d)
            fo.seek(5)
            schemaless_reader(fo, peer_schema, None)

    def decode_with(c: Codec) -> Callable[[list[bytes]], None]:
        def run(items: list[bytes]) -> None:
            for d in items:
                c.decode(d, "PredictionEvent")

        return run

    def decode_validate(items: list[bytes]) -> None:
        for d in items:
            validate_prediction(codec.decode(d, "PredictionEvent")[1])

    def encode(items: list[dict[str, Any]]) -> None:
        for r in items:
            codec.encode("PredictionEvent", r)

    out_records = outcomes(args.n)
    out_data = [codec.encode("OutcomeEvent", r) for r in out_records]

    def decode_outcomes(items: list[bytes]) -> None:
        for d in items:
            validate_outcome(codec.decode(d, "OutcomeEvent")[1])

    peer_rate = rate(peer, data)
    rows = [
        ("fastavro, shipped schema (datetimes) [peer]", peer_rate),
        ("Codec.decode, fast path off (fastavro, int millis)", rate(decode_with(reference), data)),
        ("Codec.decode (PredictionEvent v1 fast path)", rate(decode_with(codec), data)),
        ("Codec.decode + validate_prediction", rate(decode_validate, data)),
        ("Codec.encode", rate(encode, records)),
        ("OutcomeEvent: Codec.decode + validate_outcome", rate(decode_outcomes, out_data)),
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"PredictionEvent with {args.features} numeric features, {len(data[0])} bytes; "
        f"n={args.n}; {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} cpus, load {load:.2f}\n"
    )
    print("| path | events/s | vs peer |")
    print("|---|---:|---:|")
    for name, value in rows:
        print(f"| {name} | {value:,.0f} | {value / peer_rate:.2f}x |")
    worker = rows[3][1]
    verdict = "meets" if worker >= TARGET else "MISSES"
    print(
        f"\ndecode + validate {verdict} the {TARGET:,}/s target on this machine ({worker:,.0f}/s)"
    )


def singlepath(n: int = 10_000, features: int = 20) -> None:
    """µs per message, many single-event messages into columns: today's path (Codec.decode +
    validate_* + from_records) vs singlepath.decode_* (one kernel over a poll of 1000)."""
    codec = Codec()
    pred = [codec.encode("PredictionEvent", r) for r in predictions(n, features)]
    outs = [codec.encode("OutcomeEvent", r) for r in outcomes(n)]

    def today_predictions(items: list[bytes]) -> None:
        records = [codec.decode(d, "PredictionEvent")[1] for d in items]
        for r in records:
            validate_prediction(r)
        PredictionColumns.from_records("churn", records)

    def today_outcomes(items: list[bytes]) -> None:
        records = [codec.decode(d, "OutcomeEvent")[1] for d in items]
        for r in records:
            validate_outcome(r)
        OutcomeColumns.from_records("churn", records)

    def new_predictions(items: list[bytes]) -> None:
        runs, rest = decode_predictions(items, codec)
        assert rest.size == 0 and not runs[0].row_errors

    def new_outcomes(items: list[bytes]) -> None:
        runs, rest = decode_outcomes(items, codec)
        assert rest.size == 0 and not runs[0].row_errors

    new_predictions(pred[:10])  # compile / load the cached kernels outside the timing
    new_outcomes(outs[:10])
    print(f"| single-event messages -> columns ({features} features) | µs/message | speed-up |")
    print("|---|---:|---:|")
    for label, old, new, data in (
        ("PredictionEvent", today_predictions, new_predictions, pred),
        ("OutcomeEvent", today_outcomes, new_outcomes, outs),
    ):
        before, after = 1e6 / rate(old, data), 1e6 / rate(new, data)
        print(f"| {label}: decode + validate + from_records | {before:.2f} | |")
        print(f"| {label}: singlepath | {after:.2f} | {before / after:.1f}x |")


if __name__ == "__main__":
    main()
    print()
    singlepath()
