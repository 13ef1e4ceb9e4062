"""ProfileMonitor: each kind of change is found, unchanged data is not, and the decisions do
not depend on batching or on a save/restore in the middle."""

from __future__ import annotations

import numpy as np
import pytest
from driftline.detectors.budget import FalseAlarmBudget
from driftline.detectors.monitor import (
    CodedLabels,
    FeatureBatch,
    MonitorConfig,
    ProfileMonitor,
    WindowReport,
)
from driftline.detectors.reference import build_profile
from hypothesis import given, settings
from hypothesis import strategies as st

CATS = np.array(["a", "b", "c", "d"])
SHARES = np.array([0.4, 0.3, 0.2, 0.1])
WINDOW = 1000


def _columns(g: np.random.Generator, n: int, **change: float) -> dict[str, np.ndarray]:
    x = g.normal(change.get("mean", 0.0), change.get("sd", 1.0), n)
    if change.get("shape"):
        x = g.exponential(1.0, n) - 1.0  # same mean and variance as N(0, 1), skewed
    y = 0.8 * x + 0.6 * g.normal(0, 1, n)
    if change.get("decorrelate"):
        y = g.normal(0, 1, n)  # same marginal, correlation with x gone
    heavy = g.lognormal(0, 1, n)
    shares = SHARES if not change.get("mix") else np.array([0.25, 0.25, 0.25, 0.25])
    plan = g.choice(CATS, n, p=shares).astype(object)
    plan[g.random(n) < change.get("missing", 0.0)] = None
    if change.get("unseen"):
        plan[g.random(n) < change["unseen"]] = "zzz"
    if change.get("constant"):
        heavy = np.full(n, 2.0)
    if change.get("high"):
        heavy = heavy + change["high"]
    return {"x": x, "y": y, "heavy": heavy, "plan": plan}


def _batch(columns: dict[str, np.ndarray], start_ms: int = 0) -> FeatureBatch:
    n = len(columns["x"])
    return FeatureBatch.from_columns(
        numeric={k: columns[k] for k in ("x", "y", "heavy")},
        categorical={"plan": columns["plan"]},
        event_time=start_ms + np.arange(n) * 10,
    )


def _monitor(seed: int = 0, **config) -> ProfileMonitor:  # noqa: ANN003
    g = np.random.default_rng(seed)
    profile = build_profile(_columns(g, 20_000), model_id="m", version="train-1")
    return ProfileMonitor("m", profile, MonitorConfig(window_size=WINDOW, **config))


def _run(monitor: ProfileMonitor, g: np.random.Generator, windows: int, **change) -> list[WindowReport]:  # noqa: ANN003
    return monitor.update(_batch(_columns(g, windows * WINDOW, **change)))


def test_unchanged_data_raises_nothing_over_a_long_run() -> None:
    monitor = _monitor()
    reports = _run(monitor, np.random.default_rng(1), 300)
    assert len(reports) == 300
    assert [r.window_index for r in reports if r.drift] == []
    # every budgeted test ran (nothing silently insufficient)
    kinds = {(row.feature, row.result.test) for row in reports[0].rows}
    assert {("x", "ks"), ("plan", "chisquare"), ("heavy", "out_of_range"), ("*", "pca_reconstruction")} <= kinds
    assert all(not row.result.insufficient_data for row in reports[0].rows)
    assert monitor.tests_per_window() == 3 * 5 + 4 + 1


@pytest.mark.parametrize(
    ("change", "feature", "signal"),
    [
        ({"mean": 0.3}, "x", "drift"),
        ({"sd": 1.4}, "x", "drift"),
        ({"shape": 1.0}, "x", "drift"),
        ({"mix": 1.0}, "plan", "drift"),
        ({"missing": 0.6}, "plan", "missing_rate"),
        ({"unseen": 0.05}, "plan", "unseen_categories"),
        ({"constant": 1.0}, "heavy", "constant"),
        ({"high": 50.0}, "heavy", "out_of_range"),
        ({"decorrelate": 1.0}, "*", "multivariate"),
    ],
)
def test_each_kind_of_change_is_found_in_the_first_window_after_it(change, feature, signal) -> None:  # noqa: ANN001
    monitor = _monitor()
    g = np.random.default_rng(2)
    before = _run(monitor, g, 5)
    assert not any(r.drift for r in before)
    (after,) = _run(monitor, g, 1, **change)
    if signal == "drift":
        # y is built from x, so it moves with x; the untouched columns stay quiet
        assert feature in after.drifted_features
        assert set(after.drifted_features) <= ({"x", "y"} if feature == "x" else {feature})
    elif signal == "multivariate":
        assert after.multivariate_drift and after.drifted_features == []
    else:
        assert (feature, signal) in after.quality_issues
    # the evidence is in the rows: the deciding p-value is below the report's alpha
    if signal not in ("drift", "multivariate"):
        (row,) = [r for r in after.rows if r.feature == feature and r.result.test == signal]
        assert row.result.p_value < after.alpha and row.result.statistic > 0


def test_wrong_types_and_new_features_are_reported() -> None:
    monitor = _monitor()
    g = np.random.default_rng(3)
    columns = _columns(g, WINDOW)
    batch = FeatureBatch.from_columns(
        numeric={"x": columns["x"], "y": columns["y"], "plan": np.ones(WINDOW), "extra": np.ones(WINDOW)},
        categorical={"heavy": np.array(["oops"] * WINDOW, dtype=object)},
        event_time=np.arange(WINDOW),
    )
    (report,) = monitor.update(batch)
    issues = set(report.quality_issues)
    assert {("plan", "wrong_type"), ("heavy", "wrong_type"), ("extra", "new_feature")} <= issues
    # a column that arrives as the wrong kind is not also counted as missing
    assert ("plan", "missing_rate") not in issues


def test_a_smaller_budget_means_a_smaller_alpha() -> None:
    loose = _monitor(budget=FalseAlarmBudget(false_alarms=10, days=1))
    strict = _monitor(budget=FalseAlarmBudget(false_alarms=1, days=365))
    assert strict.alpha < loose.alpha
    assert loose.alpha == pytest.approx(10 / (1 * loose.config.windows_per_day() * 20))


def _fingerprint(reports: list[WindowReport]) -> list[tuple]:
    return [
        (r.window_index, r.first_seq, r.last_seq, r.start_time_ms, r.end_time_ms, r.drift,
         tuple(r.drifted_features), tuple(r.quality_issues),
         tuple((row.feature, row.result) for row in r.rows))
        for r in reports
    ]


def _stream(seed: int) -> FeatureBatch:
    g = np.random.default_rng(seed)
    parts = [_columns(g, 2500), _columns(g, 2500, mean=0.5, missing=0.3)]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return _batch(merged)


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(0, 5000), max_size=8), restore_at=st.integers(0, 8))
def test_any_batching_and_a_restore_give_the_same_reports(cuts: list[int], restore_at: int) -> None:
    stream = _stream(7)
    whole = _monitor().update(stream)
    edges = [0, *sorted(cuts), len(stream)]
    monitor = _monitor()
    pieces: list[WindowReport] = []
    for i, (start, stop) in enumerate(zip(edges, edges[1:], strict=False)):
        if i == restore_at:
            monitor = ProfileMonitor.from_bytes(monitor.to_bytes())
        pieces += monitor.update(stream.slice(start, stop))
    assert _fingerprint(pieces) == _fingerprint(whole)
    assert len(whole) == 5 and "x" in whole[-1].drifted_features


def test_time_bound_closes_a_window_at_the_first_late_event() -> None:
    monitor = _monitor(max_window_ms=5_000)
    g = np.random.default_rng(4)
    reports = monitor.update(_batch(_columns(g, 1500)))  # 10 ms apart: 500 events per 5 s
    assert [(r.first_seq, r.last_seq) for r in reports] == [(0, 499), (500, 999)]
    assert all(r.end_time_ms - r.start_time_ms < 5_000 for r in reports)


@settings(max_examples=10, deadline=None)
@given(cuts=st.lists(st.integers(0, 9000), max_size=6))
def test_first_events_become_the_reference_whatever_the_batching(cuts: list[int]) -> None:
    g = np.random.default_rng(9)
    stream = _batch(_columns(g, 9000))
    config = MonitorConfig(window_size=WINDOW, auto_reference_events=5000)
    whole = ProfileMonitor("m", config=config).update(stream)
    edges = [0, *sorted(cuts), len(stream)]
    monitor = ProfileMonitor("m", config=config)
    pieces = [r for a, b in zip(edges, edges[1:], strict=False) for r in monitor.update(stream.slice(a, b))]
    assert _fingerprint(pieces) == _fingerprint(whole)
    assert [r.first_seq for r in whole] == [5000, 6000, 7000, 8000]
    assert {r.reference_source for r in whole} == {"first_events"}
    assert not any(r.drift for r in whole)


def test_a_new_reference_replaces_the_old_one_from_the_next_window() -> None:
    monitor = _monitor()
    g = np.random.default_rng(5)
    shifted = build_profile(_columns(g, 20_000, mean=0.5), model_id="m", version="train-2")
    assert "x" in _run(monitor, g, 1, mean=0.5)[0].drifted_features
    monitor.set_reference(shifted)
    (report,) = _run(monitor, g, 1, mean=0.5)
    assert report.drifted_features == [] and report.reference_version == "train-2"


def test_rebaseline_drops_the_open_window_and_keeps_counting() -> None:
    monitor = ProfileMonitor("m", config=MonitorConfig(window_size=WINDOW, auto_reference_events=2000))
    g = np.random.default_rng(7)
    first = monitor.update(_batch(_columns(g, 4500)))  # 2000 first events, 2 windows, 500 open
    assert [r.window_index for r in first] == [0, 1]
    monitor.rebaseline(version="2")  # the 500 open events are dropped with the old reference
    assert monitor.profile is None and monitor.warmup_start == 4500
    after = monitor.update(_batch(_columns(g, 4000, mean=1.0)))  # new inputs, new first events
    assert [(r.window_index, r.first_seq) for r in after] == [(2, 6500), (3, 7500)]
    assert {(r.reference_source, r.reference_version) for r in after} == {("first_events", "2")}
    assert not any(r.drift for r in after)
    restored = ProfileMonitor.from_bytes(monitor.to_bytes())
    restored.rebaseline(build_profile(_columns(g, 20_000), model_id="m", version="3"))
    (report,) = restored.update(_batch(_columns(g, WINDOW)))  # its reference: no warm-up
    assert (report.window_index, report.first_seq, report.reference_version) == (4, 8500, "3")


def test_coded_labels_count_like_label_objects() -> None:
    g = np.random.default_rng(6)
    columns = _columns(g, 3 * WINDOW, mix=1.0, missing=0.1)
    plain = _monitor().update(_batch(columns))
    plan = columns["plan"]
    labels = ("d", "c", "b", "a", "never")  # dictionary order differs from sorted order
    index = {label: i for i, label in enumerate(labels)}
    codes = np.array([-1 if v is None else index[v] for v in plan.tolist()], dtype=np.int64)
    coded_batch = _batch(columns)
    coded_batch.categorical["plan"] = CodedLabels(codes, labels)
    coded = _monitor().update(coded_batch)
    assert _fingerprint(coded) == _fingerprint(plain)
    assert np.array_equal(CodedLabels(codes, labels).to_objects(), plan)
