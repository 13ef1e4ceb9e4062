"""ProfileMonitor: each kind of change is found, unchanged data is not, and the decisions do
not depend on batching or on a save/restore in the middle."""

from __future__ import annotations

import numpy as np
import pytest
from driftline.detectors.budget import SEQUENTIAL_SHARE, FalseAlarmBudget
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
    # the windows spend what the sequential detectors leave of the model's budget
    windows = 10 * (1 - SEQUENTIAL_SHARE)
    assert loose.alpha == pytest.approx(windows / (1 * loose.config.windows_per_day() * 20))


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


def test_new_settings_apply_from_the_next_window_and_move_alpha_with_the_budget() -> None:
    config = MonitorConfig(window_size=500, auto_reference_events=500)
    monitor = ProfileMonitor("m", config=config)
    g = np.random.default_rng(8)
    first = monitor.update(_batch(_columns(g, 1200)))  # reference, one window, 200 open
    assert [(r.first_seq, r.n_events) for r in first] == [(500, 500)]
    assert monitor.set_config(config) is False  # the config in use: nothing dropped
    smaller = config.with_settings(window_size=300, days=90)
    assert monitor.set_config(smaller) is True  # the 200 open events are dropped
    after = monitor.update(_batch(_columns(g, 900)))
    assert [(r.window_index, r.first_seq, r.n_events) for r in after] == [
        (1, 1200, 300), (2, 1500, 300), (3, 1800, 300)
    ]
    # alpha = budget / (days x windows a day x tests): 3 times the days, 5/3 the windows
    ratio = (90 / 30) * smaller.windows_per_day() / config.windows_per_day()
    assert after[0].alpha == pytest.approx(first[0].alpha / ratio, rel=1e-12)
    # the settings in use are part of the monitor's state: a restored one continues with them
    restored = ProfileMonitor.from_bytes(monitor.to_bytes())
    assert restored.config == smaller and restored.set_config(smaller) is False


def test_new_settings_while_collecting_the_first_events_keep_them() -> None:
    monitor = ProfileMonitor("m", config=MonitorConfig(window_size=500, auto_reference_events=1000))
    g = np.random.default_rng(9)
    assert monitor.update(_batch(_columns(g, 600))) == []
    monitor.set_config(monitor.config.with_settings(auto_reference_events=400))
    # it has more than enough: its reference is all 600 events, the windows start after them
    assert monitor.profile is not None and monitor.profile.n_events == 600
    (report,) = monitor.update(_batch(_columns(g, 500)))
    assert (report.first_seq, report.n_events) == (600, 500)


def test_settings_by_name_are_checked_by_the_monitor() -> None:
    config = MonitorConfig().with_settings(
        false_alarms=2, days=7, events_per_day=1e5, window_size=1000, max_window_seconds=60,
        auto_reference_events=2000,
    )  # fmt: skip
    assert config.settings() == {
        "false_alarms": 2.0, "days": 7.0, "events_per_day": 1e5, "window_size": 1000,
        "max_window_seconds": 60.0, "auto_reference_events": 2000,
    }  # fmt: skip
    assert (config.budget, config.max_window_ms) == (FalseAlarmBudget(2.0, 7.0), 60_000)
    assert MonitorConfig().with_settings(**config.settings()) == config
    for bad, message in [
        ({"windows": 3}, "unknown monitoring settings ['windows']"),
        ({"days": 0}, "days must be a positive finite number"),
        ({"window_size": 10.5}, "window_size must be a whole number"),
        ({"events_per_day": float("inf")}, "events_per_day must be a positive finite number"),
        ({"max_window_seconds": 1e-4}, "max_window_seconds must be at least 0.001"),
        ({"auto_reference_events": 10}, "must be at least min_samples"),
        ({"false_alarms": True}, "false_alarms must be a number"),
    ]:
        with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
            MonitorConfig().with_settings(**bad)


def test_segment_windows_spread_the_model_budget_exactly() -> None:
    """All-traffic windows plus segment windows of 2 keys (3 + 2 values): every event is in
    3 windows, every window may also close on time. With the same tests in every window, the
    expected false alarms of all of them together are the windows' budget, exactly."""
    plain = _monitor(max_window_ms=3_600_000)
    config = plain.config
    monitors = [ProfileMonitor("m", plain.profile, config, segment=s) for s in ("", *"abcde")]
    for monitor in monitors:
        monitor.set_segment_load(2, 5)
    tests = monitors[0].tests_per_window()
    alpha = monitors[0].alpha
    assert {m.alpha for m in monitors} == {alpha}
    # any split of one day's traffic over a key's values: each value's count-closed windows
    # plus 24 time-closed ones per monitor
    g = np.random.default_rng(2)
    shares = [g.dirichlet(np.ones(3)), g.dirichlet(np.ones(2))]
    per_day = config.events_per_day / WINDOW + 24 + sum(
        s * config.events_per_day / WINDOW + 24 for split in shares for s in split
    )
    assert per_day == pytest.approx(config.windows_per_day(2, 5), rel=1e-12)
    spent = per_day * tests * alpha * config.budget.days
    assert spent == pytest.approx(config.budget.false_alarms * (1 - SEQUENTIAL_SHARE), rel=1e-12)
    # without segments the same model keeps the alpha it had before segments existed
    assert plain.alpha == pytest.approx(alpha * config.windows_per_day(2, 5) / config.windows_per_day(), rel=1e-12)
    monitors[0].set_segment_load(0, 0)
    assert monitors[0].alpha == plain.alpha
    with pytest.raises(ValueError, match="segment_keys"):
        config.windows_per_day(3, 2)  # a key without a value
    with pytest.raises(ValueError, match="max_segments"):
        MonitorConfig(max_segments=-1)


def test_a_segment_monitor_labels_its_reports_and_keeps_its_label_across_a_restore() -> None:
    g = np.random.default_rng(12)
    columns = _columns(g, 6000)
    region = np.where(g.random(6000) < 0.5, "eu", "us")
    stream = _batch(columns)
    rows = np.flatnonzero(region == "eu")
    # take() keeps event order and every column, like building the batch from those events
    direct = _batch({k: v[rows] for k, v in columns.items()})
    direct.event_time = stream.event_time[rows]
    config = MonitorConfig(window_size=WINDOW, auto_reference_events=1000)
    whole = ProfileMonitor("m", config=config, segment="region=eu").update(stream.take(rows))
    assert _fingerprint(whole) == _fingerprint(ProfileMonitor("m", config=config).update(direct))
    assert whole and {r.segment for r in whole} == {"region=eu"}
    monitor = ProfileMonitor("m", config=config, segment="region=eu")
    monitor.set_segment_load(1, 2)
    half = rows.size // 2
    first = monitor.update(stream.take(rows[:half]))
    restored = ProfileMonitor.from_bytes(monitor.to_bytes())
    assert (restored.segment, restored.segment_load) == ("region=eu", (1, 2))
    rest = restored.update(stream.take(rows[half:]))
    assert {r.segment for r in first + rest} == {"region=eu"}
    assert [r.first_seq for r in first + rest] == [r.first_seq for r in whole]
    # a monitor checkpointed before segments existed: all traffic, no segment windows
    del restored.segment, restored.segment_load
    old = ProfileMonitor.from_bytes(restored.to_bytes())
    old.set_reference(old.profile)
    assert old.alpha == ProfileMonitor("m", old.profile, config).alpha
    assert old.update(stream.take(rows[:WINDOW]))[0].segment == ""


@settings(max_examples=10, deadline=None)
@given(cuts=st.lists(st.integers(0, 5000), max_size=6), restore_at=st.integers(0, 6))
def test_a_segments_windows_do_not_depend_on_how_the_model_batch_is_cut(cuts: list[int], restore_at: int) -> None:
    """The worker cuts the model's batches anywhere and feeds each segment its rows of each
    piece (``take``), with a checkpoint round trip anywhere: the segment's reports are those
    of its whole event sequence."""
    stream = _stream(7)
    in_segment = np.random.default_rng(3).random(len(stream)) < 0.6
    whole = _monitor().update(stream.take(np.flatnonzero(in_segment)))
    edges = [0, *sorted(cuts), len(stream)]
    monitor = _monitor()
    pieces: list[WindowReport] = []
    for i, (start, stop) in enumerate(zip(edges, edges[1:], strict=False)):
        if i == restore_at:
            monitor = ProfileMonitor.from_bytes(monitor.to_bytes())
        part = stream.slice(start, stop)
        pieces += monitor.update(part.take(np.flatnonzero(in_segment[start:stop])))
    assert _fingerprint(pieces) == _fingerprint(whole)
    assert len(whole) == int(in_segment.sum()) // WINDOW == 2 and "x" in whole[-1].drifted_features
