"""Smoke test of benchmarks/pipeline.py: every phase runs on a tiny input and the counts add up.

No timing assertions: the figures of a 2,000-event run on a shared machine mean nothing."""

from __future__ import annotations

import pytest
from support.scripts import load_benchmark

pytestmark = pytest.mark.e2e


def _load_benchmark():
    return load_benchmark("pipeline.py")


def test_models_spread_over_every_partition():
    bench = _load_benchmark()
    # Kafka's own murmur2 test vectors (UtilsTest), as unsigned 32-bit
    assert bench.murmur2(b"21") == -973932308 & 0xFFFFFFFF
    assert bench.murmur2(b"a-little-bit-long-string") == -985981536 & 0xFFFFFFFF
    models = bench.model_ids(8, 4)
    assert sorted(bench.partition_of(m.encode(), 4) for m in models) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_pipeline_benchmark_end_to_end(tmp_path, capsys):
    bench = _load_benchmark()
    n, warm = 2000, 200
    config = bench.Config(
        predictions=n,
        rows_per_record=250,
        warmup=warm,
        profile_predictions=1000,
        # the agent's first commit is all the test checks (a rate needs two commits, and
        # it commits every ~3 s): measuring stops at that commit
        faust_seconds=0.0,
        latency_seconds=2.0,
        settle_seconds=1.0,
        sdk_calls=500,
        workdir=tmp_path,
        out=tmp_path / "pipeline.md",
    )
    results = bench.run(config)

    a, b = results.worker_a, results.worker_b
    assert (a.predictions, b.predictions) == (n, n)
    assert a.messages == 2 * (n // 4 // 250) * 4  # a record of 250 rows per model and topic
    assert b.messages == 2 * n
    # the worker's ClickHouse after each backlog and after the latency phase: every message
    # landed once, every outcome joined
    assert a.stored == dict.fromkeys(("predictions", "outcomes", "joined_labels"), 2 * warm + n)
    assert b.stored == dict.fromkeys(a.stored, 2 * warm + 2 * n)
    lat = results.latency
    assert lat.outcomes == lat.predictions and lat.drift_points > 0
    assert results.stored == results.expected
    quarter = results.latency_quarter
    assert quarter.outcomes == quarter.predictions and quarter.rate < lat.rate
    both = lat.predictions + quarter.predictions
    assert results.stored == {k: v + both for k, v in b.stored.items()}
    assert len(lat.to_produce) == len(lat.samples)
    assert set(lat.cores) == {"producer (this script)", "worker", "broker"}
    assert all(cores >= 0 for cores in lat.cores.values())
    assert results.raw_a.messages == a.messages and results.raw_b.messages == b.messages
    assert results.floor.detail["stored"] == {"predictions": n, "outcomes": n}
    peer = results.peer.detail
    assert peer["predictions"] == peer["outcomes"] == peer["joined"] == n
    assert peer["stored"] == {"predictions": n, "labels": n}
    assert results.faust.committed > 0  # (its rate needs two commits: none in a tiny run)
    assert [p.predictions for p in results.profiles] == [1000, 1025]  # first half of each

    table = bench.render(results)
    print(table)
    assert "| measurement | predictions/s | vs | ratio | target |" in table
    assert "produce (`log_prediction`) → DriftEvent" in table
    assert "a quarter of worker (a)" in table and "Cores used while" in table
    assert f"{n:,} predictions" in table
    assert "cores" in capsys.readouterr().out
