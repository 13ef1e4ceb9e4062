"""EDDM: identical drift and warning indices to river 0.26, banks, state round trip, inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from driftline.detectors import EDDM
from driftline.detectors.bank import DetectorBank
from driftline.detectors.base import detector_from_state
from driftline.detectors.eddm import river_sqrt
from numba import njit
from river import drift as river_drift

KINDS = ("abrupt", "gradual", "rare_errors", "constant_stretches")


def error_stream(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """A 0/1 error stream whose error rate changes, shaped by ``kind``."""
    if kind == "abrupt":
        # Several segments at unrelated rates: rises, falls, and repeats after each reset.
        cuts = np.sort(rng.choice(np.arange(100, n - 100), size=3, replace=False))
        rates = np.repeat(rng.uniform(0.0, 0.8, 4), np.diff(np.concatenate([[0], cuts, [n]])))
    elif kind == "gradual":
        start, end = rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.9)
        rates = np.interp(np.arange(n), [n / 4, 3 * n / 4], [start, end])
    elif kind == "rare_errors":
        rates = np.where(np.arange(n) < n // 2, rng.uniform(0.001, 0.02), rng.uniform(0.05, 0.2))
    elif kind == "constant_stretches":
        # Long runs of all-correct and all-wrong (a model that is stuck), between noise.
        rates = np.repeat(rng.choice([0.0, 1.0, 0.3], size=6), n // 6 + 1)[:n]
    else:
        raise AssertionError(kind)
    return (rng.random(n) < rates).astype(np.float64)


def river_flags(detector, xs: np.ndarray) -> tuple[list[int], list[int]]:
    """Drift indices and warning indices (warning and not drift), as river reports them."""
    drift, warning = [], []
    for i, x in enumerate(xs.tolist()):
        detector.update(x)
        if detector.drift_detected:
            drift.append(i)
        elif detector.warning_detected:
            warning.append(i)
    return drift, warning


def random_params(rng: np.random.Generator) -> dict:
    alpha = float(rng.choice([0.95, 0.9, 0.8]))
    return {
        "warm_start": int(rng.choice([0, 5, 30, 100])),
        "alpha": alpha,
        "beta": alpha - float(rng.choice([0.0, 0.05, 0.1])),
    }


def test_same_drift_and_warning_indices_as_river() -> None:
    drifts = warnings = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        kind = KINDS[seed % len(KINDS)]
        xs = error_stream(rng, kind, 4000)
        params = random_params(rng) if seed % 5 else {}
        expected_drift, expected_warning = river_flags(river_drift.binary.EDDM(**params), xs)
        got = EDDM(**params).update_many(xs)
        assert got.drift.tolist() == expected_drift, (seed, kind, params)
        assert got.warning.tolist() == expected_warning, (seed, kind, params)
        drifts += len(expected_drift)
        warnings += len(expected_warning)
    assert drifts > 100 and warnings > 1000


def test_booleans_and_ints_are_taken_like_river() -> None:
    rng = np.random.default_rng(5)
    bits = error_stream(rng, "abrupt", 3000) > 0
    expected_drift, expected_warning = river_flags(river_drift.binary.EDDM(), bits)
    for xs in (bits, bits.astype(int), bits.tolist()):
        got = EDDM().update_many(xs)
        assert got.drift.tolist() == expected_drift
        assert got.warning.tolist() == expected_warning
    assert expected_drift


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
    ours, theirs = EDDM(), river_drift.binary.EDDM()
    for name in EDDM._params:
        assert getattr(ours, name) == getattr(theirs, name)


def test_bank_matches_standalone_detectors() -> None:
    rng = np.random.default_rng(3)
    n_streams, n = 6, 2000
    streams = [error_stream(rng, KINDS[s % len(KINDS)], n) for s in range(n_streams)]
    ids = rng.permutation(np.repeat(np.arange(n_streams), n))
    xs = np.empty(ids.shape[0])
    for s in range(n_streams):
        xs[ids == s] = streams[s]

    prototype = EDDM(warm_start=20, alpha=0.9, beta=0.85)
    bank = DetectorBank(prototype, n_streams=n_streams)
    cuts = np.sort(rng.choice(np.arange(1, ids.shape[0]), size=5, replace=False))
    flags = np.zeros(ids.shape[0], dtype=np.int8)
    for start, stop in zip(
        np.concatenate([[0], cuts]), np.concatenate([cuts, [ids.shape[0]]]), strict=True
    ):
        found = bank.update_many(ids[start:stop], xs[start:stop])
        flags[start + found.warning] = 1
        flags[start + found.drift] = 2
        assert (found.drift_streams == ids[start + found.drift]).all()

    drifts = 0
    for s in range(n_streams):
        alone = prototype.clone().update_many(streams[s])
        mine = flags[ids == s]
        assert np.flatnonzero(mine == 2).tolist() == alone.drift.tolist()
        assert np.flatnonzero(mine == 1).tolist() == alone.warning.tolist()
        drifts += alone.drift.size
    assert drifts > 5


@pytest.mark.parametrize("seed", range(6))
def test_split_and_resume_from_state(seed: int) -> None:
    rng = np.random.default_rng(seed)
    xs = error_stream(rng, KINDS[seed % len(KINDS)], 3000)
    params = random_params(rng)
    whole = EDDM(**params).update_many(xs)

    splits = [int(rng.integers(1, xs.shape[0]))]
    if whole.drift.size:
        splits.append(int(whole.drift[0]) + 1)  # the reset is still pending there
    if whole.warning.size:
        splits.append(int(whole.warning[-1]) + 1)
    for split in splits:
        first = EDDM(**params)
        head = first.update_many(xs[:split])
        resumed = detector_from_state(first.to_state())
        assert resumed.warning_detected == first.warning_detected
        assert resumed.drift_detected == first.drift_detected
        tail = resumed.update_many(xs[split:])
        assert np.concatenate([head.drift, tail.drift + split]).tolist() == whole.drift.tolist()
        assert (
            np.concatenate([head.warning, tail.warning + split]).tolist() == whole.warning.tolist()
        )


@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0])
def test_values_other_than_zero_and_one_are_refused(bad: float) -> None:
    detector = EDDM()
    detector.update_many([0.0, 1.0, 1.0])
    before = detector._state.copy()
    with pytest.raises(ValueError, match="index 2"):
        detector.update_many([1.0, 0.0, bad])
    np.testing.assert_array_equal(detector._state, before)
    bank = DetectorBank(EDDM(), n_streams=2)
    with pytest.raises(ValueError, match="0/1"):
        bank.update_many([0, 1], [1.0, bad])


def test_non_finite_values_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        EDDM().update_many([1.0, np.nan])


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
