"""PageHinkley: identical detections to river 0.26, banks, state round trip, validation."""

from __future__ import annotations

import numpy as np
import pytest
from driftline.detectors import PageHinkley
from driftline.detectors.bank import DetectorBank
from driftline.detectors.base import detector_from_state
from river import drift as river_drift

KINDS = ("abrupt", "gradual", "heavy_tails", "integers", "constant_stretches", "down_shift")


def make_stream(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """A stream with one or more changes of mean, shaped by ``kind``."""
    half = n // 2
    if kind == "abrupt":
        return np.concatenate([rng.normal(0, 1, half), rng.normal(rng.uniform(1, 4), 1, n - half)])
    if kind == "gradual":
        ramp = np.clip((np.arange(n) - half) / (n / 4), 0, 1) * rng.uniform(1, 3)
        return rng.normal(0, 1, n) + ramp
    if kind == "heavy_tails":
        shift = np.where(np.arange(n) >= half, rng.uniform(2, 6), 0.0)
        return rng.standard_t(1.5, n) + shift
    if kind == "integers":
        return np.concatenate([rng.poisson(2, half), rng.poisson(rng.integers(3, 9), n - half)])
    if kind == "constant_stretches":
        # Runs of one repeated value (a stuck sensor), then noise at another level.
        levels = rng.choice([0.0, 1.0, 5.0, -3.0], size=8)
        runs = np.repeat(levels, n // 8)
        noisy = rng.random(runs.shape[0]) < 0.3
        return np.where(noisy, runs + rng.normal(0, 1, runs.shape[0]), runs)
    if kind == "down_shift":
        return np.concatenate([rng.normal(3, 1, half), rng.normal(0, 1, n - half)])
    raise AssertionError(kind)


def river_detections(detector, xs: np.ndarray) -> list[int]:
    found = []
    for i, x in enumerate(xs.tolist()):
        detector.update(x)
        if detector.drift_detected:
            found.append(i)
    return found


def random_params(rng: np.random.Generator) -> dict:
    # Small thresholds and strong forgetting give many detections per stream, so the
    # comparison exercises the reset-after-drift path again and again.
    return {
        "min_instances": int(rng.integers(1, 60)),
        "delta": float(rng.choice([0.0, 0.005, 0.05, 0.3])),
        "threshold": float(rng.choice([2.0, 8.0, 20.0, 50.0])),
        "alpha": float(rng.choice([1.0, 1 - 0.0001, 0.99, 0.9])),
    }


@pytest.mark.parametrize("mode", ["up", "down", "both"])
def test_same_drift_indices_as_river(mode: str) -> None:
    total = 0
    for seed in range(24):
        rng = np.random.default_rng([seed, ["up", "down", "both"].index(mode)])
        kind = KINDS[seed % len(KINDS)]
        xs = make_stream(rng, kind, 3000)
        params = random_params(rng) | {"mode": mode}
        expected = river_detections(river_drift.PageHinkley(**params), xs)
        got = PageHinkley(**params).update_many(xs)
        assert got.drift.tolist() == expected, (seed, kind, params)
        assert got.warning.size == 0
        total += len(expected)
    # The comparison is only worth something if drift actually fired, many times.
    assert total > 100


def test_defaults_match_river() -> None:
    ours, theirs = PageHinkley(), river_drift.PageHinkley()
    for name in PageHinkley._params:
        assert getattr(ours, name) == getattr(theirs, name)


def test_update_one_by_one_matches_update_many() -> None:
    rng = np.random.default_rng(7)
    xs = make_stream(rng, "abrupt", 2000)
    params = {"threshold": 5.0, "min_instances": 10}
    batch = PageHinkley(**params).update_many(xs).drift.tolist()
    single, detector = [], PageHinkley(**params)
    for i, x in enumerate(xs):
        if detector.update(x).drift_detected:
            single.append(i)
    assert single == batch
    assert len(batch) > 1


def test_drift_detected_after_each_update_matches_river() -> None:
    rng = np.random.default_rng(11)
    xs = make_stream(rng, "abrupt", 1500)
    ours, theirs = PageHinkley(threshold=3.0), river_drift.PageHinkley(threshold=3.0)
    for x in xs.tolist():
        ours.update(x)
        theirs.update(x)
        assert ours.drift_detected == theirs.drift_detected
        assert ours.mean == theirs._x_mean.get()


def test_bank_matches_standalone_detectors() -> None:
    rng = np.random.default_rng(3)
    n_streams = 5
    streams = [make_stream(rng, KINDS[s % len(KINDS)], 1200) for s in range(n_streams)]
    ids = np.repeat(np.arange(n_streams), 1200)
    rng.shuffle(ids)  # interleave; each stream keeps its own order below
    xs = np.empty(ids.shape[0])
    positions = [np.flatnonzero(ids == s) for s in range(n_streams)]
    for s in range(n_streams):
        xs[positions[s]] = streams[s]

    prototype = PageHinkley(threshold=10.0, min_instances=20, mode="up")
    bank = DetectorBank(prototype, n_streams=n_streams)
    # Feed the interleaved stream in uneven batches, as a worker would.
    cuts = np.sort(rng.choice(np.arange(1, xs.shape[0]), size=7, replace=False))
    found = [
        bank.update_many(i, x) for i, x in zip(np.split(ids, cuts), np.split(xs, cuts), strict=True)
    ]
    offsets = np.concatenate([[0], cuts])
    drift_pos = np.concatenate([f.drift + o for f, o in zip(found, offsets, strict=True)])
    drift_ids = np.concatenate([f.drift_streams for f in found])

    total = 0
    for s in range(n_streams):
        standalone = prototype.clone().update_many(streams[s]).drift
        in_bank = np.searchsorted(positions[s], drift_pos[drift_ids == s])
        assert in_bank.tolist() == standalone.tolist()
        total += standalone.size
    assert total > 5


@pytest.mark.parametrize("seed", range(6))
def test_split_and_resume_from_state(seed: int) -> None:
    rng = np.random.default_rng(seed)
    xs = make_stream(rng, KINDS[seed % len(KINDS)], 2000)
    params = random_params(rng) | {"mode": ["up", "down", "both"][seed % 3]}
    whole = PageHinkley(**params).update_many(xs).drift

    # Split at a random point, and right after a drift (the reset is still pending then).
    splits = [int(rng.integers(1, xs.shape[0]))]
    if whole.size:
        splits.append(int(whole[0]) + 1)
    for split in splits:
        first = PageHinkley(**params)
        head = first.update_many(xs[:split]).drift
        resumed = detector_from_state(first.to_state())
        assert isinstance(resumed, PageHinkley)
        assert resumed.drift_detected == first.drift_detected
        tail = resumed.update_many(xs[split:]).drift + split
        assert np.concatenate([head, tail]).tolist() == whole.tolist()


def test_non_finite_values_are_refused() -> None:
    detector = PageHinkley()
    with pytest.raises(ValueError, match="finite"):
        detector.update_many([1.0, np.nan])
    with pytest.raises(ValueError, match="finite"):
        detector.update(np.inf)


@pytest.mark.parametrize(
    "params",
    [
        {"mode": "sideways"},
        {"min_instances": -1},
        {"min_instances": 2.5},
        {"delta": -0.1},
        {"threshold": 0.0},
        {"threshold": np.inf},
        {"alpha": 0.0},
        {"alpha": 1.5},
    ],
)
def test_invalid_parameters_are_refused(params: dict) -> None:
    with pytest.raises(ValueError):
        PageHinkley(**params)
