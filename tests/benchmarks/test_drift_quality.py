"""Smoke test of benchmarks/drift_quality.py on tiny sizes: every method runs on every stream,
the tables have a row per stream and change, and the alarm positions mean what they say.

No assertions on the rates themselves beyond what a tiny run cannot get wrong: the figures of a
100,000-value run are noise."""

from __future__ import annotations

import numpy as np
from support.scripts import load_benchmark


def _load():
    return load_benchmark("drift_quality.py")


def test_tables_cover_every_stream_and_change(capsys) -> None:  # noqa: ANN001
    bench = _load()
    assert bench.main(["--values", "20000", "--runs", "1", "--window", "1000", "--long", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    names = [s.name for s in bench.STATIONARY] + [s.name for s in bench.CHANGES]
    sequential = [s.name for s in bench.SEQUENTIAL_STATIONARY + bench.SEQUENTIAL_CHANGES]
    for name in names + sequential:
        assert any(row.startswith(f"| {name} |") for row in rows), name
    # part 3, ADWIN on raw features: the numeric stationary streams and the mean shift
    numeric = [s.name for s in bench.STATIONARY if s.kind == "numeric"]
    # plus a header row per table; part 4's two tables: a row per stream and per change
    assert len(rows) == len(names) + 2 + len(numeric) + 2 + len(sequential) + 2
    assert any(row.startswith("| mean +0.25 sd: detected, delay |") for row in rows)


def test_part_4_measures_the_delta_the_worker_runs_and_it_sees_a_gross_error_change() -> None:
    from driftline.detectors.budget import DEFAULT_BUDGET, sequential_delta

    bench = _load()
    delta = bench.budget_delta()
    assert delta == sequential_delta(DEFAULT_BUDGET, 1_000_000) < bench.RIVER_DELTA
    g = np.random.default_rng(3)
    values = np.concatenate([(g.random(5000) < 0.1), (g.random(5000) < 0.5)]).astype(float)
    alarms = bench.adwin_alarms(values, delta)
    assert len(alarms) and 5000 <= alarms[0] < 5500
    # the regression stream the worker feeds is bounded, the one it fed before is not
    streams = {s.name: s for s in bench.SEQUENTIAL_STATIONARY}
    relative = streams["error, regression, relative"].before(g, 10_000)
    absolute = streams["error, regression, absolute (before)"].before(g, 10_000)
    assert relative.min() >= 0.0 and relative.max() <= 1.0 and absolute.max() > 1.0


def test_every_method_sees_a_gross_change_and_reports_its_position() -> None:
    bench = _load()
    stream = bench.CHANGES[0]  # mean shift
    g = np.random.default_rng(1)
    reference = stream.before(g, 5000)
    values = np.concatenate([stream.before(g, 4000), g.normal(3.0, 1.0, 4000)])
    alarms = bench.run_all(stream, reference, values, 1000)
    for method in bench.METHODS:
        after = [a for a in alarms[method] if a >= 4000]
        assert after, method
        # a gross shift is seen within the first window after it
        assert after[0] < 5000, (method, after[0])
    # windowed methods alarm at the last value of a window
    assert all((a + 1) % 1000 == 0 for a in alarms["driftline"] + alarms["Evidently-style"])


def test_feature_adwin_alarms_index_the_values_with_missing_ones_skipped() -> None:
    bench = _load()
    g = np.random.default_rng(2)
    values = np.concatenate([g.normal(0.0, 1.0, 3000), g.normal(4.0, 1.0, 3000)])
    values[::3] = np.nan  # the worker feeds present values only
    alarms = bench.feature_adwin_alarms(values, 0.002)
    assert alarms and 3000 <= alarms[0] < 3500
    assert all(not np.isnan(values[a]) for a in alarms)
