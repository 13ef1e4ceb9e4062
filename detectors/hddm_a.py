"""HDDM_A (Hoeffding drift detection, average test; Frias-Blanco et al. 2014), exact against
river 0.26.

The state array holds the hyper-parameters and the logarithms river recomputes on every
update (same expressions, evaluated once), then the running statistics. The arithmetic mirrors
``river.drift.binary.HDDMA`` operation by operation, so detections are bit-identical.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from numba import njit

from .base import DRIFT, NONE, WARNING, ChangeDetector, record_cut

# State layout: hyper-parameters and constants derived from them, then running statistics.
# Each running mean is a (count, mean) pair, like river's stats.Mean.
_DRIFT_CONFIDENCE, _WARNING_CONFIDENCE, _TWO_SIDED = 0, 1, 2
_LOG_BOUND, _LOG_DRIFT, _LOG_WARNING = 3, 4, 5
_Z_N, _Z_MEAN, _MIN_N, _MIN_MEAN, _MAX_N, _MAX_MEAN, _DRIFT, _WARNING = range(6, 14)
_SIZE = 14


@njit(cache=True)
def first_outside_unit(xs: np.ndarray) -> int:
    """Index of the first value outside [0, 1], or -1."""
    for i in range(xs.shape[0]):
        if not 0.0 <= xs[i] <= 1.0:
            return i
    return -1


def check_unit_interval(xs: np.ndarray, name: str) -> None:
    """Refuse values outside [0, 1] (Hoeffding's bound assumes them) before any state change."""
    bad = first_outside_unit(xs)
    if bad >= 0:
        raise ValueError(
            f"{name} takes values in [0, 1] (a 0/1 error indicator, or a bounded loss); "
            f"value at index {bad} is {xs[bad]!r}"
        )


@njit(cache=True)
def _reset(state: np.ndarray) -> None:
    for i in range(_Z_N, _SIZE):
        state[i] = 0.0


@njit(cache=True)
def _hoeffding_bound(n: float, log_bound: float) -> float:
    return math.sqrt(1.0 / (2 * n) * log_bound)


@njit(cache=True)
def _mean_changed(n_cut: float, n: float, mean_diff: float, log_confidence: float) -> bool:
    # river's _mean_incr / _mean_decr: mean_diff is the difference in the tested direction.
    if n_cut == n:
        return False
    m = (n - n_cut) / n_cut * (1.0 / n)
    eps = math.sqrt(m / 2 * log_confidence)
    return mean_diff >= eps


@njit(cache=True, inline="always")
def _record_split(cuts, i, n, mean, n_cut, cut_mean):
    """The mean up to the cut point against the mean of the values since (recovered from
    the two running means; the test never fires with the cut at the newest value)."""
    n_after = n - n_cut
    record_cut(cuts, i, cut_mean, (n * mean - n_cut * cut_mean) / n_after, n_cut, n_after)


@njit(cache=True, inline="always")
def _step(state: np.ndarray, x: float, cuts: np.ndarray, i: int) -> int:
    # river resets at the start of the update that follows a drift.
    if state[_DRIFT] != 0.0:
        _reset(state)

    # stats.Mean.update with w = 1: n += w; mean += (w / n) * (x - mean)
    n = state[_Z_N] + 1.0
    state[_Z_N] = n
    z = state[_Z_MEAN] + (1.0 / n) * (x - state[_Z_MEAN])
    state[_Z_MEAN] = z
    two_sided = state[_TWO_SIDED] != 0.0

    # The cut points start as copies of the global mean.
    if state[_MIN_N] == 0.0:
        state[_MIN_N] = n
        state[_MIN_MEAN] = z
    if state[_MAX_N] == 0.0:
        state[_MAX_N] = n
        state[_MAX_MEAN] = z

    log_bound = state[_LOG_BOUND]
    eps_z = _hoeffding_bound(n, log_bound)
    eps_x = _hoeffding_bound(state[_MIN_N], log_bound)
    if state[_MIN_MEAN] + eps_x >= z + eps_z:
        state[_MIN_N] = n
        state[_MIN_MEAN] = z
    # The decrease cut point only matters to the two-sided test; river updates it anyway, but
    # nothing observable depends on it when one-sided, so skip the work.
    if two_sided:
        eps_x = _hoeffding_bound(state[_MAX_N], log_bound)
        if state[_MAX_MEAN] - eps_x <= z - eps_z:
            state[_MAX_N] = n
            state[_MAX_MEAN] = z

    min_n = state[_MIN_N]
    increase = z - state[_MIN_MEAN]
    if _mean_changed(min_n, n, increase, state[_LOG_DRIFT]):
        state[_WARNING] = 0.0
        state[_DRIFT] = 1.0
        _record_split(cuts, i, n, z, min_n, state[_MIN_MEAN])
    elif _mean_changed(min_n, n, increase, state[_LOG_WARNING]):
        state[_WARNING] = 1.0
        state[_DRIFT] = 0.0
    else:
        state[_WARNING] = 0.0
        state[_DRIFT] = 0.0

    if two_sided:
        # river raises the flags for a decrease without lowering one set by an increase.
        max_n = state[_MAX_N]
        decrease = state[_MAX_MEAN] - z
        if _mean_changed(max_n, n, decrease, state[_LOG_DRIFT]):
            if state[_DRIFT] == 0.0:  # an increase, when both fire, is the one reported
                _record_split(cuts, i, n, z, max_n, state[_MAX_MEAN])
            state[_DRIFT] = 1.0
        elif _mean_changed(max_n, n, decrease, state[_LOG_WARNING]):
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


def check_confidences(drift_confidence: float, warning_confidence: float) -> None:
    """Shared by HDDM_A and HDDM_W: both are probabilities, drift the stricter one."""
    if not 0 < drift_confidence < 1:
        raise ValueError(f"drift_confidence must be in (0, 1), got {drift_confidence!r}")
    if not drift_confidence <= warning_confidence < 1:
        raise ValueError(
            "warning_confidence must be in [drift_confidence, 1), got "
            f"{warning_confidence!r} (drift_confidence={drift_confidence!r})"
        )


class HDDM_A(ChangeDetector):  # noqa: N801  (the method's published name)
    """Hoeffding Drift Detection Method, average test: a shift in a bounded mean.

    Compares the running mean of everything since the last drift with the mean up to the
    cut point where the mean (plus its Hoeffding bound) was lowest; a difference beyond a
    Hoeffding bound at ``warning_confidence`` warns, at ``drift_confidence`` signals drift.
    Distribution-free, with no warm-up parameter. Needs labels when fed a 0/1 error
    indicator (1 = wrong prediction); any signal bounded in [0, 1] works (a normalised loss,
    a rate).

    Same parameters, defaults, warnings and detections as ``river.drift.binary.HDDMA``
    (river 0.26), including river's behaviour after a drift (the statistics restart at the
    next update) and, with ``two_sided_test``, river's flags: a decrease signals drift too,
    and a decrease can raise the warning flag alongside a drift from an increase
    (``update_many`` then reports a drift only). Values outside [0, 1] raise ``ValueError``
    (the bound does not hold for them).

    At a drift, the two sides of the change (``drift_before_mean`` / ``drift_before_n`` and
    ``drift_after_mean`` / ``drift_after_n`` in ``update_many``'s result, ``last_drift_*``
    after ``update``) are split at the test's cut point (for an increase the one where the
    mean plus its bound was lowest; for a two-sided decrease the one where the mean minus its
    bound was highest; the increase, if both fire): *before* is the mean and count of the
    values up to it since the last reset, *after* of the values since (recovered from the
    running means).

    Parameters
    ----------
    drift_confidence
        Significance of the drift test, in (0, 1); smaller is more conservative.
    warning_confidence
        Significance of the warning test, in [``drift_confidence``, 1).
    two_sided_test
        Also detect decreases of the mean (river's two-sided test). Off: increases only.

    Examples
    --------
    river's own example stream: 1000 fair coin flips, then 1000 errors with probability 0.7.

    >>> import random
    >>> from driftline.detectors import HDDM_A
    >>> rng = random.Random(42)
    >>> data_stream = rng.choices([0, 1], k=1000)
    >>> data_stream = data_stream + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> hddm_a = HDDM_A()
    >>> found = hddm_a.update_many(data_stream)
    >>> found.drift.tolist()
    [1206]
    >>> int(found.warning[0])
    451
    """

    _params: ClassVar[tuple[str, ...]] = (
        "drift_confidence",
        "warning_confidence",
        "two_sided_test",
    )
    has_warning: ClassVar[bool] = True
    binary_input: ClassVar[bool] = True

    def __init__(
        self,
        drift_confidence: float = 0.001,
        warning_confidence: float = 0.005,
        two_sided_test: bool = False,
    ) -> None:
        check_confidences(drift_confidence, warning_confidence)
        if two_sided_test not in (True, False):
            raise ValueError(f"two_sided_test must be a bool, got {two_sided_test!r}")
        self.drift_confidence = float(drift_confidence)
        self.warning_confidence = float(warning_confidence)
        self.two_sided_test = bool(two_sided_test)
        super().__init__()

    def _initial_state(self) -> np.ndarray:
        state = np.zeros(_SIZE, dtype=np.float64)
        state[_DRIFT_CONFIDENCE] = self.drift_confidence
        state[_WARNING_CONFIDENCE] = self.warning_confidence
        state[_TWO_SIDED] = float(self.two_sided_test)
        # The very expressions river evaluates on each update, so the bounds match bit for bit.
        state[_LOG_BOUND] = math.log(1.0 / self.drift_confidence)
        state[_LOG_DRIFT] = math.log(2.0 / self.drift_confidence)
        state[_LOG_WARNING] = math.log(2.0 / self.warning_confidence)
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
    def n(self) -> int:
        """Values seen since the start or the last reset (a reset follows each drift)."""
        return int(self._state[_Z_N])

    @property
    def mean(self) -> float:
        """Running mean of the values seen since the last reset."""
        return float(self._state[_Z_MEAN])
