"""CUSUM and EWMAChart against plain Python renderings of Montgomery's formulas; banks, state
round trip, validation.

Neither has a river peer, so the references below are written from the textbook, value by
value, with the standard library only: a separate implementation, not a copy of the kernels
(regimes and restarts by explicit slicing, the EWMA limits from the closed form). The warm-up
estimate follows the documented estimator (Welford's recurrences) and is checked on its own
against ``statistics``.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from driftline.detectors import CUSUM, EWMAChart
from driftline.detectors.bank import DetectorBank
from driftline.detectors.base import detector_from_state

KINDS = ("abrupt", "gradual", "heavy_tails", "integers", "constant_stretches", "down_shift")


def make_stream(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """A stream with one or more changes of mean, shaped by ``kind``."""
    half = n // 2
    if kind == "abrupt":
        return np.concatenate([rng.normal(5, 2, half), rng.normal(rng.uniform(6, 9), 2, n - half)])
    if kind == "gradual":
        ramp = np.clip((np.arange(n) - half) / (n / 4), 0, 1) * rng.uniform(1, 3)
        return rng.normal(0, 1, n) + ramp
    if kind == "heavy_tails":
        shift = np.where(np.arange(n) >= half, rng.uniform(2, 6), 0.0)
        return rng.standard_t(2.5, n) + shift
    if kind == "integers":
        return np.concatenate([rng.poisson(4, half), rng.poisson(rng.integers(5, 9), n - half)])
    if kind == "constant_stretches":
        # A stuck sensor: long runs of one value, some long enough to fill a warm-up.
        levels = rng.choice([0.0, 1.0, 5.0, -3.0], size=5)
        runs = np.repeat(levels, n // 5 + 1)[:n]
        noisy = rng.random(n) < 0.02
        return np.where(noisy, runs + rng.normal(0, 1, n), runs)
    if kind == "down_shift":
        return np.concatenate([rng.normal(3, 1, half), rng.normal(1.5, 1, n - half)])
    raise AssertionError(kind)


def welford(sample: list[float]) -> tuple[float, float]:
    """Sample mean and standard deviation by Welford's recurrences, the documented estimator
    (so that exact ties on integer data resolve as in the kernel)."""
    mean = s = 0.0
    for n, x in enumerate(sample, start=1):
        old = mean
        mean += (x - old) / n
        s += (x - old) * (x - mean)
    return mean, math.sqrt(s / (len(sample) - 1))


def in_control(sample: list[float], target: float | None, sigma: float | None):
    mean, sd = welford(sample) if len(sample) > 1 else (sample[0] if sample else 0.0, 0.0)
    return (mean if target is None else target), (sd if sigma is None else sigma)


def regimes(xs: list[float], warm_start: int, target, sigma):
    """Yield (first monitored index, mu, sd) for each regime; the caller returns where the
    regime ended (its drift index) or None when the stream ran out."""
    start = 0
    estimate = target is None or sigma is None
    while start < len(xs):
        first = start + (warm_start if estimate else 0)
        if first > len(xs):
            return
        mu, sd = in_control(xs[start:first], target, sigma) if estimate else (target, sigma)
        ended = yield first, mu, sd
        if ended is None:
            return
        start = ended + 1


def reference_cusum(xs, k=0.5, h=5.0, warm_start=100, target=None, sigma=None) -> list[int]:
    """Montgomery's two-sided tabular CUSUM, restarting (and re-estimating) after a signal."""
    xs = xs.tolist()
    drifts: list[int] = []
    runs = regimes(xs, warm_start, target, sigma)
    try:
        first, mu, sd = next(runs)
        while True:
            big_k, big_h = k * sd, h * sd
            c_plus = c_minus = 0.0
            ended = None
            for i in range(first, len(xs)):
                c_plus = max(0.0, xs[i] - (mu + big_k) + c_plus)
                c_minus = max(0.0, (mu - big_k) - xs[i] + c_minus)
                if c_plus > big_h or c_minus > big_h:
                    drifts.append(i)
                    ended = i
                    break
            first, mu, sd = runs.send(ended)
    except StopIteration:
        return drifts


def reference_ewma(xs, lam=0.2, big_l=3.0, warm_start=100, target=None, sigma=None) -> list[int]:
    """Montgomery's EWMA chart with exact limits, restarting (and re-estimating) on a signal."""
    xs = xs.tolist()
    drifts: list[int] = []
    runs = regimes(xs, warm_start, target, sigma)
    try:
        first, mu, sd = next(runs)
        while True:
            z = mu
            ended = None
            for i in range(first, len(xs)):
                z = lam * xs[i] + (1 - lam) * z
                t = i - first + 1
                width = big_l * sd * math.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * t)))
                # sigma = 0 (a constant warm-up): any other value is out of control.
                out = xs[i] != mu if sd == 0 else (z > mu + width or z < mu - width)
                if out:
                    drifts.append(i)
                    ended = i
                    break
            first, mu, sd = runs.send(ended)
    except StopIteration:
        return drifts


def cusum_params(rng: np.random.Generator, xs: np.ndarray, case: str) -> dict:
    params = {"k": float(rng.choice([0.25, 0.5, 1.0])), "h": float(rng.choice([3.0, 4.0, 5.0]))}
    return params | given(rng, xs, case)


def ewma_params(rng: np.random.Generator, xs: np.ndarray, case: str) -> dict:
    pick = int(rng.integers(3))
    params = {"lambda_val": [0.05, 0.2, 0.4][pick], "n_sigmas": [2.615, 3.0, 3.054][pick]}
    return params | given(rng, xs, case)


def given(rng: np.random.Generator, xs: np.ndarray, case: str) -> dict:
    """In-control parameters: estimated, or given (near the stream's opening level)."""
    params: dict = {"warm_start": int(rng.choice([2, 30, 100]))}
    if case in ("target", "both"):
        params["target"] = float(np.round(np.mean(xs[:50]), 1))
    if case in ("sigma", "both"):
        params["sigma"] = float(max(0.1, np.round(np.std(xs[:50]), 1)))
    return params


CASES = ("estimated", "target", "sigma", "both")
DETECTORS = {
    "CUSUM": (CUSUM, cusum_params, reference_cusum, ("k", "h")),
    "EWMAChart": (EWMAChart, ewma_params, reference_ewma, ("lambda_val", "n_sigmas")),
}


def reference_args(name: str, params: dict) -> dict:
    args = dict(params)
    if name == "EWMAChart":
        args["lam"] = args.pop("lambda_val")
        args["big_l"] = args.pop("n_sigmas")
    return args


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", DETECTORS)
def test_same_drift_indices_as_the_textbook_reference(name: str, case: str) -> None:
    cls, make_params, reference, _ = DETECTORS[name]
    total = 0
    for seed in range(18):
        rng = np.random.default_rng([seed, CASES.index(case)])
        kind = KINDS[seed % len(KINDS)]
        xs = make_stream(rng, kind, 3000)
        params = make_params(rng, xs, case)
        expected = reference(xs, **reference_args(name, params))
        got = cls(**params).update_many(xs)
        assert got.drift.tolist() == expected, (seed, kind, params)
        assert got.warning.size == 0
        total += len(expected)
    assert total > 50


def test_average_run_lengths_are_the_textbook_ones() -> None:
    # The design points quoted in the docstrings, on normal data with known parameters:
    # CUSUM k = 0.5, h = 5: ARL0 ~ 465, ARL1 ~ 10.4 at one sigma; EWMA lambda = 0.2, L = 3:
    # ARL0 ~ 560, ARL1 ~ 10 at one sigma. Loose bounds: a check of the parameterisation.
    rng = np.random.default_rng(0)
    calm, shifted = rng.normal(0, 1, 400_000), rng.normal(1, 1, 50_000)
    for cls, arl0 in ((CUSUM, 465), (EWMAChart, 560)):
        detector = cls(target=0.0, sigma=1.0)
        assert 0.75 * arl0 < calm.size / detector.update_many(calm).drift.size < 1.3 * arl0
        arl1 = shifted.size / cls(target=0.0, sigma=1.0).update_many(shifted).drift.size
        assert 8 < arl1 < 13


@pytest.mark.parametrize("cls", [CUSUM, EWMAChart])
def test_constant_warm_up_signals_on_the_first_different_value(cls) -> None:
    xs = np.concatenate([np.full(300, 0.1), [0.1 + 1e-9], np.full(50, 0.1)])
    found = cls(warm_start=100).update_many(xs)
    assert found.drift.tolist() == [300]


@pytest.mark.parametrize("cls", [CUSUM, EWMAChart])
def test_bank_matches_standalone_detectors(cls) -> None:
    rng = np.random.default_rng(3)
    n_streams, n = 6, 2000
    streams = [make_stream(rng, KINDS[s % len(KINDS)], n) for s in range(n_streams)]
    ids = rng.permutation(np.repeat(np.arange(n_streams), n))
    xs = np.empty(ids.shape[0])
    for s in range(n_streams):
        xs[ids == s] = streams[s]

    prototype = cls(warm_start=50)
    bank = DetectorBank(prototype, n_streams=n_streams)
    cuts = np.sort(rng.choice(np.arange(1, ids.shape[0]), size=5, replace=False))
    drift_flags = np.zeros(ids.shape[0], dtype=bool)
    bounds = zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [ids.shape[0]]]), strict=True)
    for start, stop in bounds:
        found = bank.update_many(ids[start:stop], xs[start:stop])
        drift_flags[start + found.drift] = True
        assert (found.drift_streams == ids[start + found.drift]).all()

    drifts = 0
    for s in range(n_streams):
        alone = prototype.clone().update_many(streams[s]).drift
        assert np.flatnonzero(drift_flags[ids == s]).tolist() == alone.tolist()
        drifts += alone.size
    assert drifts > 5


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", DETECTORS)
def test_split_and_resume_from_state(name: str, case: str) -> None:
    cls, make_params, _, _ = DETECTORS[name]
    rng = np.random.default_rng(CASES.index(case))
    xs = make_stream(rng, "abrupt", 3000)
    params = make_params(rng, xs, case)
    whole = cls(**params).update_many(xs).drift

    # A random point, inside the first warm-up, and right after a drift (reset pending).
    splits = [int(rng.integers(1, xs.shape[0])), 1]
    if whole.size:
        splits.append(int(whole[0]) + 1)
    for split in splits:
        first = cls(**params)
        head = first.update_many(xs[:split]).drift
        resumed = detector_from_state(first.to_state())
        assert resumed.params() == first.params()
        tail = resumed.update_many(xs[split:]).drift + split
        assert np.concatenate([head, tail]).tolist() == whole.tolist()


def test_statistics_follow_the_recursions() -> None:
    xs = np.array([1.0, 3.0, 2.0, 7.0, 4.0])
    cusum = CUSUM(k=0.5, h=100.0, target=2.0, sigma=2.0)
    cusum.update_many(xs)
    c_plus = c_minus = 0.0
    for x in xs:
        c_plus = max(0.0, x - 3.0 + c_plus)
        c_minus = max(0.0, 1.0 - x + c_minus)
    assert (cusum.c_plus, cusum.c_minus) == (c_plus, c_minus)
    assert (cusum.in_control_mean, cusum.in_control_sigma) == (2.0, 2.0)

    chart = EWMAChart(lambda_val=0.5, n_sigmas=100.0, warm_start=2, target=None, sigma=None)
    chart.update_many(xs)
    z = 2.0  # mean of the first two values
    for x in xs[2:]:
        z = 0.5 * x + 0.5 * z
    assert chart.in_control_mean == 2.0
    assert chart.in_control_sigma == statistics.stdev([1.0, 3.0])
    assert chart.z == z


@pytest.mark.parametrize("cls", [CUSUM, EWMAChart])
def test_warm_up_estimates_are_the_sample_mean_and_std(cls) -> None:
    rng = np.random.default_rng(4)
    xs = rng.normal(1e3, 5.0, 250)
    detector = cls(warm_start=250)
    detector.update_many(xs)
    sample = xs.tolist()
    assert detector.in_control_mean == pytest.approx(statistics.fmean(sample), rel=1e-14)
    assert detector.in_control_sigma == pytest.approx(statistics.stdev(sample), rel=1e-12)
    partial = cls(warm_start=250)
    partial.update_many(xs[:249])
    assert math.isnan(partial.in_control_mean) and math.isnan(partial.in_control_sigma)


def test_non_finite_values_are_refused() -> None:
    for cls in (CUSUM, EWMAChart):
        with pytest.raises(ValueError, match="finite"):
            cls().update_many([1.0, np.inf])


@pytest.mark.parametrize(
    ("cls", "params"),
    [
        (CUSUM, {"k": -0.1}),
        (CUSUM, {"h": 0.0}),
        (CUSUM, {"h": np.inf}),
        (CUSUM, {"warm_start": 1}),  # cannot estimate sigma from one value
        (CUSUM, {"warm_start": 0, "sigma": 1.0}),  # nor the target from none
        (CUSUM, {"sigma": 0.0}),
        (CUSUM, {"target": np.nan, "sigma": 1.0}),
        (EWMAChart, {"lambda_val": 0.0}),
        (EWMAChart, {"lambda_val": 1.5}),
        (EWMAChart, {"n_sigmas": 0.0}),
        (EWMAChart, {"warm_start": -1}),
        (EWMAChart, {"warm_start": 2.5}),
    ],
)
def test_invalid_parameters_are_refused(cls, params: dict) -> None:
    with pytest.raises(ValueError):
        cls(**params)


def test_known_parameters_need_no_warm_up() -> None:
    for cls in (CUSUM, EWMAChart):
        found = cls(target=0.0, sigma=1.0, warm_start=0).update_many([50.0])
        assert found.drift.tolist() == [0]
