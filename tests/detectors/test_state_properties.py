"""Property: stopping anywhere, serialising, restoring and continuing changes nothing.

For every registered detector, any stream and any split point, ``update_many(xs[:k])`` ->
``to_state`` -> ``detector_from_state`` -> ``update_many(xs[k:])`` gives exactly the
detections (and final state) of one uninterrupted ``update_many(xs)``. This is what lets a
worker crash or a partition move mid-stream without changing a single alert.

And: however a stream is cut into batches, the detections and the two sides reported at each
drift are those of the uninterrupted run, so a decision taken on them (retrain because the
error rate went up) depends on the events alone, never on where a Kafka batch ended.
"""

from __future__ import annotations

import numpy as np
import pytest
from driftline.detectors.base import ChangeDetector, detector_from_state
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.detector_checks import (
    SIDES,
    detections_of,
    detector_classes,
    is_binary,
    last_of,
)

CLASSES = detector_classes()

# Short arbitrary streams find edge cases (constants, repeats, extremes); long seeded streams
# with a change make sure the split often lands after, before and between real detections.
FINITE = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def numeric_streams(draw: st.DrawFn) -> np.ndarray:
    if draw(st.booleans()):
        return np.array(draw(st.lists(FINITE, min_size=0, max_size=300)), dtype=np.float64)
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(50, 4000))
    shift = draw(st.floats(0.0, 5.0))
    rng = np.random.default_rng(seed)
    xs = rng.normal(0.0, 1.0, n)
    xs[n // 2 :] += shift
    return xs


@st.composite
def binary_streams(draw: st.DrawFn) -> np.ndarray:
    if draw(st.booleans()):
        bits = draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=0, max_size=300))
        return np.array(bits, dtype=np.float64)
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(50, 4000))
    before, after = draw(st.floats(0.0, 0.5)), draw(st.floats(0.0, 1.0))
    rng = np.random.default_rng(seed)
    xs = (rng.random(n) < before).astype(np.float64)
    xs[n // 2 :] = rng.random(n - n // 2) < after
    return xs


def check_split(cls: type[ChangeDetector], xs: np.ndarray, split: float, hops: int) -> None:
    whole = cls()
    expected, expected_sides = detections_of(whole, xs)

    # Cut at up to ``hops`` points, serialising and restoring at every cut.
    cuts = sorted({int(round(split * xs.shape[0] * (i + 1) / hops)) for i in range(hops)})
    detector: ChangeDetector = cls()
    got, got_sides = [], []
    start = 0
    for cut in [*cuts, xs.shape[0]]:
        flags, sides = detections_of(detector, xs[start:cut])
        got.append(flags)
        got_sides.append(sides)
        detector = detector_from_state(detector.to_state())
        start = cut
    np.testing.assert_array_equal(np.concatenate(got), expected)
    np.testing.assert_array_equal(np.hstack(got_sides), expected_sides)
    np.testing.assert_array_equal(last_of(detector), last_of(whole))
    np.testing.assert_array_equal(detector._state, whole._state)
    assert detector.drift_detected == whole.drift_detected
    assert detector.warning_detected == whole.warning_detected


@pytest.mark.parametrize("cls", CLASSES, ids=[cls.__name__ for cls in CLASSES])
def test_split_serialise_restore_continue_is_invisible(cls: type[ChangeDetector]) -> None:
    streams = binary_streams() if is_binary(cls) else numeric_streams()

    # deadline=None: the first example pays for Numba compilation.
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(xs=streams, split=st.floats(0.0, 1.0), hops=st.integers(1, 3))
    def prop(xs: np.ndarray, split: float, hops: int) -> None:
        check_split(cls, xs, split, hops)

    prop()


def check_batching(cls: type[ChangeDetector], xs: np.ndarray, fractions: list[float]) -> None:
    whole = cls().update_many(xs)
    n = xs.shape[0]
    cuts = sorted(int(f * n) for f in fractions)  # repeats make empty batches
    detector = cls()
    drift, sides = [], []
    for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
        found = detector.update_many(xs[lo:hi])
        drift.append(found.drift + lo)
        sides.append(np.vstack([getattr(found, name) for name in SIDES]))
    np.testing.assert_array_equal(np.concatenate(drift), whole.drift)
    np.testing.assert_array_equal(
        np.hstack(sides), np.vstack([getattr(whole, name) for name in SIDES])
    )
    if whole.drift.size:
        last = np.array([getattr(whole, name)[-1] for name in SIDES])
        np.testing.assert_array_equal(last_of(detector), last)
    else:
        assert np.isnan(last_of(detector)).all()


@pytest.mark.parametrize("cls", CLASSES, ids=[cls.__name__ for cls in CLASSES])
def test_sides_of_each_drift_do_not_depend_on_the_batching(cls: type[ChangeDetector]) -> None:
    streams = binary_streams() if is_binary(cls) else numeric_streams()

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(xs=streams, fractions=st.lists(st.floats(0.0, 1.0), max_size=25))
    def prop(xs: np.ndarray, fractions: list[float]) -> None:
        check_batching(cls, xs, fractions)

    prop()
