"""Every change detector against every generic check (river's ``test_estimators`` idea).

Parametrised over ``REGISTRY``, so a detector module that lands is swept without editing this
file. Checks that need a realistic stream use one with an injected change, so "no detection
anywhere" cannot make a comparison pass vacuously.
"""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
from driftline.detectors.bank import DetectorBank
from driftline.detectors.base import ChangeDetector, detector_from_state
from support.detector_checks import (
    SIDES,
    detector_classes,
    flags_of,
    is_binary,
    last_of,
    sides_of,
)

CLASSES = detector_classes()

#: Non-default parameters per detector (river's ``_unit_test_params``): every check runs with
#: the defaults and with each of these. Each set still catches the injected change of
#: ``stream_for`` (the comparisons need drifts), and differs from the defaults in every
#: parameter it names.
UNIT_TEST_PARAMS: dict[str, list[dict]] = {
    "ADWIN": [{"delta": 0.01, "clock": 8, "max_buckets": 3, "min_window_length": 10,
               "grace_period": 20}],
    "CUSUM": [{"k": 0.25, "h": 8.0, "warm_start": 50, "target": 0.0, "sigma": 1.0}],
    "DDM": [{"warm_start": 10, "warning_threshold": 1.5, "drift_threshold": 2.5}],
    "EDDM": [{"warm_start": 10, "alpha": 0.9, "beta": 0.8}],
    "EWMAChart": [{"lambda_val": 0.1, "n_sigmas": 2.5, "warm_start": 50, "target": 0.0,
                   "sigma": 1.0}],
    "HDDM_A": [{"drift_confidence": 0.005, "warning_confidence": 0.01, "two_sided_test": True}],
    "HDDM_W": [{"drift_confidence": 0.005, "warning_confidence": 0.01, "lambda_val": 0.1,
                "two_sided_test": True}],
    "KSWIN": [{"alpha": 0.01, "window_size": 60, "stat_size": 20, "seed": 3}],
    "PageHinkley": [{"min_instances": 10, "delta": 0.01, "threshold": 20.0, "alpha": 0.999,
                     "mode": "up"}],
}  # fmt: skip

CASES = [
    pytest.param(cls, params, id=f"{cls.__name__}-{i}" if i else cls.__name__)
    for cls in CLASSES
    for i, params in enumerate([{}, *UNIT_TEST_PARAMS.get(cls.__name__, [])])
]


def stream_for(cls: type[ChangeDetector], n: int = 3000, seed: int = 7) -> np.ndarray:
    """A stream with a change at n // 2: error rate 0.1 -> 0.6, or mean 0 -> 2.5."""
    rng = np.random.default_rng(seed)
    half = n // 2
    if is_binary(cls):
        first = rng.random(half) < 0.1
        second = rng.random(n - half) < 0.6
        return np.concatenate([first, second]).astype(np.float64)
    return np.concatenate([rng.normal(0.0, 1.0, half), rng.normal(2.5, 1.0, n - half)])


pytestmark = pytest.mark.parametrize(("cls", "params"), CASES)


def test_unit_test_params_are_declared_and_not_the_defaults(
    cls: type[ChangeDetector], params: dict
) -> None:
    assert UNIT_TEST_PARAMS.get(cls.__name__), (
        f"a detector that lands declares non-default parameters for {cls.__name__} in "
        "UNIT_TEST_PARAMS"
    )
    defaults = cls().params()
    assert set(params) <= set(defaults), params
    same = [name for name in params if params[name] == defaults[name]]
    assert not same, f"{cls.__name__}: {same} equal the defaults"
    assert cls(**params).params() == {**defaults, **params}


def test_defaults_construct_and_params_are_public(cls: type[ChangeDetector], params: dict) -> None:
    detector = cls(**params)
    assert isinstance(detector._params, tuple)
    for name in detector._params:
        assert hasattr(detector, name), f"{cls.__name__}.{name} listed in _params, not set"
    state = detector._state
    assert state.dtype == np.float64 and state.ndim == 1 and state.flags.c_contiguous
    assert not detector.drift_detected and not detector.warning_detected


def test_detects_the_injected_change(cls: type[ChangeDetector], params: dict) -> None:
    # A sanity floor for the sweep's comparisons: with defaults, every detector fires
    # somewhere on a strong change, and never before it has seen a single value.
    xs = stream_for(cls)
    found = cls(**params).update_many(xs)
    assert found.drift.size > 0, f"{cls.__name__} missed a strong change with defaults"


def test_clone_has_same_params_and_fresh_state(cls: type[ChangeDetector], params: dict) -> None:
    detector = cls(**params)
    detector.update_many(stream_for(cls))
    twin = detector.clone()
    assert type(twin) is cls and twin is not detector
    assert twin.params() == detector.params()
    np.testing.assert_array_equal(twin._state, cls(**params)._state)
    assert twin._state is not detector._state
    assert not twin.drift_detected and not twin.warning_detected
    assert np.isnan(last_of(twin)).all() and not np.isnan(last_of(detector)[:2]).any()


def test_state_round_trip(cls: type[ChangeDetector], params: dict) -> None:
    xs = stream_for(cls)
    uninterrupted = flags_of(cls(**params), xs)
    # Split anywhere, and where state is most delicate: right after the first drift (its
    # reset still pending) and right after the last warning.
    splits = [2000, int(np.argmax(uninterrupted == 2)) + 1]
    if (uninterrupted == 1).any():
        splits.append(int(np.flatnonzero(uninterrupted == 1)[-1]) + 1)
    assert splits[1] > 1, "no drift; the split after it would be vacuous"
    for split in splits:
        detector = cls(**params)
        detector.update_many(xs[:split])
        blob = detector.to_state()
        assert isinstance(blob, bytes)
        for restored in (cls.from_state(blob), detector_from_state(blob)):
            assert type(restored) is cls
            assert restored.params() == detector.params()
            np.testing.assert_array_equal(restored._state, detector._state)
            assert restored.drift_detected == detector.drift_detected
            assert restored.warning_detected == detector.warning_detected
            np.testing.assert_array_equal(last_of(restored), last_of(detector))
            np.testing.assert_array_equal(flags_of(restored, xs[split:]), uninterrupted[split:])


def test_state_of_another_class_is_refused(cls: type[ChangeDetector], params: dict) -> None:
    others = [other for other in CLASSES if other is not cls]
    if not others:
        pytest.skip("only one detector registered")
    with pytest.raises(ValueError):
        cls.from_state(others[0]().to_state())


def test_pickle_and_copy_round_trip(cls: type[ChangeDetector], params: dict) -> None:
    xs = stream_for(cls)
    detector = cls(**params)
    detector.update_many(xs[:1700])
    for twin in (
        pickle.loads(pickle.dumps(detector)),
        copy.copy(detector),
        copy.deepcopy(detector),
    ):
        assert type(twin) is cls and twin.params() == detector.params()
        np.testing.assert_array_equal(twin._state, detector._state)
        np.testing.assert_array_equal(last_of(twin), last_of(detector))
        assert twin._state is not detector._state
    restored = pickle.loads(pickle.dumps(detector))
    np.testing.assert_array_equal(flags_of(restored, xs[1700:]), flags_of(detector, xs[1700:]))


def test_repr_round_trips_params(cls: type[ChangeDetector], params: dict) -> None:
    detector = cls(**params)
    text = repr(detector)
    assert text.startswith(f"{cls.__name__}(")
    rebuilt = eval(text, {cls.__name__: cls, "inf": math.inf, "nan": math.nan})
    assert rebuilt.params() == detector.params()


def test_docstring_has_runnable_example(cls: type[ChangeDetector], params: dict) -> None:
    doc = cls.__doc__ or ""
    assert doc.strip(), f"{cls.__name__} has no docstring"
    assert "Example" in doc, f"{cls.__name__} docstring lacks an Example section"
    assert ">>>" in doc, f"{cls.__name__} docstring example has no doctest lines"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_raise(cls: type[ChangeDetector], params: dict, bad: float) -> None:
    detector = cls(**params)
    before = detector._state.copy()
    with pytest.raises(ValueError):
        detector.update(bad)
    with pytest.raises(ValueError):
        detector.update_many([0.0, 1.0, bad])
    # A refused batch leaves no trace: validation happens before the kernel runs.
    np.testing.assert_array_equal(detector._state, before)


def test_update_returns_self_and_matches_update_many(cls: type[ChangeDetector], params: dict) -> None:
    xs = stream_for(cls, n=2000)
    one = cls(**params)
    assert one.update(float(xs[0])) is one
    flags = [2 if one.drift_detected else 1 if one.warning_detected else 0]
    sides = [last_of(one)] if one.drift_detected else []
    for x in xs[1:]:
        one.update(float(x))
        flags.append(2 if one.drift_detected else 1 if one.warning_detected else 0)
        if one.drift_detected:
            sides.append(last_of(one))
    many = cls(**params)
    found = many.update_many(xs)
    np.testing.assert_array_equal(np.array(flags, dtype=np.int8), flags_of(cls(**params), xs))
    assert sides, "no drift; the comparison of the sides would be vacuous"
    np.testing.assert_array_equal(np.array(sides).T, sides_of(found))
    np.testing.assert_array_equal(last_of(one), last_of(many))


def test_drift_reports_both_sides_of_the_change(cls: type[ChangeDetector], params: dict) -> None:
    xs = stream_for(cls)
    found = cls(**params).update_many(xs)
    assert found._fields[:2] == ("drift", "warning") and found._fields[2:] == SIDES
    sides = sides_of(found)
    assert sides.dtype == np.float64 and sides.shape == (4, found.drift.size)
    before, after, n_before, n_after = sides
    # every detector has both means; a count, where there is one, counts values
    assert np.isfinite(before).all() and np.isfinite(after).all()
    for n in (n_before, n_after):
        counted = n[~np.isnan(n)]
        assert (counted >= 1).all() and (counted == np.round(counted)).all()
    # the injected change (at the middle) goes up: the first drift past it says so
    first = int(np.argmax(found.drift >= xs.shape[0] // 2))
    assert found.drift[first] >= xs.shape[0] // 2
    assert after[first] > before[first], f"{cls.__name__}: {before[first]} -> {after[first]}"


def test_empty_batch_is_a_no_op(cls: type[ChangeDetector], params: dict) -> None:
    detector = cls(**params)
    found = detector.update_many(np.array([], dtype=np.float64))
    assert found.drift.size == 0 and found.warning.size == 0
    assert sides_of(found).shape == (4, 0) and sides_of(found).dtype == np.float64
    assert np.isnan(last_of(detector)).all()
    np.testing.assert_array_equal(detector._state, cls(**params)._state)


def test_bank_equals_standalone_detectors(cls: type[ChangeDetector], params: dict) -> None:
    n_streams = 3
    rng = np.random.default_rng(11)
    streams = [stream_for(cls, n=2400, seed=seed) for seed in range(n_streams)]
    # A random interleaving that keeps each stream's own order.
    ids = rng.permutation(np.repeat(np.arange(n_streams), 2400))
    xs = np.empty(ids.shape[0])
    for sid in range(n_streams):
        xs[ids == sid] = streams[sid]

    bank = DetectorBank(cls(**params), n_streams=n_streams)
    # Two batches, split mid-stream, to cover state carried between bank calls.
    cut = ids.shape[0] // 3
    first = bank.update_many(ids[:cut], xs[:cut])
    second = bank.update_many(ids[cut:], xs[cut:])
    bank_flags = np.zeros(ids.shape[0], dtype=np.int8)
    bank_flags[first.warning] = 1
    bank_flags[first.drift] = 2
    bank_flags[cut + second.warning] = 1
    bank_flags[cut + second.drift] = 2
    bank_drift = np.concatenate([first.drift, cut + second.drift])
    bank_sides = np.hstack([sides_of(first), sides_of(second)])
    np.testing.assert_array_equal(first.drift_streams, ids[first.drift])
    np.testing.assert_array_equal(second.drift_streams, ids[cut + second.drift])

    for sid in range(n_streams):
        alone = cls(**params)
        expected = alone.update_many(streams[sid])
        flags = np.zeros(streams[sid].shape[0], dtype=np.int8)
        flags[expected.warning] = 1
        flags[expected.drift] = 2
        np.testing.assert_array_equal(bank_flags[ids == sid], flags)
        np.testing.assert_array_equal(bank_sides[:, ids[bank_drift] == sid], sides_of(expected))
        np.testing.assert_array_equal(bank.detector(sid)._state, alone._state)
    assert (bank_flags == 2).any(), "no stream drifted; the comparison would be vacuous"

    restored = DetectorBank.from_state(bank.to_state())
    np.testing.assert_array_equal(restored._states, bank._states)
