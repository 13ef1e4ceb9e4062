"""Smoke test of benchmarks/pipeline.py: every phase runs on a tiny input and the counts add up.

No timing assertions: the figures of a 2,000-event run on a shared machine mean nothing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pipeline.py"


def _load_benchmark():
    name = "driftline_pipeline_benchmark"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_models_spread_over_every_partition():
    bench = _load_benchmark()
    # Kafka's own murmur2 test vectors (UtilsTest), as unsigned 32-bit
    assert bench.murmur2(b"21") == -973932308 & 0xFFFFFFFF
    assert bench.murmur2(b"a-little-bit-long-string") == -985981536 & 0xFFFFFFFF
    models = bench.model_ids(8, 4)
    assert sorted(bench.partition_of(m.encode(), 4) for m in models) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_pipeline_benchmark_end_to_end(tmp_path, capsys):
    bench = _load_benchmark()
    n, lag = 2000, 50
    config = bench.Config(
        events=n,
        outcome_lag=lag,
        variants=[],
        faust_seconds=5.0,
        latency_seconds=4.0,
        settle_seconds=2.0,
        workdir=tmp_path,
        out=tmp_path / "pipeline.md",
    )
    results = bench.run(config)

    assert (results.n_predictions, results.n_outcomes) == (n, n - lag)
    assert results.produced.delivered == 2 * n - lag
    assert len(results.produced.per_partition) == 2 * config.partitions  # every partition fed
    assert results.raw.messages == results.raw_decode.messages == 2 * n - lag
    assert results.worker.caught_up
    assert results.latency.produced == results.latency_predictions + results.latency_outcomes
    assert results.latency.drift_points > 0
    # every message of both phases landed once in ClickHouse, every outcome joined
    predictions = n + results.latency_predictions
    outcomes = n - lag + results.latency_outcomes
    assert results.stored == {
        "predictions": predictions,
        "outcomes": outcomes,
        "joined_labels": outcomes,
    }

    table = bench.render(results)
    print(table)
    assert "| measurement | driftline | ceiling | ratio | target |" in table
    assert "produce → DriftEvent" in table
    assert f"{2 * n - lag:,} messages" in table
    assert "cores" in capsys.readouterr().out
