"""EDDM (Early Drift Detection Method, Baena-Garcia et al. 2006), exact against river 0.26.

The state array holds the hyper-parameters first (so the Numba step needs nothing else and a
bank row is self-contained), then the running statistics. The arithmetic mirrors
``river.drift.binary.EDDM`` operation by operation, so detections are bit-identical.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from numba import njit

from .base import DRIFT, NONE, WARNING, ChangeDetector, record_cut
from .ddm import check_binary

# State layout: hyper-parameters, then running statistics. The count of errors doubles as
# the count of the running mean/variance of the distances between errors (river's Var.n).
_WARM_START, _ALPHA, _BETA, _HALF = 0, 1, 2, 3
_N, _LAST_ERROR, _N_ERRORS, _DIST_MEAN, _DIST_S, _P2S_MAX, _DRIFT, _WARNING = range(4, 12)
# Not read by the test: values and errors seen at the maximum of p' + 2 s', for the report
# at a drift.
_N_AT_MAX, _ERRORS_AT_MAX = 12, 13
_SIZE = 14


@njit(cache=True)
def river_sqrt(value: float, half: float) -> float:
    """``value ** 0.5`` exactly as river's Python computes it: C ``pow``, not ``sqrt``.

    The two differ in the last bit for about 1 value in 1000, and LLVM rewrites
    ``value ** 0.5`` into ``sqrt`` when it can see the constant; taking the exponent from
    the state (always 0.5) keeps it a real ``pow`` call.
    """
    return value**half


# Relative distance from a decision boundary beyond which a last-bit difference in the
# standard deviation cannot change the decision (pow and sqrt differ by at most 1 ulp, ~1e-16).
_SAFE_MARGIN = 1e-9


@njit(cache=True)
def _p2s(mean: float, variance: float, state: np.ndarray) -> float:
    """river's ``p' + 2 s'``, with ``s'`` rounded as river rounds it when that can matter.

    C ``pow`` costs several times ``sqrt``. The value is only compared with the running
    maximum (level 1) and the two levels ``alpha`` and ``beta``, and only stored when it is a
    new maximum; so the cheap sqrt decides whenever the level is clear of all three, and the
    exact pow is taken near any of them (including every new maximum).
    """
    fast = mean + 2 * math.sqrt(variance)
    p2s_max = state[_P2S_MAX]
    if p2s_max > 0.0:
        level = fast / p2s_max
        clear = (
            level < 1.0 - _SAFE_MARGIN
            and abs(level - state[_ALPHA]) > _SAFE_MARGIN
            and abs(level - state[_BETA]) > _SAFE_MARGIN
        )
        if clear:
            return fast
    return mean + 2 * river_sqrt(variance, state[_HALF])


@njit(cache=True)
def _reset(state: np.ndarray) -> None:
    state[_N] = 0.0
    state[_LAST_ERROR] = 0.0
    state[_N_ERRORS] = 0.0
    state[_DIST_MEAN] = 0.0
    state[_DIST_S] = 0.0
    state[_P2S_MAX] = -1.0
    state[_DRIFT] = 0.0
    state[_WARNING] = 0.0
    state[_N_AT_MAX] = 0.0
    state[_ERRORS_AT_MAX] = 0.0


@njit(cache=True, inline="always")
def _step(state: np.ndarray, x: float, cuts: np.ndarray, i: int) -> int:
    # river resets at the start of the update that follows a drift.
    if state[_DRIFT] != 0.0:
        _reset(state)

    n = state[_N] + 1.0
    state[_N] = n
    # Only errors move the statistics; after a correct value the flags stay as they were
    # (river's warning_detected persists until the next error decides again).
    if x == 1.0:
        n_errors = state[_N_ERRORS] + 1.0
        state[_N_ERRORS] = n_errors
        # stats.Var.update (Welford, w = 1) with the distance since the previous error.
        distance = n - state[_LAST_ERROR]
        mean_old = state[_DIST_MEAN]
        mean = mean_old + (1.0 / n_errors) * (distance - mean_old)
        state[_DIST_MEAN] = mean
        state[_DIST_S] += (distance - mean_old) * (distance - mean)

        if n > state[_WARM_START]:
            variance = state[_DIST_S] / (n_errors - 1) if n_errors > 1 else 0.0
            p2s = _p2s(mean, variance, state)
            if p2s > state[_P2S_MAX]:
                state[_P2S_MAX] = p2s
                state[_N_AT_MAX] = n
                state[_ERRORS_AT_MAX] = n_errors
            elif n_errors > state[_WARM_START]:
                level = p2s / state[_P2S_MAX]
                if level < state[_BETA]:
                    # river leaves the warning flag as it was when drift fires.
                    state[_DRIFT] = 1.0
                    # error rate up to the maximum vs since it
                    n0 = state[_N_AT_MAX]
                    e0 = state[_ERRORS_AT_MAX]
                    record_cut(cuts, i, e0 / n0, (n_errors - e0) / (n - n0), n0, n - n0)
                elif level < state[_ALPHA]:
                    state[_WARNING] = 1.0
                else:
                    state[_WARNING] = 0.0

        state[_LAST_ERROR] = n

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


class EDDM(ChangeDetector):
    r"""Early Drift Detection Method: errors coming closer together.

    Tracks the mean ``p'`` and standard deviation ``s'`` of the distance (in values) between
    consecutive errors and the maximum of ``p' + 2 s'``. When the ratio
    ``(p' + 2 s') / max(p' + 2 s')`` falls below ``alpha`` it warns, below ``beta`` it
    signals drift. Reacts to gradual degradation earlier than DDM. Needs labels: the input
    is one 0/1 value per scored event, 1 when the prediction was wrong. Only rising error
    rates are detected, and only when an error arrives.

    Same parameters, defaults, warnings and detections as ``river.drift.binary.EDDM`` (river
    0.26), including river's quirks: the flags are re-evaluated only on errors, so a warning
    persists over the correct values that follow it; and when drift fires the warning flag
    keeps its previous value, so ``drift_detected`` and ``warning_detected`` can both be true.
    ``update_many`` reports such a value as a drift only. After a drift the statistics
    restart at the next update. Values other than 0 and 1 raise ``ValueError`` (river would
    silently count them as non-errors).

    At a drift, the two sides of the change (``drift_before_mean`` / ``drift_before_n`` and
    ``drift_after_mean`` / ``drift_after_n`` in ``update_many``'s result, ``last_drift_*``
    after ``update``) are split where ``p' + 2 s'`` was at its maximum (EDDM's reference):
    *before* is the error rate (mean of the 0/1 values) and count of the values up to it
    since the last reset, *after* of the values since, the drifting error included.

    Parameters
    ----------
    warm_start
        Values seen, and errors seen, (since the start or the last drift) before warning or
        drift can be signalled.
    alpha
        Warning level of the ratio, in (0, 1]; smaller is more conservative.
    beta
        Drift level of the ratio, in (0, ``alpha``]; smaller is more conservative.

    Examples
    --------
    river's own example stream: 1000 fair coin flips, then 1000 errors with probability 0.7,
    with river's less sensitive levels.

    >>> import random
    >>> from driftline.detectors import EDDM
    >>> rng = random.Random(42)
    >>> data_stream = rng.choices([0, 1], k=1000)
    >>> data_stream = data_stream + rng.choices([0, 1], k=1000, weights=[0.3, 0.7])
    >>> eddm = EDDM(alpha=0.8, beta=0.75)
    >>> found = eddm.update_many(data_stream)
    >>> found.drift.tolist()
    [1278]
    >>> int(found.warning[0])
    1059
    """

    _params: ClassVar[tuple[str, ...]] = ("warm_start", "alpha", "beta")
    has_warning: ClassVar[bool] = True
    binary_input: ClassVar[bool] = True

    def __init__(self, warm_start: int = 30, alpha: float = 0.95, beta: float = 0.9) -> None:
        if isinstance(warm_start, bool) or int(warm_start) != warm_start or warm_start < 0:
            raise ValueError(f"warm_start must be an integer >= 0, got {warm_start!r}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha (the warning level) must be in (0, 1], got {alpha!r}")
        if not 0 < beta <= alpha:
            raise ValueError(
                f"beta (the drift level) must be in (0, alpha], got {beta!r} (alpha={alpha!r})"
            )
        self.warm_start = int(warm_start)
        self.alpha = float(alpha)
        self.beta = float(beta)
        super().__init__()

    def _initial_state(self) -> np.ndarray:
        state = np.empty(_SIZE, dtype=np.float64)
        state[_WARM_START] = self.warm_start
        state[_ALPHA] = self.alpha
        state[_BETA] = self.beta
        state[_HALF] = 0.5  # the exponent of river's std; see river_sqrt
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
        """Whether river's warning flag is up after the last update (may be true with drift)."""
        return bool(self._state[_WARNING])

    @property
    def n(self) -> int:
        """Values seen since the start or the last reset (a reset follows each drift)."""
        return int(self._state[_N])

    @property
    def n_errors(self) -> int:
        """Errors seen since the start or the last reset."""
        return int(self._state[_N_ERRORS])

    @property
    def p2s_max(self) -> float:
        """Largest ``p' + 2 s'`` since the last reset (-1 before the warm start is over)."""
        return float(self._state[_P2S_MAX])

    @property
    def mean_distance(self) -> float:
        """Mean distance between consecutive errors since the last reset (``p'``)."""
        return float(self._state[_DIST_MEAN])
