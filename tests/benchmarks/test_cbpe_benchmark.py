"""Smoke test of benchmarks/cbpe.py on tiny sizes (the peer in this Python: numpy only, since
NannyML is no dependency of driftline): every stream has a row in every table, and the
numpy peer agrees with driftline where both must be right and where both must be wrong."""

from __future__ import annotations

import sys

import numpy as np
from support.scripts import load_benchmark


def test_every_stream_has_a_row_and_the_peers_agree(capsys) -> None:  # noqa: ANN001
    bench = load_benchmark("cbpe.py")
    argv = [
        "--reference",
        "4000",
        "--chunks",
        "4",
        "--chunk",
        "2000",
        "--peer-python",
        sys.executable,
    ]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    for name in bench.SCENARIOS:
        assert sum(row.startswith(f"| {name} |") for row in rows) == 3, name
    assert "NannyML not installed" in out


def test_both_implementations_track_a_calibrated_stream_and_miss_a_concept_change() -> None:
    bench = load_benchmark("cbpe.py")
    for name, low, high in (("calibrated", 0.0, 0.02), ("concept drift", 0.05, 0.2)):
        data = bench.scenario(name, 10_000, 4, 5_000, 1)
        truth = bench.realised(data, 5_000)["accuracy"]
        ours, _ = bench.driftline(data, 5_000)
        theirs = bench.numpy_cbpe(data, 5_000)
        for estimate in (ours["accuracy"], theirs["accuracy"]):
            assert low <= np.abs(estimate - truth).mean() <= high, name
