"""DDM: identical drift and warning indices to river 0.26, inputs (banks, state round
trips and the rest: the generic sweep, test_sweep.py)."""

from __future__ import annotations

import numpy as np
import pytest
from driftline.detectors import DDM
from river import drift as river_drift
from support.river_parity import (
    assert_defaults_match_river,
    assert_refuses_values_other_than_0_and_1,
    assert_same_flags_as_river,
    assert_takes_booleans_and_ints_like_river,
    error_stream,
)


def random_params(rng: np.random.Generator) -> dict:
    warning = float(rng.choice([1.0, 1.5, 2.0]))
    return {
        "warm_start": int(rng.choice([0, 5, 30, 100])),
        "warning_threshold": warning,
        "drift_threshold": warning + float(rng.choice([0.0, 0.5, 1.0])),
    }


def test_same_drift_and_warning_indices_as_river() -> None:
    drifts, warnings = assert_same_flags_as_river(DDM, river_drift.binary.DDM, random_params)
    assert drifts > 100 and warnings > 1000


def test_booleans_and_ints_are_taken_like_river() -> None:
    assert_takes_booleans_and_ints_like_river(DDM, river_drift.binary.DDM)


def test_flags_and_statistics_after_each_update_match_river() -> None:
    rng = np.random.default_rng(17)
    xs = error_stream(rng, "abrupt", 2500)
    ours, theirs = DDM(warm_start=10), river_drift.binary.DDM(warm_start=10)
    for x in xs.tolist():
        ours.update(x)
        theirs.update(x)
        assert ours.drift_detected == theirs.drift_detected
        assert ours.warning_detected == theirs.warning_detected
        assert ours.error_rate == theirs._p.get()
        assert ours.n == theirs._p.n


def test_defaults_match_river() -> None:
    assert_defaults_match_river(DDM, river_drift.binary.DDM)


@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0])
def test_values_other_than_zero_and_one_are_refused(bad: float) -> None:
    assert_refuses_values_other_than_0_and_1(DDM, bad)


@pytest.mark.parametrize(
    "params",
    [
        {"warm_start": -1},
        {"warm_start": 1.5},
        {"warning_threshold": 0.0},
        {"warning_threshold": 3.5},  # above the default drift threshold
        {"drift_threshold": np.inf},
    ],
)
def test_invalid_parameters_are_refused(params: dict) -> None:
    with pytest.raises(ValueError):
        DDM(**params)
