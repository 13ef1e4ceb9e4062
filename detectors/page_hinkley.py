"""Page-Hinkley test for a change in the mean of a real-valued signal, exact against river 0.26.

The state array holds the hyper-parameters first (so the Numba step needs nothing else and a
bank row is self-contained), then the running statistics. The arithmetic mirrors
``river.drift.PageHinkley`` operation by operation, so detections are bit-identical.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from .base import DRIFT, NONE, ChangeDetector, record_cut

_MODES = ("up", "down", "both")
_UP, _DOWN, _BOTH = 0, 1, 2

# State layout: hyper-parameters, then running statistics.
_MIN_INSTANCES, _DELTA, _THRESHOLD, _ALPHA, _MODE = 0, 1, 2, 3, 4
_N, _MEAN, _SUM_INC, _SUM_DEC, _MIN_INC, _MAX_DEC, _DRIFT = 5, 6, 7, 8, 9, 10, 11
# Not read by the test: the plain sum of the values, and the count and sum when each
# cumulative sum last reached its extreme (the change point), for the report at a drift.
_SUM, _N_AT_MIN, _SUM_AT_MIN, _N_AT_MAX, _SUM_AT_MAX = 12, 13, 14, 15, 16
_SIZE = 17


@njit(cache=True)
def _reset(state: np.ndarray) -> None:
    state[_N] = 0.0
    state[_MEAN] = 0.0
    state[_SUM_INC] = 0.0
    state[_SUM_DEC] = 0.0
    state[_MIN_INC] = np.inf
    state[_MAX_DEC] = -1.0  # river starts the running maximum at -1, not -inf
    state[_DRIFT] = 0.0
    for k in range(_SUM, _SIZE):
        state[k] = 0.0


@njit(cache=True, inline="always")
def _step(state: np.ndarray, x: float, cuts: np.ndarray, i: int) -> int:
    # river resets at the start of the update that follows a drift.
    if state[_DRIFT] != 0.0:
        _reset(state)

    # stats.Mean.update with w = 1: n += w; mean += (w / n) * (x - mean)
    n = state[_N] + 1.0
    state[_N] = n
    mean = state[_MEAN] + (1.0 / n) * (x - state[_MEAN])
    state[_MEAN] = mean
    dev = x - mean
    total = state[_SUM] + x
    state[_SUM] = total

    alpha = state[_ALPHA]
    delta = state[_DELTA]
    sum_inc = alpha * state[_SUM_INC] + dev - delta
    sum_dec = alpha * state[_SUM_DEC] + dev + delta
    state[_SUM_INC] = sum_inc
    state[_SUM_DEC] = sum_dec
    if sum_inc < state[_MIN_INC]:
        state[_MIN_INC] = sum_inc
        state[_N_AT_MIN] = n
        state[_SUM_AT_MIN] = total
    if sum_dec > state[_MAX_DEC]:
        state[_MAX_DEC] = sum_dec
        state[_N_AT_MAX] = n
        state[_SUM_AT_MAX] = total

    if n >= state[_MIN_INSTANCES]:
        test_inc = sum_inc - state[_MIN_INC]
        test_dec = state[_MAX_DEC] - sum_dec
        threshold = state[_THRESHOLD]
        mode = state[_MODE]
        if mode == _UP:
            drift = test_inc > threshold
        elif mode == _DOWN:
            drift = test_dec > threshold
        else:
            drift = test_inc > threshold or test_dec > threshold
        state[_DRIFT] = 1.0 if drift else 0.0
        if drift:
            # Split at the extreme of the sum that crossed (the increase first): it cannot
            # have moved at this value, so both sides hold values.
            if mode != _DOWN and test_inc > threshold:
                n0 = state[_N_AT_MIN]
                s0 = state[_SUM_AT_MIN]
            else:
                n0 = state[_N_AT_MAX]
                s0 = state[_SUM_AT_MAX]
            record_cut(cuts, i, s0 / n0, (total - s0) / (n - n0), n0, n - n0)

    return DRIFT if state[_DRIFT] != 0.0 else NONE


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


class PageHinkley(ChangeDetector):
    """Page-Hinkley test for a shift in the mean of a real-valued signal.

    Tracks the running mean of everything seen since the last drift and two fading cumulative
    sums of the deviations from it (one for increases, one for decreases); drift is signalled
    when a sum moves more than ``threshold`` away from its own extreme. Suits any numeric
    signal: a feature, a prediction score, a per-event loss. Needs no labels. No warning zone.

    Same parameters, defaults and detections as ``river.drift.PageHinkley`` (river 0.26),
    including river's behaviour after a drift: the statistics restart at the next update.

    At a drift, the two sides of the change (``drift_before_mean`` / ``drift_before_n`` and
    ``drift_after_mean`` / ``drift_after_n`` in ``update_many``'s result, ``last_drift_*``
    after ``update``) are split at the test's own change point: where the cumulative sum that
    crossed ``threshold`` (the increase one, if both did) was at its extreme. *Before* is the
    mean and count of the values up to it since the last reset, *after* of the values since.
    In a long noisy stretch that point can lie well before the real change, so the *after*
    side may mix both regimes: its direction is reliable, its size diluted.

    Parameters
    ----------
    min_instances
        Values to see (since the start or the last drift) before drift can be signalled.
    delta
        Magnitude of change tolerated: subtracted from (``up``) or added to (``down``) each
        deviation from the mean.
    threshold
        The change detection threshold (lambda of the test), in the units of the signal.
    alpha
        Forgetting factor applied to the cumulative sums, in (0, 1].
    mode
        Detect increases of the mean (``"up"``), decreases (``"down"``) or both (``"both"``).

    Examples
    --------
    river's own example stream: 1000 values from {0, 1}, then 1000 from {4, 5, 6, 7}.

    >>> import random
    >>> from driftline.detectors import PageHinkley
    >>> rng = random.Random(12345)
    >>> data_stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)
    >>> ph = PageHinkley()
    >>> ph.update_many(data_stream).drift.tolist()
    [1006]

    One value at a time gives the same answer:

    >>> ph = PageHinkley()
    >>> for i, val in enumerate(data_stream):
    ...     if ph.update(val).drift_detected:
    ...         print(f"Change detected at index {i}, input value: {val}")
    Change detected at index 1006, input value: 5
    """

    _params: ClassVar[tuple[str, ...]] = ("min_instances", "delta", "threshold", "alpha", "mode")

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: str = "both",
    ) -> None:
        if isinstance(min_instances, bool) or int(min_instances) != min_instances:
            raise ValueError(f"min_instances must be an integer, got {min_instances!r}")
        if min_instances < 0:
            raise ValueError(f"min_instances must be >= 0, got {min_instances}")
        if not (np.isfinite(delta) and delta >= 0):
            raise ValueError(f"delta must be a finite number >= 0, got {delta!r}")
        if not (np.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be a finite number > 0, got {threshold!r}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha (the forgetting factor) must be in (0, 1], got {alpha!r}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self.min_instances = int(min_instances)
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.mode = mode
        super().__init__()

    def _initial_state(self) -> np.ndarray:
        state = np.empty(_SIZE, dtype=np.float64)
        state[_MIN_INSTANCES] = self.min_instances
        state[_DELTA] = self.delta
        state[_THRESHOLD] = self.threshold
        state[_ALPHA] = self.alpha
        state[_MODE] = _MODES.index(self.mode)
        _reset(state)
        return state

    def _run(self, state: np.ndarray, xs: np.ndarray, flags: np.ndarray, cuts: np.ndarray) -> None:
        _run_kernel(state, xs, flags, cuts)

    def _run_bank(
        self,
        states: np.ndarray,
        stream_ids: np.ndarray,
        xs: np.ndarray,
        flags: np.ndarray,
        cuts: np.ndarray,
    ) -> None:
        _run_bank_kernel(states, stream_ids, xs, flags, cuts)

    @property
    def n(self) -> int:
        """Values seen since the start or the last reset (a reset follows each drift)."""
        return int(self._state[_N])

    @property
    def mean(self) -> float:
        """Running mean of the values seen since the last reset."""
        return float(self._state[_MEAN])

    @property
    def test_increase(self) -> float:
        """Current statistic for an increase of the mean (compared with ``threshold``)."""
        return float(self._state[_SUM_INC] - self._state[_MIN_INC])

    @property
    def test_decrease(self) -> float:
        """Current statistic for a decrease of the mean (compared with ``threshold``)."""
        return float(self._state[_MAX_DEC] - self._state[_SUM_DEC])
