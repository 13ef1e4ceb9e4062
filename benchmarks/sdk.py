"""SDK and columnar codec throughput: what a producing service pays per prediction.

    .venv/bin/python benchmarks/sdk.py [--features 20] [--rows 200000]

Rows (all in one run, one process; the broker address is unreachable on purpose, so
librdkafka only queues and no network or broker time is counted):

* ``log_prediction`` per call, batched (PredictionBatch records, default) and single-event
  records (``batch_records=False``, the earlier SDK) -- the peer;
* ``log_predictions`` (bulk columns from a dict of numpy arrays) in predictions/s;
* ``Codec.encode_columns`` / ``Codec.decode_columns`` of 1000-row PredictionBatch records, fast
  path and fastavro reference.

Targets: log_prediction <= 5 us/call, bulk >= 1,000,000 predictions/s (20 numeric features).
Timings are the best of several passes: other processes only ever slow a pass down.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
from driftline.schemas import Codec, topics

from driftline.client import DriftlineProducer, prediction_columns

TARGET_CALL_US = 5.0
TARGET_BULK = 1_000_000


def best(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def producer(**options: object) -> DriftlineProducer:
    # Unreachable broker: produce() only queues. Long timeouts: nothing fails mid-run.
    return DriftlineProducer("127.0.0.1:1", log_level=0, message_timeout_ms=600_000, **options)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    names = [f"feature_{j}" for j in range(args.features)]
    events = [
        dict(zip(names, row.tolist(), strict=True))
        for row in rng.normal(size=(5000, args.features))
    ]

    def calls(p: DriftlineProducer) -> Callable[[], None]:
        def run() -> None:
            for i in range(args.calls):
                p.log_prediction("churn", events[i % len(events)], "yes", score=0.5)

        return run

    batched, single = producer(), producer(batch_records=False)
    for p in (batched, single):  # warm up: JIT caches, layouts, id pool
        for event in events[:2000]:
            p.log_prediction("churn", event, "yes", score=0.5)
    per_call = best(calls(batched), 3) / args.calls * 1e6
    cpu = time.thread_time()
    calls(batched)()
    per_call_cpu = (time.thread_time() - cpu) / args.calls * 1e6
    old_calls = min(args.calls, 5000)
    old = (
        best(
            lambda: [
                single.log_prediction("churn", e, "yes", score=0.5) for e in events[:old_calls]
            ],
            3,
        )
        / old_calls
        * 1e6
    )

    data = {name: rng.normal(size=args.rows) for name in names}
    labels = np.where(rng.random(args.rows) < 0.5, "yes", "no")
    scores = rng.random(args.rows)
    bulk_producer = producer(batch_rows=1000)
    bulk_producer.log_predictions("churn", {k: v[:1000] for k, v in data.items()})
    bulk = args.rows / best(
        lambda: bulk_producer.log_predictions(
            "churn", data, model_version="3", labels=labels, scores=scores
        ),
        3,
    )

    codec, reference = Codec(), Codec(fast_paths=False)
    cols = prediction_columns("churn", {k: v[:1000] for k, v in data.items()},
                              labels=labels[:1000], scores=scores[:1000])  # fmt: skip
    message = codec.encode_columns(cols)
    codec.decode_columns(message, topics.PREDICTIONS)
    rows = [
        ("Codec.encode_columns (fast path)", 1000 / best(lambda: codec.encode_columns(cols), 20)),
        ("Codec.encode_columns (fastavro reference)", 1000 / best(lambda: reference.encode_columns(cols), 3)),
        ("Codec.decode_columns (fast path, + row validation)", 1000 / best(lambda: codec.decode_columns(message, topics.PREDICTIONS), 20)),
        ("Codec.decode_columns (fastavro reference)", 1000 / best(lambda: reference.decode_columns(message, topics.PREDICTIONS), 3)),
    ]  # fmt: skip
    for p in (batched, single, bulk_producer):
        p._producer.purge()  # nothing will ever be delivered; do not wait for it
        p._closed = True

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{args.features} numeric features + label + score; {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} cpus, load {load:.2f}\n"
    )
    print("| path | cost | vs peer |")
    print("|---|---:|---:|")
    print(
        f"| log_prediction, single-event records (earlier SDK) [peer] | {old:.2f} us/call | 1.00x |"
    )
    print(
        f"| log_prediction, batched (wall, incl. sending full batches) | {per_call:.2f} us/call | {old / per_call:.1f}x |"
    )
    print(
        f"| log_prediction, batched (caller thread CPU) | {per_call_cpu:.2f} us/call | {old / per_call_cpu:.1f}x |"
    )
    print(
        f"| log_predictions (bulk, dict of arrays, {args.rows:,} rows) | {bulk:,.0f} predictions/s | {bulk * old / 1e6:.0f}x |"
    )
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} rows/s | |")
    print(
        f"\nlog_prediction {'meets' if per_call <= TARGET_CALL_US else 'MISSES'} "
        f"<= {TARGET_CALL_US} us/call ({per_call:.2f}); bulk "
        f"{'meets' if bulk >= TARGET_BULK else 'MISSES'} >= {TARGET_BULK:,}/s ({bulk:,.0f}/s)"
    )


if __name__ == "__main__":
    main()
