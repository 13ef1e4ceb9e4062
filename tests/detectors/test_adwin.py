"""ADWIN against river 0.26's (Rust) ADWIN: identical drift indices and bit-identical window
statistics, plus banks, state round trips and parameter checks.

river's ADWIN costs about 0.3 us a value here, so the parity sweep below (~250k river
updates) takes well under a second of river time.
"""

from __future__ import annotations

import numpy as np
import pytest
from driftline.detectors import ADWIN
from driftline.detectors import adwin as adwin_module
from driftline.detectors.bank import DetectorBank
from driftline.detectors.base import detector_from_state
from river import drift

KINDS = ("abrupt", "gradual", "cauchy", "student_t", "integers", "binary", "constant")


def stream(kind: str, seed: int, n: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    if kind == "abrupt":
        xs = rng.normal(0.0, 1.0, n)
        for cut in sorted(rng.choice(np.arange(200, n - 200), 3, replace=False)):
            xs[cut:] += rng.uniform(-2.0, 2.0)
    elif kind == "gradual":
        xs = rng.normal(0.0, 1.0, n) + np.clip((t - n / 3) / (n / 3), 0.0, 1.0) * 2.0
    elif kind == "cauchy":  # heavy tails, clipped
        xs = np.clip(rng.standard_cauchy(n), -50.0, 50.0) + (t > n // 2) * 3.0
    elif kind == "student_t":
        xs = rng.standard_t(2.0, n) + (t > n // 3) * 1.5
    elif kind == "integers":  # ties, a constant stretch, a shift
        xs = rng.integers(0, 5, n).astype(np.float64) + (t > n // 2) * 2.0
        xs[n // 4 : n // 4 + 600] = 3.0
    elif kind == "binary":
        xs = (rng.random(n) < np.where(t < n // 2, 0.2, 0.6)).astype(np.float64)
    else:  # constant, then a step, then constant again
        xs = np.where(t < n // 2, 1.0, 4.0) + (t > 3 * n // 4) * -2.5
    return xs


def river_run(xs: np.ndarray, **params) -> tuple[list[int], tuple[float, float, float]]:
    detector = drift.ADWIN(**params)
    found = []
    for i, x in enumerate(xs.tolist()):
        detector.update(x)
        if detector.drift_detected:
            found.append(i)
    return found, (detector.width, detector.total, detector.variance)


CASES = (
    [
        (kind, seed, dict(delta=delta, clock=32))
        for kind in KINDS
        for seed, delta in ((0, 0.002), (1, 0.01), (2, 0.1), (3, 0.002))
    ]
    + [
        (kind, 10 + i, dict(delta=delta, clock=1, max_buckets=max_buckets))
        for i, kind in enumerate(KINDS)
        for delta, max_buckets in ((0.002, 5), (0.1, 3), (0.01, 2))
    ]
    + [
        ("abrupt", 40, dict(min_window_length=1, grace_period=0, clock=4)),
        ("gradual", 41, dict(min_window_length=20, grace_period=100, clock=7)),
        ("binary", 42, dict(delta=0.5, clock=3, max_buckets=8)),
    ]
)


@pytest.mark.parametrize(("kind", "seed", "params"), CASES)
def test_same_detections_and_window_as_river(kind: str, seed: int, params: dict) -> None:
    xs = stream(kind, seed, n=3000 if params["clock"] == 1 else 4000)
    expected, (width, total, variance) = river_run(xs, **params)
    detector = ADWIN(**params)
    assert detector.update_many(xs).drift.tolist() == expected
    # bit-identical running sums, not merely close ones
    assert (detector.width, detector.total, detector.variance) == (width, total, variance)


def test_parity_sweep_is_not_vacuous() -> None:
    # most parity cases above must actually see drifts
    drifting = sum(bool(river_run(stream(k, s, 4000), **p)[0]) for k, s, p in CASES[:28])
    assert drifting >= 20


def test_every_property_matches_river_after_every_update() -> None:
    xs = stream("abrupt", 7, n=1500)
    ours, theirs = ADWIN(clock=1), drift.ADWIN(clock=1)
    seen = 0
    for x in xs.tolist():
        ours.update(x)
        theirs.update(x)
        assert ours.drift_detected == theirs.drift_detected
        assert (ours.width, ours.total, ours.variance, ours.estimation) == (
            theirs.width,
            theirs.total,
            theirs.variance,
            theirs.estimation,
        )
        seen += ours.drift_detected
    assert seen > 0


def test_an_upward_shift_reports_the_old_level_before_and_the_new_after() -> None:
    rng = np.random.default_rng(3)
    xs = np.concatenate([rng.normal(0.0, 0.1, 1000), rng.normal(1.0, 0.1, 1000)])
    found = ADWIN().update_many(xs)
    first = int(found.drift[0])
    assert first >= 1000
    before, after = found.drift_before_mean[0], found.drift_after_mean[0]
    assert abs(before) < 0.05 and before + 0.3 < after < 1.0
    # the kept window is cut at bucket boundaries, so it still holds old values: here the 24
    # new ones and 40 old, a mean of about 0.4
    np.testing.assert_allclose(after, (xs[first - 63 : first + 1]).mean(), rtol=1e-12)
    # the window held every value seen so far: the two sides split it
    assert found.drift_before_n[0] + found.drift_after_n[0] == first + 1
    assert found.drift_after_n[0] < found.drift_before_n[0]


def test_sides_do_not_depend_on_where_the_batch_ends() -> None:
    # issue 8: an error stream drifts 5 values before a batch ends. ADWIN restarts its window
    # after a drift, so the estimate at the end of that batch is the mean of 5 values; the
    # sides reported at the drift are those of the uninterrupted run.
    rng = np.random.default_rng(8)
    xs = (rng.random(4000) < np.where(np.arange(4000) < 2000, 0.1, 0.6)).astype(np.float64)
    whole = ADWIN().update_many(xs)
    drift_at = int(whole.drift[0])
    detector = ADWIN()
    head = detector.update_many(xs[: drift_at + 6])
    assert head.drift.tolist() == [drift_at] and detector.width == 5
    assert head.drift_before_mean[0] < head.drift_after_mean[0]
    assert (detector.last_drift_before_mean, detector.last_drift_after_mean) == (
        whole.drift_before_mean[0],
        whole.drift_after_mean[0],
    )
    tail = detector.update_many(xs[drift_at + 6 :])
    for field in ("drift_before_mean", "drift_after_mean", "drift_before_n", "drift_after_n"):
        joined = np.concatenate([getattr(head, field), getattr(tail, field)])
        np.testing.assert_array_equal(joined, getattr(whole, field))


@pytest.mark.parametrize(("kind", "seed", "params"), CASES[::3])
def test_sides_of_each_drift_are_rivers_cut(kind: str, seed: int, params: dict) -> None:
    # river's window right after the drift is what was kept (bit for bit); what it held
    # before the value, plus the value, less that, is what was dropped.
    xs = stream(kind, seed, n=3000 if params["clock"] == 1 else 4000)
    detector = drift.ADWIN(**params)
    kept_mean, kept_n, dropped_mean, dropped_n = [], [], [], []
    for x in xs.tolist():
        width, total = (0, 0.0) if detector.drift_detected else (detector.width, detector.total)
        detector.update(x)
        if detector.drift_detected:
            kept_mean.append(detector.total / detector.width)
            kept_n.append(detector.width)
            dropped_n.append(width + 1 - detector.width)
            dropped_mean.append((total + x - detector.total) / dropped_n[-1])
    found = ADWIN(**params).update_many(xs)
    assert found.drift_after_mean.tolist() == kept_mean
    assert found.drift_after_n.tolist() == kept_n
    assert found.drift_before_n.tolist() == dropped_n
    # ours adds up the dropped buckets; river's running total subtracts them: same to rounding
    np.testing.assert_allclose(found.drift_before_mean, dropped_mean, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("kind", "seed", "panics"), [("abrupt", 3, False), ("student_t", 1, True)])
def test_max_buckets_1_matches_river_wherever_river_runs(
    kind: str, seed: int, panics: bool
) -> None:
    # With max_buckets=1 a row can be left empty; river then deletes from an empty row and
    # panics (PanicException: "slice index starts at 1 but ends at 0"). Up to that point the
    # detections agree; past it, ours carries on.
    xs = stream(kind, seed, n=3000)
    river_detector = drift.ADWIN(max_buckets=1, clock=1)
    expected, stopped = [], len(xs)
    for i, x in enumerate(xs.tolist()):
        try:
            river_detector.update(x)
        except BaseException:  # pyo3's PanicException derives from BaseException
            stopped = i
            break
        if river_detector.drift_detected:
            expected.append(i)
    found = ADWIN(max_buckets=1, clock=1).update_many(xs).drift
    assert found[found < stopped].tolist() == expected
    assert expected and (stopped < len(xs)) == panics


def test_docstring_example_indices() -> None:
    import random

    rng = random.Random(12345)
    data = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    assert ADWIN().update_many(data).drift.tolist() == [1023]


def test_window_restarts_after_a_drift_like_river() -> None:
    detector = ADWIN(clock=1)
    xs = np.concatenate([np.zeros(300), np.full(300, 5.0)])
    first = int(detector.update_many(xs).drift[0])
    detector = ADWIN(clock=1)
    detector.update_many(xs[: first + 1])
    assert detector.drift_detected and detector.width > 0
    detector.update(5.0)
    assert detector.width == 1 and detector.total == 5.0 and not detector.drift_detected


def test_tick_wraps_like_rivers_i32_counter() -> None:
    # river keeps the tick in an i32: after 2**31 - 1 it wraps to -2**31, and the check runs
    # when tick % clock == 0 (a multiple of 3 is never crossed at the wrap the same way)
    detector = ADWIN(clock=3, grace_period=0)
    state = detector._state
    state[adwin_module._TICK] = 2**31 - 3
    state[adwin_module._PHASE] = (2**31 - 3) % 3
    detector.update_many(np.zeros(10))
    assert state[adwin_module._TICK] == -(2**31) + 7
    assert state[adwin_module._PHASE] == (-(2**31) + 7) % 3


def test_bank_of_streams_equals_standalone_detectors() -> None:
    rng = np.random.default_rng(5)
    streams = [stream(kind, 100 + i, n=2500) for i, kind in enumerate(KINDS)]
    ids = rng.permutation(np.repeat(np.arange(len(streams)), 2500))
    xs = np.empty(ids.shape[0])
    for sid, values in enumerate(streams):
        xs[ids == sid] = values
    bank = DetectorBank(ADWIN(clock=8, delta=0.01), n_streams=len(streams))
    cut = int(rng.integers(1, ids.shape[0]))
    first = bank.update_many(ids[:cut], xs[:cut])
    second = bank.update_many(ids[cut:], xs[cut:])
    positions = np.concatenate([first.drift, cut + second.drift])
    streams_hit = np.concatenate([first.drift_streams, second.drift_streams])
    total = 0
    for sid, values in enumerate(streams):
        alone = ADWIN(clock=8, delta=0.01)
        expected = alone.update_many(values).drift
        mine = positions[streams_hit == sid]
        # bank positions are in the interleaved batch; map them to the stream's own index
        own_index = np.cumsum(ids == sid) - 1
        assert own_index[mine].tolist() == expected.tolist()
        np.testing.assert_array_equal(bank.detector(sid)._state, alone._state)
        total += expected.size
    assert total > 0


@pytest.mark.parametrize("seed", range(6))
def test_split_anywhere_and_resume_from_state(seed: int) -> None:
    rng = np.random.default_rng(seed)
    xs = stream(KINDS[seed % len(KINDS)], 200 + seed, n=3000)
    params = dict(clock=int(rng.choice([1, 5, 32])), delta=float(rng.choice([0.002, 0.05])))
    whole = ADWIN(**params)
    expected = whole.update_many(xs).drift.tolist()
    assert expected or seed % len(KINDS) == 6
    for split in rng.integers(0, xs.shape[0], 3):
        first = ADWIN(**params)
        head = first.update_many(xs[:split]).drift.tolist()
        resumed = detector_from_state(first.to_state())
        assert isinstance(resumed, ADWIN) and resumed.drift_detected == first.drift_detected
        tail = (resumed.update_many(xs[split:]).drift + split).tolist()
        assert head + tail == expected
        np.testing.assert_array_equal(resumed._state, whole._state)


@pytest.mark.parametrize(
    "params",
    [
        dict(delta=0.0),
        dict(delta=1.0),
        dict(delta=-0.1),
        dict(delta="0.1"),
        dict(clock=0),
        dict(clock=2.5),
        dict(clock=True),
        dict(max_buckets=0),
        dict(max_buckets=1001),
        dict(min_window_length=0),
        dict(grace_period=-1),
    ],
)
def test_invalid_parameters_raise(params: dict) -> None:
    with pytest.raises(ValueError):
        ADWIN(**params)


def test_non_finite_values_are_refused() -> None:
    detector = ADWIN()
    with pytest.raises(ValueError):
        detector.update_many([1.0, float("nan")])
    with pytest.raises(ValueError):
        detector.update(float("inf"))
    assert detector.width == 0


def test_empty_window_properties() -> None:
    detector = ADWIN()
    assert (detector.width, detector.total, detector.variance, detector.estimation) == (
        0,
        0.0,
        0.0,
        0.0,
    )
    detector.update_many([1.0, 2.0, 3.0, 4.0, 5.0])
    assert detector.estimation == 3.0 and detector.variance == 10.0
    assert detector.variance_in_window == 2.0 and detector.n_buckets == 5
