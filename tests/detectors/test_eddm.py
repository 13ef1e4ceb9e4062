"""EDDM: identical drift and warning indices to river 0.26, inputs (banks, state round
trips and the rest: the generic sweep, test_sweep.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from driftline.detectors import EDDM
from driftline.detectors.eddm import river_sqrt
from numba import njit
from river import drift as river_drift
from support.river_parity import (
    KINDS,
    assert_defaults_match_river,
    assert_refuses_values_other_than_0_and_1,
    assert_same_flags_as_river,
    assert_takes_booleans_and_ints_like_river,
    error_stream,
)


def random_params(rng: np.random.Generator) -> dict:
    alpha = float(rng.choice([0.95, 0.9, 0.8]))
    return {
        "warm_start": int(rng.choice([0, 5, 30, 100])),
        "alpha": alpha,
        "beta": alpha - float(rng.choice([0.0, 0.05, 0.1])),
    }


def test_same_drift_and_warning_indices_as_river() -> None:
    drifts, warnings = assert_same_flags_as_river(EDDM, river_drift.binary.EDDM, random_params)
    assert drifts > 100 and warnings > 1000


def test_booleans_and_ints_are_taken_like_river() -> None:
    assert_takes_booleans_and_ints_like_river(EDDM, river_drift.binary.EDDM)


def test_flags_and_statistics_after_each_update_match_river() -> None:
    # River's flags are compared after every single update, not only where update_many
    # reports: EDDM keeps a warning over correct values and may hold warning and drift at once.
    both = 0
    for seed in range(4):
        rng = np.random.default_rng([17, seed])
        xs = error_stream(rng, KINDS[seed], 2500)
        ours, theirs = EDDM(warm_start=10), river_drift.binary.EDDM(warm_start=10)
        for x in xs.tolist():
            ours.update(x)
            theirs.update(x)
            assert ours.drift_detected == theirs.drift_detected
            assert ours.warning_detected == theirs.warning_detected
            assert ours.n == theirs._n
            assert ours.n_errors == theirs._n_errors
            assert ours.mean_distance == theirs._error_distances.mean.get()
            assert ours.p2s_max == theirs._p2s_prime_max
            both += theirs.drift_detected and theirs.warning_detected
    assert both > 0, "no drift while warning: the case this test is for never came up"


@njit
def _river_sqrt_all(values: np.ndarray, half: float) -> np.ndarray:
    # ``half`` comes in at run time, as it does from the state array in the kernel.
    out = np.empty_like(values)
    for i in range(values.shape[0]):
        out[i] = river_sqrt(values[i], half)
    return out


def test_square_root_is_rounded_like_pythons_power() -> None:
    # river takes the standard deviation as ``var ** 0.5`` (C pow), which differs from a
    # correctly rounded sqrt in about 1 value in 1000; the kernel must follow pow.
    rng = np.random.default_rng(0)
    values = rng.random(200_000) * 10.0 ** rng.integers(-4, 8, 200_000)
    expected = np.array([v**0.5 for v in values.tolist()])
    assert (expected != np.sqrt(values)).sum() > 10  # the trap is real
    np.testing.assert_array_equal(_river_sqrt_all(values, 0.5), expected)


@pytest.mark.parametrize("seed", [1, 2])
def test_kernel_keeps_rivers_rounding_of_the_standard_deviation(seed: int) -> None:
    # Slowly growing gaps between errors raise p' + 2 s' to a new maximum at nearly every
    # error, so the stored maximum exposes each rounded standard deviation. For these seeds
    # a correctly rounded sqrt would store a different maximum at least once.
    rng = np.random.default_rng(seed)
    gaps = 1 + np.cumsum(rng.integers(0, 2, 600)) // 4 + rng.integers(0, 3, 600)
    errors = np.cumsum(gaps) - 1
    xs = np.zeros(errors[-1] + 1)
    xs[errors] = 1.0
    params = {"warm_start": 0, "alpha": 0.5, "beta": 0.4}

    theirs = river_drift.binary.EDDM(**params)
    expected, sqrt_differs = [], 0
    for x in xs.tolist():
        theirs.update(x)
        if x == 1.0:
            expected.append(theirs._p2s_prime_max)
            dist = theirs._error_distances
            sqrt_differs += theirs._p2s_prime_max == dist.mean.get() + 2 * dist.get() ** 0.5 and (
                dist.mean.get() + 2 * math.sqrt(dist.get()) != theirs._p2s_prime_max
            )
    assert sqrt_differs > 0

    ours, got = EDDM(**params), []
    for start, stop in zip(np.concatenate([[0], errors[:-1] + 1]), errors + 1, strict=True):
        ours.update_many(xs[start:stop])
        got.append(ours.p2s_max)
    assert got == expected


def test_defaults_match_river() -> None:
    assert_defaults_match_river(EDDM, river_drift.binary.EDDM)


@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0])
def test_values_other_than_zero_and_one_are_refused(bad: float) -> None:
    assert_refuses_values_other_than_0_and_1(EDDM, bad)


@pytest.mark.parametrize(
    "params",
    [
        {"warm_start": -1},
        {"warm_start": 1.5},
        {"alpha": 0.0},
        {"alpha": 1.5},
        {"beta": 0.0},
        {"alpha": 0.8, "beta": 0.9},  # river refuses alpha < beta too
    ],
)
def test_invalid_parameters_are_refused(params: dict) -> None:
    with pytest.raises(ValueError):
        EDDM(**params)
