"""KSWIN against river 0.26's KSWIN (CPython's random + scipy's ks_2samp): identical drift
indices and identical p-values on every update; the Mersenne Twister sampling against
CPython's; the KS statistic and exact p-value against scipy; banks, state round trips,
parameter checks.

river's KSWIN costs ~0.4 ms a value (one scipy call each), so river runs only ~5 000 values
here, about two seconds.
"""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
import scipy.stats
from driftline.detectors import KSWIN, _ks
from driftline.detectors import kswin as kswin_module
from driftline.detectors.bank import DetectorBank
from driftline.detectors.base import detector_from_state
from river import drift
from scipy.stats import kstwo
from scipy.stats._stats_py import _attempt_exact_2kssamp


def stream(kind: str, seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    if kind == "abrupt":
        return rng.normal(0.0, 1.0, n) + (t >= n // 2) * 1.0
    if kind == "integers":  # many ties
        return rng.integers(0, 4, n).astype(np.float64) + (t > n // 2)
    if kind == "binary":
        return (rng.random(n) < np.where(t < n // 2, 0.2, 0.5)).astype(np.float64)
    if kind == "cauchy":
        return np.clip(rng.standard_cauchy(n), -20.0, 20.0) + (t > n // 2) * 1.5
    raise ValueError(kind)


def river_run(xs: np.ndarray, **params) -> tuple[list[int], list[float]]:
    detector = drift.KSWIN(**params)
    found, p_values = [], []
    for i, x in enumerate(xs.tolist()):
        detector.update(x)
        if detector.drift_detected:
            found.append(i)
        p_values.append(float(detector.p_value))
    return found, p_values


RIVER_CASES = [
    # defaults but the seed; pool sampling (70 of 100)
    ("abrupt", 1, 1500, dict(seed=1)),
    # ties everywhere
    ("integers", 2, 1000, dict(seed=7, alpha=0.01)),
    ("binary", 3, 900, dict(seed=3, window_size=60, stat_size=20, alpha=0.05)),
    # a population of 370 > 277: CPython's set-based sampling
    ("cauchy", 4, 1000, dict(seed=11, window_size=400, stat_size=30)),
    # more than 64 values per sample: sorted by Numba's sort, not by rank
    ("abrupt", 6, 600, dict(seed=2, window_size=150, stat_size=70, alpha=0.01)),
    # a window given up front, a tiny statistic window, frequent drifts
    (
        "abrupt",
        5,
        700,
        dict(seed=5, window_size=50, stat_size=7, alpha=0.05, window=list(range(30))),
    ),
]


@pytest.mark.parametrize(("kind", "seed", "n", "params"), RIVER_CASES)
def test_same_detections_and_p_values_as_river(kind: str, seed: int, n: int, params: dict) -> None:
    xs = stream(kind, seed, n)
    expected, p_values = river_run(xs, **params)
    assert expected, "no drift: the comparison would be vacuous"

    one_by_one = KSWIN(**params)
    found, mine = [], []
    for i, x in enumerate(xs.tolist()):
        one_by_one.update(x)
        if one_by_one.drift_detected:
            found.append(i)
        mine.append(one_by_one.p_value)
    assert found == expected
    assert mine == p_values  # exactly: the same table of scipy's exact p-values
    assert KSWIN(**params).update_many(xs).drift.tolist() == expected


def test_docstring_example_indices() -> None:
    rng = random.Random(12345)
    data = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    assert KSWIN(alpha=0.0001, seed=42).update_many(data).drift.tolist() == [1016]


# -- the generator: CPython's Random.sample, bit for bit ----------------------------------

SAMPLE_CASES = [
    (pop, k)
    for pop, k in [
        (70, 30),
        (1, 1),
        (2, 1),
        (5, 5),
        (10, 3),
        (100, 50),
        (277, 30),  # largest population sampled from a pool for k=30
        (278, 30),  # smallest sampled with a set
        (1000, 30),
        (2**20 + 3, 7),
        (20000, 10000),
    ]
]


@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 - 1, 2**32, 2**70 + 5, -7])
def test_sampling_matches_cpython_random_sample(seed: int) -> None:
    for population, k in SAMPLE_CASES:
        times = 30 if population < 5000 else 3
        rng = random.Random(seed)
        expected = [rng.sample(range(population), k) for _ in range(times)]
        assert kswin_module._draw(seed, population, k, times).tolist() == expected, (
            population,
            k,
        )


def test_sampling_algorithm_choice_is_cpythons() -> None:
    # CPython uses a pool when population <= 21 + 4 ** ceil(log(3k, 4)) (k > 5), else a set
    assert kswin_module._use_pool(70, 30) and kswin_module._use_pool(277, 30)
    assert not kswin_module._use_pool(278, 30)
    assert kswin_module._use_pool(21, 5) and not kswin_module._use_pool(22, 5)


# -- the KS test: scipy's statistic and exact p-value -------------------------------------


def scipy_pvalue_at(n1: int, n2: int, h: int) -> float:
    """What ks_2samp(method="auto") returns for distance h / lcm(n1, n2)."""
    g = math.gcd(n1, n2)
    d = h / ((n1 // g) * n2)
    ok, d, p = _attempt_exact_2kssamp(n1, n2, g, d, "two-sided")
    if not ok:
        big, small = sorted([float(n1), float(n2)], reverse=True)
        p = kstwo.sf(d, np.round(big * small / (big + small)))
    return float(np.clip(p, 0.0, 1.0))


@pytest.mark.parametrize("n", [1, 2, 5, 7, 15, 30, 60, 69, 100, 135, 300])
def test_pvalue_table_is_scipys_for_every_distance(n: int) -> None:
    # includes the distances where scipy's exact value rounds past 1 and it falls back to
    # kstwo (n = 5, 7, 15, 30, 60, 69, 135 have such distances)
    table = _ks.pvalue_table(n)
    expected = [1.0] + [scipy_pvalue_at(n, n, h) for h in range(1, n + 1)]
    assert table.tolist() == expected


def test_pvalue_table_fallback_is_exercised() -> None:
    fallbacks = [
        (n, h)
        for n in (7, 15, 60, 69, 135)
        for h in range(1, 4)
        if not 0.0 <= _ks.prob_outside_square(n, h) <= 1.0
    ]
    assert (7, 1) in fallbacks and (60, 2) in fallbacks
    assert _ks.pvalue_table(7)[1] == pytest.approx(0.9999609537692629, abs=1e-15)


def sample_pairs():
    rng = np.random.default_rng(0)
    for i in range(150):
        n1 = int(rng.integers(1, 60))
        n2 = n1 if i % 2 else int(rng.integers(1, 60))
        if i % 3 == 0:  # ties
            yield rng.integers(0, 5, n1).astype(float), rng.integers(0, 5, n2).astype(float)
        else:
            yield rng.normal(0, 1, n1), rng.normal(rng.uniform(0, 1), 1, n2)
    for n in (5, 7, 15, 30, 72):  # distance 1/n: scipy's fallback to kstwo for these
        yield np.arange(n, dtype=float), np.arange(n) + 0.5
    yield np.array([-0.0, 0.0, 1.0]), np.array([0.0, -0.0, 2.0])


@pytest.mark.filterwarnings("ignore:ks_2samp. Exact calculation unsuccessful:RuntimeWarning")
def test_ks_2samp_matches_scipy() -> None:
    for a, b in sample_pairs():
        expected = scipy.stats.ks_2samp(a, b)
        statistic, p_value = _ks.ks_2samp_sorted(np.sort(a), np.sort(b))
        assert statistic == float(expected.statistic)
        assert p_value == float(expected.pvalue)


def test_ks_2samp_takes_scipys_fallback_without_its_warning() -> None:
    # distance 1/7 between 7 and 7 values: scipy's exact value rounds past 1, so it warns
    # and answers with kstwo; the answer is the same here, the warning is not
    a, b = np.arange(7.0), np.arange(7.0) + 0.5
    with pytest.warns(RuntimeWarning, match="Exact calculation unsuccessful"):
        expected = scipy.stats.ks_2samp(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _ks.ks_2samp_sorted(a, b) == (expected.statistic, expected.pvalue)


def test_pvalue_table_refuses_sizes_without_an_exact_p_value() -> None:
    for n in (0, _ks.MAX_EXACT_N + 1):
        with pytest.raises(ValueError, match="sample size"):
            _ks.pvalue_table(n)


# -- detector behaviour -------------------------------------------------------------------


def test_statistic_and_p_value_are_those_of_the_drawn_samples() -> None:
    # Re-draw the kernel's reference sample with CPython's generator and run scipy on it.
    xs = stream("abrupt", 9, 400)
    detector = KSWIN(seed=123, alpha=0.0)  # alpha 0: never drifts, so the window only slides
    rng = random.Random(123)
    window: list[float] = []
    for x in xs.tolist():
        detector.update(x)
        window = (window + [x])[-100:]
        if len(window) == 100:
            reference = [window[r] for r in rng.sample(range(70), 30)]
            expected = scipy.stats.ks_2samp(reference, window[70:], method="auto")
            assert detector.statistic == float(expected.statistic)
            assert detector.p_value == float(expected.pvalue)
            np.testing.assert_array_equal(detector.sliding_window, window)


def test_default_seed_is_reproducible() -> None:
    xs = stream("abrupt", 10, 2000)
    first = KSWIN().update_many(xs).drift.tolist()
    assert first and KSWIN(seed=None).update_many(xs).drift.tolist() == first
    assert KSWIN(seed=kswin_module.DEFAULT_SEED).update_many(xs).drift.tolist() == first
    assert KSWIN().seed is None


def test_reset_after_drift_reseeds_like_river() -> None:
    # river resets the window and reseeds random.Random(seed) at the update after a drift
    xs = stream("abrupt", 11, 1500)
    detector = KSWIN(seed=3)
    first = int(detector.update_many(xs).drift[0])
    detector = KSWIN(seed=3)
    detector.update_many(xs[: first + 1])
    assert detector.drift_detected and detector.sliding_window.shape == (30,)
    detector.update(0.5)
    assert detector.n == 1 and detector.p_value == 0.0
    np.testing.assert_array_equal(detector.sliding_window, [0.5])
    # ... so what follows is what a fresh detector does with the rest of the stream
    rest = xs[first + 1 :]
    fresh = KSWIN(seed=3).update_many(rest).drift
    again = KSWIN(seed=3)
    again.update_many(xs[: first + 1])
    assert again.update_many(rest).drift.tolist() == fresh.tolist()


def test_bank_of_streams_equals_standalone_detectors() -> None:
    kinds = ["abrupt", "integers", "binary", "cauchy"]
    streams = [stream(kind, 20 + i, 1500) for i, kind in enumerate(kinds)]
    rng = np.random.default_rng(4)
    ids = rng.permutation(np.repeat(np.arange(len(streams)), 1500))
    xs = np.empty(ids.shape[0])
    for sid, values in enumerate(streams):
        xs[ids == sid] = values
    prototype = KSWIN(alpha=0.01, window_size=80, stat_size=25, seed=99)
    bank = DetectorBank(prototype, n_streams=len(streams))
    cut = int(rng.integers(1, ids.shape[0]))
    first = bank.update_many(ids[:cut], xs[:cut])
    second = bank.update_many(ids[cut:], xs[cut:])
    positions = np.concatenate([first.drift, cut + second.drift])
    hit = np.concatenate([first.drift_streams, second.drift_streams])
    total = 0
    for sid, values in enumerate(streams):
        alone = prototype.clone()
        expected = alone.update_many(values).drift
        own_index = np.cumsum(ids == sid) - 1
        assert own_index[positions[hit == sid]].tolist() == expected.tolist()
        np.testing.assert_array_equal(bank.detector(sid)._state, alone._state)
        total += expected.size
    assert total > 0


@pytest.mark.parametrize("seed", range(5))
def test_split_anywhere_and_resume_from_state(seed: int) -> None:
    rng = np.random.default_rng(seed)
    xs = stream(["abrupt", "integers", "binary", "cauchy"][seed % 4], 30 + seed, 2500)
    params = dict(seed=seed, alpha=0.01, window=[0.0, 1.0] * 10 if seed % 2 else None)
    whole = KSWIN(**params)
    expected = whole.update_many(xs).drift.tolist()
    assert expected
    # split before the window fills, right at and after a drift, and at random
    splits = [5, expected[0], expected[0] + 1, *rng.integers(0, xs.shape[0], 3).tolist()]
    for split in splits:
        first = KSWIN(**params)
        head = first.update_many(xs[:split]).drift.tolist()
        resumed = detector_from_state(first.to_state())
        assert isinstance(resumed, KSWIN) and resumed.params() == first.params()
        assert resumed.drift_detected == first.drift_detected
        tail = (resumed.update_many(xs[split:]).drift + split).tolist()
        assert head + tail == expected
        np.testing.assert_array_equal(resumed._state, whole._state)


@pytest.mark.parametrize(
    "params",
    [
        dict(alpha=-0.1),
        dict(alpha=1.5),
        dict(alpha="0.1"),
        dict(window_size=59, stat_size=30),
        dict(stat_size=0),
        dict(stat_size=10001, window_size=30000),
        dict(window_size=2.5),
        dict(seed=1.5),
        dict(seed=True),
        dict(window=[0.0, float("nan")]),
    ],
)
def test_invalid_parameters_raise(params: dict) -> None:
    with pytest.raises(ValueError):
        KSWIN(**params)


def test_non_finite_values_are_refused() -> None:
    detector = KSWIN()
    with pytest.raises(ValueError):
        detector.update_many([1.0, float("-inf")])
    assert detector.n == 0


def test_window_param_fills_the_window_without_counting() -> None:
    detector = KSWIN(window_size=10, stat_size=3, window=range(15))
    np.testing.assert_array_equal(detector.sliding_window, np.arange(5.0, 15.0))
    assert detector.n == 0 and detector.window == [float(v) for v in range(15)]
    assert eval(repr(detector), {"KSWIN": KSWIN}).params() == detector.params()
