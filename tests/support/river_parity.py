"""Streams and readers for the parity tests against river (the reference implementation)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

KINDS = ("abrupt", "gradual", "rare_errors", "constant_stretches")


def error_stream(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """A 0/1 error stream whose error rate changes, shaped by ``kind`` (one of ``KINDS``)."""
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


def river_flags(detector: Any, xs: np.ndarray) -> tuple[list[int], list[int]]:
    """Drift indices and warning indices (warning and not drift), as river reports them."""
    drift, warning = [], []
    for i, x in enumerate(xs.tolist()):
        detector.update(x)
        if detector.drift_detected:
            drift.append(i)
        elif detector.warning_detected:
            warning.append(i)
    return drift, warning


def assert_same_flags_as_river(
    ours: Any, theirs: Any, random_params: Any, seeds: int = 40, n: int = 4000
) -> tuple[int, int]:
    """Our detector and river's flag the same indices on error streams of every kind, with
    the defaults (every fifth seed) and ``random_params(rng)``; returns the drifts and
    warnings seen, so a caller can check the comparison was not vacuous."""
    drifts = warnings = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        kind = KINDS[seed % len(KINDS)]
        xs = error_stream(rng, kind, n)
        params = random_params(rng) if seed % 5 else {}
        expected_drift, expected_warning = river_flags(theirs(**params), xs)
        got = ours(**params).update_many(xs)
        assert got.drift.tolist() == expected_drift, (seed, kind, params)
        assert got.warning.tolist() == expected_warning, (seed, kind, params)
        drifts += len(expected_drift)
        warnings += len(expected_warning)
    return drifts, warnings


def assert_takes_booleans_and_ints_like_river(ours: Any, theirs: Any) -> None:
    rng = np.random.default_rng(5)
    bits = error_stream(rng, "abrupt", 3000) > 0
    expected_drift, expected_warning = river_flags(theirs(), bits)
    assert expected_drift, "no drift; the comparison would be vacuous"
    for xs in (bits, bits.astype(int), bits.tolist()):
        got = ours().update_many(xs)
        assert got.drift.tolist() == expected_drift
        assert got.warning.tolist() == expected_warning


def assert_defaults_match_river(ours: Any, theirs: Any) -> None:
    mine, rivers = ours(), theirs()
    for name in ours._params:
        assert getattr(mine, name) == getattr(rivers, name), name


def assert_refuses_values_other_than_0_and_1(cls: Any, bad: float) -> None:
    """A 0/1 detector refuses ``bad`` by its index, and a refused batch leaves no trace; a bank
    of them refuses it too."""
    from driftline.detectors.bank import DetectorBank

    detector = cls()
    detector.update_many([0.0, 1.0, 1.0])
    before = detector._state.copy()
    with pytest.raises(ValueError, match="index 2"):
        detector.update_many([1.0, 0.0, bad])
    np.testing.assert_array_equal(detector._state, before)
    with pytest.raises(ValueError, match="0/1"):
        DetectorBank(cls(), n_streams=2).update_many([0, 1], [1.0, bad])
