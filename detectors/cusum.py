"""Two-sided tabular CUSUM (Page 1954, as in Montgomery's *Introduction to Statistical Quality
Control*, section 9.1), with the in-control mean and standard deviation given or estimated over
a warm-up.

No river peer: ``tests/detectors/test_cusum_ewma.py`` checks the kernel against a plain Python
rendering of the textbook recursions.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from numba import njit

from .base import DRIFT, NONE, ChangeDetector, record_cut

# State layout: hyper-parameters (NaN = estimate it), then running statistics.
_K, _H, _WARM_START, _TARGET, _SIGMA = 0, 1, 2, 3, 4
_N, _W_MEAN, _W_S, _MU, _SD, _C_PLUS, _C_MINUS, _DRIFT = range(5, 13)
# Montgomery's N+ and N-: values since C+ (C-) was last zero, for the report at a drift.
_N_PLUS, _N_MINUS = 13, 14
_SIZE = 15

# Shared with the EWMA chart: the warm-up that estimates the in-control mean and std.
# Offsets within a detector's state are passed in, so both layouts can use them.


@njit(cache=True, inline="always")
def warm_up_length(state: np.ndarray, target: int, sigma: int, warm_start: int) -> float:
    """Values spent estimating: ``warm_start`` if the mean or the std is unknown, else 0."""
    if math.isnan(state[target]) or math.isnan(state[sigma]):
        return state[warm_start]
    return 0.0


@njit(cache=True, inline="always")
def warm_up_update(state: np.ndarray, x: float, n: float, w_mean: int, w_s: int) -> None:
    """Welford's running mean and sum of squared deviations (``n`` counts ``x``): stable,
    and exact on a run of one repeated value (the mean stays that value, the sum 0)."""
    mean_old = state[w_mean]
    mean = mean_old + (x - mean_old) / n
    state[w_mean] = mean
    state[w_s] += (x - mean_old) * (x - mean)


@njit(cache=True, inline="always")
def in_control(
    state: np.ndarray, n: float, target: int, sigma: int, w_mean: int, w_s: int
) -> tuple[float, float]:
    """The in-control (mean, std): given values, else the warm-up's (sample std, n - 1)."""
    mu = state[w_mean] if math.isnan(state[target]) else state[target]
    sd = math.sqrt(state[w_s] / (n - 1.0)) if math.isnan(state[sigma]) else state[sigma]
    return mu, sd


@njit(cache=True)
def _reset(state: np.ndarray) -> None:
    state[_N] = 0.0
    state[_W_MEAN] = 0.0
    state[_W_S] = 0.0
    # Known parameters are in force from the first value; estimated ones after the warm-up.
    state[_MU] = state[_TARGET]
    state[_SD] = state[_SIGMA]
    state[_C_PLUS] = 0.0
    state[_C_MINUS] = 0.0
    state[_DRIFT] = 0.0
    state[_N_PLUS] = 0.0
    state[_N_MINUS] = 0.0


@njit(cache=True, inline="always")
def _step(state: np.ndarray, x: float, cuts: np.ndarray, i: int) -> int:
    # Like river's detectors: a drift restarts everything (warm-up included) at the next value.
    if state[_DRIFT] != 0.0:
        _reset(state)

    n = state[_N] + 1.0
    state[_N] = n
    warm_up = warm_up_length(state, _TARGET, _SIGMA, _WARM_START)
    if n <= warm_up:
        warm_up_update(state, x, n, _W_MEAN, _W_S)
        if n == warm_up:
            mu, sd = in_control(state, n, _TARGET, _SIGMA, _W_MEAN, _W_S)
            state[_MU] = mu
            state[_SD] = sd
        return NONE

    mu = state[_MU]
    sd = state[_SD]
    slack = state[_K] * sd
    # Montgomery (9.2), (9.3): C+ = max(0, x - (mu0 + K) + C+), C- = max(0, (mu0 - K) - x + C-)
    c_plus = max(0.0, x - (mu + slack) + state[_C_PLUS])
    c_minus = max(0.0, (mu - slack) - x + state[_C_MINUS])
    state[_C_PLUS] = c_plus
    state[_C_MINUS] = c_minus
    n_plus = state[_N_PLUS] + 1.0 if c_plus > 0.0 else 0.0
    n_minus = state[_N_MINUS] + 1.0 if c_minus > 0.0 else 0.0
    state[_N_PLUS] = n_plus
    state[_N_MINUS] = n_minus
    limit = state[_H] * sd
    if c_plus > limit or c_minus > limit:
        state[_DRIFT] = 1.0
        # Montgomery 9.1: the new mean is mu0 + K + C+ / N+ (mu0 - K - C- / N-), i.e. the
        # mean of the values since the sum that crossed (the upper first) was last zero.
        if c_plus > limit:
            after = mu + slack + c_plus / n_plus
            after_n = n_plus
        else:
            after = mu - slack - c_minus / n_minus
            after_n = n_minus
        before_n = state[_WARM_START] if math.isnan(state[_TARGET]) else math.nan
        record_cut(cuts, i, mu, after, before_n, after_n)
        return DRIFT
    return NONE


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


def check_in_control_params(
    warm_start: int, target: float | None, sigma: float | None
) -> tuple[int, float | None, float | None]:
    """Shared by CUSUM and EWMAChart: validated (warm_start, target, sigma)."""
    if isinstance(warm_start, bool) or int(warm_start) != warm_start or warm_start < 0:
        raise ValueError(f"warm_start must be an integer >= 0, got {warm_start!r}")
    if target is not None and not math.isfinite(target):
        raise ValueError(f"target must be a finite number or None (estimate), got {target!r}")
    if sigma is not None and not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0 or None (estimate), got {sigma!r}")
    if sigma is None and warm_start < 2:
        raise ValueError(f"estimating sigma needs warm_start >= 2, got {warm_start}")
    if target is None and warm_start < 1:
        raise ValueError(f"estimating target needs warm_start >= 1, got {warm_start}")
    return (
        int(warm_start),
        None if target is None else float(target),
        None if sigma is None else float(sigma),
    )


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


class CUSUM(ChangeDetector):
    """Two-sided tabular CUSUM: a sustained shift of the mean, up or down.

    Montgomery's tabular CUSUM (*Introduction to Statistical Quality Control*, 9.1) with
    the reference value and decision interval in units of the in-control standard deviation
    ``sigma``: ``K = k * sigma``, ``H = h * sigma``, and for each value ``x``

    ``C+ = max(0, x - (target + K) + C+)``, ``C- = max(0, (target - K) - x + C-)``;

    drift when ``C+ > H`` or ``C- > H``. With the defaults ``k = 0.5``, ``h = 5`` the chart
    is tuned to a shift of one sigma, with an in-control average run length of about 465
    values for normal data, and about 10 after a one-sigma shift (Montgomery's ARL table
    for the tabular CUSUM). Suits numeric signals with a stable in-control level: a
    feature, a score, a latency, a per-event loss. Needs no labels. No warning zone.

    ``target`` and ``sigma`` are the in-control mean and standard deviation. Leave either as
    ``None`` to estimate it over the first ``warm_start`` values (sample mean and sample
    standard deviation with ``n - 1``, by Welford's recurrences
    ``m += (x - m) / n``, ``S += (x - m_old) (x - m)``); no drift is signalled during the
    warm-up, and
    monitoring starts with the next value. Like river's detectors, a drift restarts the
    detector at the next value: the sums go back to zero and estimated parameters are
    estimated afresh on the new regime (given ones stay, so a lasting shift keeps
    signalling). A warm-up of identical values estimates ``sigma = 0``, after which any
    departure from that value signals drift.

    At a drift, the two sides of the change (``drift_before_mean`` / ``drift_before_n`` and
    ``drift_after_mean`` / ``drift_after_n`` in ``update_many``'s result, ``last_drift_*``
    after ``update``): *before* is the in-control mean in force (its count is the warm-up
    length when it was estimated, NaN when ``target`` was given); *after* is Montgomery's
    estimate of the new mean, ``target + K + C+ / N+`` (or ``target - K - C- / N-``) for the
    sum that crossed (the upper, if both did), which is the mean of the ``N+`` (``N-``)
    values since that sum was last zero, with ``N+`` (``N-``) as its count.

    Parameters
    ----------
    k
        Reference value (slack) in sigmas: half the shift, in sigmas, to detect fastest.
    h
        Decision interval in sigmas.
    warm_start
        Values used to estimate what is not given (at least 2 to estimate ``sigma``). Longer
        than river's 30: limits from short samples misjudge sigma and move the false-alarm
        rate far from the design value.
    target
        In-control mean, or ``None`` to estimate it.
    sigma
        In-control standard deviation, or ``None`` to estimate it.

    Examples
    --------
    A seeded normal stream whose mean moves up by 1.5 sigma at index 500. The warm-up learns
    the first regime; after the drift at 502 the detector learns the second, where 816 is a
    false alarm of the kind the defaults allow about once per 465 in-control values.

    >>> import numpy as np
    >>> from driftline.detectors import CUSUM
    >>> rng = np.random.default_rng(19)
    >>> xs = np.concatenate([rng.normal(10, 2, 500), rng.normal(13, 2, 500)])
    >>> CUSUM().update_many(xs).drift.tolist()
    [502, 816]

    With the in-control mean and standard deviation known there is no warm-up; here the mean
    moves up by one sigma at index 300:

    >>> rng = np.random.default_rng(1)
    >>> xs = np.concatenate([rng.normal(10, 2, 300), rng.normal(12, 2, 30)])
    >>> CUSUM(target=10.0, sigma=2.0).update_many(xs).drift.tolist()
    [309]
    """

    _params: ClassVar[tuple[str, ...]] = ("k", "h", "warm_start", "target", "sigma")

    def __init__(
        self,
        k: float = 0.5,
        h: float = 5.0,
        warm_start: int = 100,
        target: float | None = None,
        sigma: float | None = None,
    ) -> None:
        if not (math.isfinite(k) and k >= 0):
            raise ValueError(f"k (the slack, in sigmas) must be a finite number >= 0, got {k!r}")
        if not (math.isfinite(h) and h > 0):
            raise ValueError(f"h (the decision interval, in sigmas) must be finite > 0, got {h!r}")
        self.k = float(k)
        self.h = float(h)
        self.warm_start, self.target, self.sigma = check_in_control_params(
            warm_start, target, sigma
        )
        super().__init__()

    def _initial_state(self) -> np.ndarray:
        state = np.zeros(_SIZE, dtype=np.float64)
        state[_K] = self.k
        state[_H] = self.h
        state[_WARM_START] = self.warm_start
        state[_TARGET] = _nan_if_none(self.target)
        state[_SIGMA] = _nan_if_none(self.sigma)
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
    def in_control_mean(self) -> float:
        """The mean in force (NaN while it is being estimated)."""
        return float(self._state[_MU])

    @property
    def in_control_sigma(self) -> float:
        """The standard deviation in force (NaN while it is being estimated)."""
        return float(self._state[_SD])

    @property
    def c_plus(self) -> float:
        """Upper cumulative sum ``C+`` (in the units of the signal)."""
        return float(self._state[_C_PLUS])

    @property
    def c_minus(self) -> float:
        """Lower cumulative sum ``C-`` (in the units of the signal)."""
        return float(self._state[_C_MINUS])
