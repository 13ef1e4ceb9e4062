"""DDM (Drift Detection Method, Gama et al. 2004) over a 0/1 error stream, exact against river 0.26.

The state array holds the hyper-parameters first (so the Numba step needs nothing else and a
bank row is self-contained), then the running statistics. The arithmetic mirrors
``river.drift.binary.DDM`` operation by operation, so detections are bit-identical.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from numba import njit

from .base import DRIFT, NONE, WARNING, ChangeDetector, record_cut

# State layout: hyper-parameters, then running statistics.
_WARM_START, _WARNING_THRESHOLD, _DRIFT_THRESHOLD = 0, 1, 2
_N, _P, _P_MIN, _S_MIN, _PS_MIN, _DRIFT, _WARNING = 3, 4, 5, 6, 7, 8, 9
# Not read by the test: errors seen, and values and errors seen where p + s was lowest,
# for the report at a drift.
_ERRORS, _N_MIN, _ERRORS_MIN = 10, 11, 12
_SIZE = 13


@njit(cache=True)
def first_non_binary(xs: np.ndarray) -> int:
    """Index of the first value that is neither 0 nor 1, or -1."""
    for i in range(xs.shape[0]):
        if xs[i] != 0.0 and xs[i] != 1.0:
            return i
    return -1


def check_binary(xs: np.ndarray, name: str) -> None:
    """Refuse anything but 0/1 before the kernel touches the state."""
    bad = first_non_binary(xs)
    if bad >= 0:
        raise ValueError(
            f"{name} takes a 0/1 error indicator (1 = error); value at index {bad} is {xs[bad]!r}"
        )


@njit(cache=True)
def _reset(state: np.ndarray) -> None:
    state[_N] = 0.0
    state[_P] = 0.0
    # river keeps p_min/s_min as None until the first update past the warm start, which
    # always sets them (p + s <= inf); 0 is never read before then.
    state[_P_MIN] = 0.0
    state[_S_MIN] = 0.0
    state[_PS_MIN] = np.inf
    state[_DRIFT] = 0.0
    state[_WARNING] = 0.0
    state[_ERRORS] = 0.0
    state[_N_MIN] = 0.0
    state[_ERRORS_MIN] = 0.0


@njit(cache=True, inline="always")
def _step(state: np.ndarray, x: float, cuts: np.ndarray, i: int) -> int:
    # river resets at the start of the update that follows a drift.
    if state[_DRIFT] != 0.0:
        _reset(state)

    # stats.Mean.update with w = 1: n += w; mean += (w / n) * (x - mean)
    n = state[_N] + 1.0
    state[_N] = n
    p = state[_P] + (1.0 / n) * (x - state[_P])
    state[_P] = p
    errors = state[_ERRORS] + x
    state[_ERRORS] = errors
    # Standard deviation of a Bernoulli proportion.
    s = math.sqrt(p * (1 - p) / n)

    if n > state[_WARM_START]:
        if p + s <= state[_PS_MIN]:
            state[_P_MIN] = p
            state[_S_MIN] = s
            state[_PS_MIN] = p + s
            state[_N_MIN] = n
            state[_ERRORS_MIN] = errors
        p_min = state[_P_MIN]
        s_min = state[_S_MIN]
        state[_WARNING] = 1.0 if p + s > p_min + state[_WARNING_THRESHOLD] * s_min else 0.0
        if p + s > p_min + state[_DRIFT_THRESHOLD] * s_min:
            state[_DRIFT] = 1.0
            state[_WARNING] = 0.0
            # error rate up to the minimum vs since it (which never moves at a drift)
            n0 = state[_N_MIN]
            e0 = state[_ERRORS_MIN]
            record_cut(cuts, i, e0 / n0, (errors - e0) / (n - n0), n0, n - n0)

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


class DDM(ChangeDetector):
    """Drift Detection Method: a rise in a model's error rate.

    Watches the running error rate ``p`` and its binomial standard deviation
    ``s = sqrt(p (1 - p) / n)``, remembers where ``p + s`` was lowest (``p_min``, ``s_min``),
    and warns when ``p + s > p_min + warning_threshold * s_min``, signals drift when
    ``p + s > p_min + drift_threshold * s_min``. Needs labels: the input is one 0/1 value per
    scored event, 1 when the prediction was wrong. Only increases of the error rate are
    detected.

    Same parameters, defaults, warnings and detections as ``river.drift.binary.DDM`` (river
    0.26), including river's behaviour after a drift: the statistics restart at the next
    update. Values other than 0 and 1 raise ``ValueError`` (river would silently fold them
    into the rate, and fail on values above 1).

    At a drift, the two sides of the change (``drift_before_mean`` / ``drift_before_n`` and
    ``drift_after_mean`` / ``drift_after_n`` in ``update_many``'s result, ``last_drift_*``
    after ``update``) are split where ``p + s`` was lowest (DDM's reference): *before* is the
    error rate and count of the values up to it since the last reset (``p_min``, computed
    from the counts), *after* of the values since. That point can lie well before the real
    change, so the *after* rate may be diluted by the old regime.

    Parameters
    ----------
    warm_start
        Values to see (since the start or the last drift) before warning or drift can be
        signalled.
    warning_threshold
        Multiple of ``s_min`` above ``p_min`` that enters the warning zone (2: ~95 %).
    drift_threshold
        Multiple of ``s_min`` above ``p_min`` that signals drift (3: ~99 %). At least
        ``warning_threshold``.

    Examples
    --------
    river's own example stream: 1000 fair coin flips, then 1000 errors with probability 0.7.

    >>> import random
    >>> from driftline.detectors import DDM
    >>> rng = random.Random(42)
    >>> data_stream = rng.choices([0, 1], k=1000)
    >>> data_stream = data_stream + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> ddm = DDM()
    >>> found = ddm.update_many(data_stream)
    >>> found.drift.tolist()
    [1334]

    Warnings come and go; the first one, and the first after the drift, are where river's
    example prints them:

    >>> first_warning = int(found.warning[0])
    >>> first_after_drift = int(found.warning[found.warning > found.drift[0]][0])
    >>> first_warning, first_after_drift
    (1084, 1492)
    """

    _params: ClassVar[tuple[str, ...]] = ("warm_start", "warning_threshold", "drift_threshold")
    has_warning: ClassVar[bool] = True
    binary_input: ClassVar[bool] = True

    def __init__(
        self, warm_start: int = 30, warning_threshold: float = 2.0, drift_threshold: float = 3.0
    ) -> None:
        if isinstance(warm_start, bool) or int(warm_start) != warm_start or warm_start < 0:
            raise ValueError(f"warm_start must be an integer >= 0, got {warm_start!r}")
        if not (np.isfinite(warning_threshold) and warning_threshold > 0):
            raise ValueError(
                f"warning_threshold must be a finite number > 0, got {warning_threshold!r}"
            )
        if not (np.isfinite(drift_threshold) and drift_threshold >= warning_threshold):
            raise ValueError(
                "drift_threshold must be finite and >= warning_threshold, got "
                f"{drift_threshold!r} (warning_threshold={warning_threshold!r})"
            )
        self.warm_start = int(warm_start)
        self.warning_threshold = float(warning_threshold)
        self.drift_threshold = float(drift_threshold)
        super().__init__()

    def _initial_state(self) -> np.ndarray:
        state = np.empty(_SIZE, dtype=np.float64)
        state[_WARM_START] = self.warm_start
        state[_WARNING_THRESHOLD] = self.warning_threshold
        state[_DRIFT_THRESHOLD] = self.drift_threshold
        _reset(state)
        return state

    def _run(self, state: np.ndarray, xs: np.ndarray, flags: np.ndarray, cuts: np.ndarray) -> None:
        check_binary(xs, type(self).__name__)
        _run_kernel(state, xs, flags, cuts)

    def _run_bank(
        self,
        states: np.ndarray,
        stream_ids: np.ndarray,
        xs: np.ndarray,
        flags: np.ndarray,
        cuts: np.ndarray,
    ) -> None:
        check_binary(xs, type(self).__name__)
        _run_bank_kernel(states, stream_ids, xs, flags, cuts)

    @property
    def warning_detected(self) -> bool:
        """Whether the last update left the detector in the warning zone (as river)."""
        return bool(self._state[_WARNING])

    @property
    def n(self) -> int:
        """Values seen since the start or the last reset (a reset follows each drift)."""
        return int(self._state[_N])

    @property
    def error_rate(self) -> float:
        """Running error rate ``p`` since the last reset."""
        return float(self._state[_P])

    @property
    def p_min(self) -> float:
        """Error rate where ``p + s`` was lowest (0 until the warm start is over)."""
        return float(self._state[_P_MIN])

    @property
    def s_min(self) -> float:
        """Standard deviation where ``p + s`` was lowest (0 until the warm start is over)."""
        return float(self._state[_S_MIN])
