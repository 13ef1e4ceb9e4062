"""HDDM_W (Hoeffding drift detection, weighted test; Frias-Blanco et al. 2014), exact against
river 0.26.

The state array holds the hyper-parameters and constants river derives from them (same
expressions), then five weighted samples of three numbers each and the cut points. The
arithmetic mirrors ``river.drift.binary.HDDMW`` (and the exponentially weighted mean of
river's Rust core) operation by operation, so detections are bit-identical.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from numba import njit

from .base import DRIFT, NONE, WARNING, ChangeDetector, record_cut
from .hddm_a import check_confidences, check_unit_interval

# State layout: hyper-parameters and derived constants, then the running statistics.
_DRIFT_CONFIDENCE, _WARNING_CONFIDENCE, _LAMBDA, _TWO_SIDED = 0, 1, 2, 3
_LOG_DRIFT, _LOG_WARNING, _LAMBDA_SQ, _C_LAMBDA_SQ, _ONE_MINUS_LAMBDA = 4, 5, 6, 7, 8
# A weighted sample (river's SampleInfo) takes three slots from its offset: the weighted
# mean, whether it has seen a value, and its independent bounded condition (ibc).
_EWMA, _INIT, _IBC = 0, 1, 2
_TOTAL, _S1_INCR, _S2_INCR, _S1_DECR, _S2_DECR = 9, 12, 15, 18, 21
_INCR_CUT, _DECR_CUT, _DRIFT, _WARNING = 24, 25, 26, 27
_SIZE = 28


@njit(cache=True)
def _fresh_sample(state: np.ndarray, at: int) -> None:
    state[at + _EWMA] = 0.0
    state[at + _INIT] = 0.0
    state[at + _IBC] = 1.0


@njit(cache=True)
def _copy_sample(state: np.ndarray, source: int, target: int) -> None:
    state[target + _EWMA] = state[source + _EWMA]
    state[target + _INIT] = state[source + _INIT]
    state[target + _IBC] = state[source + _IBC]


@njit(cache=True)
def _update_sample(state: np.ndarray, at: int, x: float) -> None:
    # river's EWMean (Rust): the first value is taken as is, then
    # mean = alpha * x + (1 - alpha) * mean, with (1 - alpha) computed once.
    if state[at + _INIT] == 0.0:
        state[at + _EWMA] = x
    else:
        state[at + _EWMA] = state[_LAMBDA] * x + state[_ONE_MINUS_LAMBDA] * state[at + _EWMA]
    state[at + _INIT] = 1.0
    state[at + _IBC] = state[_LAMBDA_SQ] + state[_C_LAMBDA_SQ] * state[at + _IBC]


@njit(cache=True)
def _mcdiarmid_bound(ibc: float, log_confidence: float) -> float:
    return math.sqrt(ibc * log_confidence / 2)


@njit(cache=True)
def _has_mean_changed(state: np.ndarray, first: int, second: int, log_confidence: float) -> bool:
    # Whether the weighted mean of ``second`` exceeds that of ``first`` beyond the bound.
    if state[first + _INIT] == 0.0 or state[second + _INIT] == 0.0:
        return False
    bound = _mcdiarmid_bound(state[first + _IBC] + state[second + _IBC], log_confidence)
    return state[second + _EWMA] - state[first + _EWMA] > bound


@njit(cache=True)
def _reset(state: np.ndarray) -> None:
    for at in (_TOTAL, _S1_INCR, _S2_INCR, _S1_DECR, _S2_DECR):
        _fresh_sample(state, at)
    state[_INCR_CUT] = np.inf
    state[_DECR_CUT] = -np.inf
    state[_DRIFT] = 0.0
    state[_WARNING] = 0.0


@njit(cache=True, inline="always")
def _step(state: np.ndarray, x: float, cuts: np.ndarray, i: int) -> int:
    # river resets at the start of the update that follows a drift.
    if state[_DRIFT] != 0.0:
        _reset(state)

    _update_sample(state, _TOTAL, x)
    total = state[_TOTAL + _EWMA]
    eps = _mcdiarmid_bound(state[_TOTAL + _IBC], state[_LOG_DRIFT])

    # A new lowest (mean + bound) restarts the comparison for increases.
    if total + eps < state[_INCR_CUT]:
        state[_INCR_CUT] = total + eps
        _copy_sample(state, _TOTAL, _S1_INCR)
        _fresh_sample(state, _S2_INCR)
    else:
        _update_sample(state, _S2_INCR, x)

    if _has_mean_changed(state, _S1_INCR, _S2_INCR, state[_LOG_DRIFT]):
        state[_WARNING] = 0.0
        state[_DRIFT] = 1.0
        record_cut(cuts, i, state[_S1_INCR + _EWMA], state[_S2_INCR + _EWMA], np.nan, np.nan)
    elif _has_mean_changed(state, _S1_INCR, _S2_INCR, state[_LOG_WARNING]):
        state[_WARNING] = 1.0
        state[_DRIFT] = 0.0
    else:
        state[_WARNING] = 0.0
        state[_DRIFT] = 0.0

    # river keeps the decrease statistics one-sided too, but nothing observable reads them
    # then, so they are only maintained for the two-sided test.
    if state[_TWO_SIDED] != 0.0:
        if total - eps > state[_DECR_CUT]:
            state[_DECR_CUT] = total - eps
            _copy_sample(state, _TOTAL, _S1_DECR)
            _fresh_sample(state, _S2_DECR)
        else:
            _update_sample(state, _S2_DECR, x)
        # river raises the flags for a decrease without lowering one set by an increase.
        if _has_mean_changed(state, _S2_DECR, _S1_DECR, state[_LOG_DRIFT]):
            if state[_DRIFT] == 0.0:  # an increase, when both fire, is the one reported
                record_cut(
                    cuts, i, state[_S1_DECR + _EWMA], state[_S2_DECR + _EWMA], np.nan, np.nan
                )
            state[_DRIFT] = 1.0
        elif _has_mean_changed(state, _S2_DECR, _S1_DECR, state[_LOG_WARNING]):
            state[_WARNING] = 1.0

    if state[_DRIFT] != 0.0:
        return DRIFT
    return WARNING if state[_WARNING] != 0.0 else NONE


@njit(cache=True, _nrt=False)
def _run_kernel(state: np.ndarray, xs: np.ndarray, flags: np.ndarray, cuts: np.ndarray) -> None:
    for i in range(xs.shape[0]):
        flags[i] = _step(state, xs[i], cuts, i)


@njit(cache=True, _nrt=False)
def _run_bank_kernel(
    states: np.ndarray, stream_ids: np.ndarray, xs: np.ndarray, flags: np.ndarray, cuts: np.ndarray
) -> None:
    for i in range(xs.shape[0]):
        flags[i] = _step(states[stream_ids[i]], xs[i], cuts, i)


class HDDM_W(ChangeDetector):  # noqa: N801  (the method's published name)
    """Hoeffding Drift Detection Method, weighted test: a shift in a bounded weighted mean.

    Like ``HDDM_A`` but with exponentially weighted means (weight ``lambda_val`` on the
    newest value) compared under McDiarmid's bound, so it forgets old values and follows
    gradual changes more closely. Needs labels when fed a 0/1 error indicator (1 = wrong
    prediction); any signal bounded in [0, 1] works (a normalised loss, a rate).

    Same parameters, defaults, warnings and detections as ``river.drift.binary.HDDMW``
    (river 0.26), including river's behaviour after a drift (the statistics restart at the
    next update) and, with ``two_sided_test``, river's flags: a decrease signals drift too,
    and a decrease can raise the warning flag alongside a drift from an increase
    (``update_many`` then reports a drift only). Values outside [0, 1] raise ``ValueError``
    (the bound does not hold for them).

    At a drift, the two sides of the change (``drift_before_mean`` and ``drift_after_mean``
    in ``update_many``'s result, ``last_drift_*`` after ``update``) are the two weighted
    means the test compared: *before* the weighted mean up to the cut point (where the mean
    plus its bound was lowest; for a two-sided decrease, where the mean minus its bound was
    highest; the increase, if both fire), *after* the weighted mean of the values since. The
    counts are NaN: weighted means have no sample size.

    Parameters
    ----------
    drift_confidence
        Significance of the drift test, in (0, 1); smaller is more conservative.
    warning_confidence
        Significance of the warning test, in [``drift_confidence``, 1).
    lambda_val
        Weight of the newest value in the weighted means, in (0, 1]; larger forgets faster.
    two_sided_test
        Also detect decreases of the mean (river's two-sided test). Off: increases only.

    Examples
    --------
    river's own example stream: 1000 fair coin flips, then 1000 errors with probability 0.7.

    >>> import random
    >>> from driftline.detectors import HDDM_W
    >>> rng = random.Random(42)
    >>> data_stream = rng.choices([0, 1], k=1000)
    >>> data_stream = data_stream + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> hddm_w = HDDM_W()
    >>> found = hddm_w.update_many(data_stream)
    >>> found.drift.tolist()
    [1077]
    >>> int(found.warning[0])
    451
    """

    _params: ClassVar[tuple[str, ...]] = (
        "drift_confidence",
        "warning_confidence",
        "lambda_val",
        "two_sided_test",
    )
    has_warning: ClassVar[bool] = True
    binary_input: ClassVar[bool] = True

    def __init__(
        self,
        drift_confidence: float = 0.001,
        warning_confidence: float = 0.005,
        lambda_val: float = 0.05,
        two_sided_test: bool = False,
    ) -> None:
        check_confidences(drift_confidence, warning_confidence)
        if not 0 < lambda_val <= 1:
            raise ValueError(f"lambda_val must be in (0, 1], got {lambda_val!r}")
        if two_sided_test not in (True, False):
            raise ValueError(f"two_sided_test must be a bool, got {two_sided_test!r}")
        self.drift_confidence = float(drift_confidence)
        self.warning_confidence = float(warning_confidence)
        self.lambda_val = float(lambda_val)
        self.two_sided_test = bool(two_sided_test)
        super().__init__()

    def _initial_state(self) -> np.ndarray:
        state = np.zeros(_SIZE, dtype=np.float64)
        lam = self.lambda_val
        state[_DRIFT_CONFIDENCE] = self.drift_confidence
        state[_WARNING_CONFIDENCE] = self.warning_confidence
        state[_LAMBDA] = lam
        state[_TWO_SIDED] = float(self.two_sided_test)
        # The very expressions river evaluates, so the bounds and weights match bit for bit.
        state[_LOG_DRIFT] = math.log(1 / self.drift_confidence)
        state[_LOG_WARNING] = math.log(1 / self.warning_confidence)
        state[_LAMBDA_SQ] = lam * lam
        state[_C_LAMBDA_SQ] = (1 - lam) ** 2
        state[_ONE_MINUS_LAMBDA] = 1.0 - lam
        _reset(state)
        return state

    def _run(self, state: np.ndarray, xs: np.ndarray, flags: np.ndarray, cuts: np.ndarray) -> None:
        check_unit_interval(xs, type(self).__name__)
        _run_kernel(state, xs, flags, cuts)

    def _run_bank(
        self,
        states: np.ndarray,
        stream_ids: np.ndarray,
        xs: np.ndarray,
        flags: np.ndarray,
        cuts: np.ndarray,
    ) -> None:
        check_unit_interval(xs, type(self).__name__)
        _run_bank_kernel(states, stream_ids, xs, flags, cuts)

    @property
    def warning_detected(self) -> bool:
        """Whether river's warning flag is up after the last update (may be true with drift)."""
        return bool(self._state[_WARNING])

    @property
    def weighted_mean(self) -> float:
        """Exponentially weighted mean of the values since the last reset."""
        return float(self._state[_TOTAL + _EWMA])
