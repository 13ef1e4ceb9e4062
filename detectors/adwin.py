"""ADWIN: ADaptive WINdowing change detection (Bifet & Gavaldà, 2007), exact to river 0.26.

river 0.26 runs ADWIN in Rust (``river._river_rust.drift.AdaptiveWindowing``, a line-by-line
port of its earlier Cython ``adwin_c.pyx``). This module is the same algorithm as one Numba
kernel over a flat ``float64`` state, with every floating-point operation in river's order so
widths, sums, variances and drift indices come out bit-identical.

The window is an exponential histogram: row ``r`` holds up to ``max_buckets + 1`` buckets,
each summarising ``2**r`` values as (sum, sum of squared deviations). A new value enters row 0;
a row that reaches ``max_buckets + 1`` buckets merges its two oldest into one bucket of the
next row. Every ``clock`` values (once the window is longer than ``grace_period``) each split
of the window into an older part W0 and a newer part W1, at bucket boundaries, is tested; if
the means differ by more than the Hoeffding/Bernstein-style bound the oldest bucket is
dropped and the scan restarts. Like river, once drift is signalled the whole window is
discarded at the next update.

State layout (``float64``, length ``7 + MAX_ROWS * (2 * max_buckets + 4)``)::

    [0] drift signalled by the previous update (1.0 / 0.0)
    [1] tick (river's i32 update counter, wrapping like it)   [2] tick modulo ``clock``
    [3] width   [4] total   [5] variance (sum of squared deviations from the mean)
    [6] number of rows in use (river's bucket list length)
    [7 + r * (2M + 4)]   row r, a ring buffer: bucket count, slot of its oldest bucket,
                         M + 1 bucket sums, M + 1 bucket variances

``MAX_ROWS`` is 64 fixed row slots: with the default ``max_buckets=5`` they hold
``5 * (2**64 - 1)`` values, far past the 2**53 at which a float64 width stops counting
(centuries of a million values a second), so the capacity is never the limit.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit

from .base import DRIFT, NONE, ChangeDetector, record_cut

__all__ = ["ADWIN"]

MAX_ROWS = 64

_DRIFTED, _TICK, _PHASE, _WIDTH, _TOTAL, _VARIANCE, _N_ROWS = 0, 1, 2, 3, 4, 5, 6
_HEADER = 7
_I32_MAX = 2147483647

# error_model="numpy": a division by zero gives inf/nan as in river's Rust, not an exception.
# _nrt=False: the kernels allocate nothing (scratch space comes from the caller), and without
# Numba's reference counting the per-value path runs about a third faster.
_njit = njit(cache=True, error_model="numpy", nogil=True, _nrt=False)
# Small helpers and the per-value step are inlined at Numba IR level: LLVM does not inline
# across the separately compiled (and cached) functions, and a call costs more than they do.
_inline = njit(cache=True, error_model="numpy", nogil=True, _nrt=False, inline="always")


def _state_size(max_buckets: int) -> int:
    return _HEADER + MAX_ROWS * (2 * max_buckets + 4)


@_inline
def _slot(base, start, k, m1):
    """Index of bucket ``k`` (0 = oldest) of the ring-buffered row at ``base``."""
    j = start + k
    if j >= m1:
        j -= m1
    return base + 2 + j


@_inline
def _drop_oldest(state, base, m1, n_elements):
    """river's ``Bucket.compress``: forget the ``n_elements`` oldest buckets of one row.

    Rows are ring buffers, so this moves the start instead of shifting the buckets (river
    shifts them and zeroes the vacated slots; no slot past a row's count is ever read)."""
    start = state[base + 1] + n_elements
    if start >= m1:
        start -= m1
    state[base + 1] = start
    state[base] -= n_elements


@_inline
def _compress(state, max_buckets, stride):
    """river's ``compress_buckets``, entered when row 0 is full: a full row merges its two
    oldest buckets into one bucket of the next row, cascading while rows overflow."""
    m1 = max_buckets + 1
    idx = 0
    while True:
        base = _HEADER + idx * stride
        k = int(state[base])
        if k != m1:
            break
        start = int(state[base + 1])
        s0 = _slot(base, start, 0, m1)
        s1 = _slot(base, start, 1, m1)
        n1 = float(1 << idx)
        # x / 2**idx, as river divides, equals x * 2**-idx bit for bit (both are the
        # correctly rounded x * 2**-idx) and spares two divisions per merge
        inv_n1 = 1.0 / n1
        t0 = state[s0]
        t1 = state[s1]
        v0 = state[s0 + m1]
        v1 = state[s1 + m1]
        mu1 = t0 * inv_n1
        mu2 = t1 * inv_n1
        total12 = t0 + t1
        temp = n1 * 0.5 * (mu1 - mu2) * (mu1 - mu2)
        v12 = v0 + v1 + temp
        if idx + 1 >= MAX_ROWS:
            raise ValueError("ADWIN window exceeds its bucket capacity")
        if idx + 1 >= int(state[_N_ROWS]):
            state[_N_ROWS] = idx + 2
        nbase = base + stride
        nc = int(state[nbase])
        ns = _slot(nbase, int(state[nbase + 1]), nc, m1)
        state[ns] = total12
        state[ns + m1] = v12
        state[nbase] = nc + 1
        _drop_oldest(state, base, m1, 2)
        if nc + 1 <= max_buckets:
            break
        idx += 1


@_njit
def _delete_oldest(state, max_buckets, stride):
    """river's ``delete_element``: drop the oldest bucket (the first of the last row);
    returns the bucket's sum."""
    m1 = max_buckets + 1
    last = int(state[_N_ROWS]) - 1
    base = _HEADER + last * stride
    n = float(1 << last)
    oldest = _slot(base, int(state[base + 1]), 0, m1)
    u = state[oldest]
    v = state[oldest + m1]
    mu = u / n

    width = state[_WIDTH] - n
    state[_WIDTH] = width
    total = state[_TOTAL] - u
    state[_TOTAL] = total
    mu_window = total / width
    inc = v + n * width * (mu - mu_window) * (mu - mu_window) / (n + width)
    state[_VARIANCE] -= inc

    _drop_oldest(state, base, m1, 1)
    # river pops the last row once it is empty. Only with max_buckets=1 can the row before
    # it be empty too; river would then go on to delete from an empty row, a Rust panic
    # ("slice index starts at 1 but ends at 0"), so all empty trailing rows are dropped
    # here -- which is identical wherever river itself runs.
    rows = last + 1
    while rows > 1 and state[_HEADER + (rows - 1) * stride] == 0.0:
        rows -= 1
    state[_N_ROWS] = rows
    return u


@_njit
def _first_cut(state, delta, m1, mwl, stride, scratch, fire):
    """Position (oldest bucket first) of the first cut point that fires, or -1.

    river's ``detect_change`` walks the cut points one by one and stops at the first whose
    mean difference exceeds ``evaluate_cut``'s bound. Here the running sums are accumulated
    in river's order first, then the bound is evaluated for every cut in a loop without
    dependences between iterations, which LLVM vectorises; nothing changes before the first
    firing cut, so it is the same cut, found with the same floating-point operations.
    """
    width = state[_WIDTH]
    n0 = 0.0
    n1 = width
    u0 = 0.0
    u1 = state[_TOTAL]
    n_cuts = 0
    for idx in range(int(state[_N_ROWS]) - 1, -1, -1):
        base = _HEADER + idx * stride
        size = float(1 << idx)
        count = int(state[base])
        j = base + 2 + int(state[base + 1])
        wrap = base + 2 + m1
        for k in range(count):
            if idx == 0 and k == count - 1:
                break
            n0 += size
            n1 -= size
            t = state[j]
            j += 1
            if j == wrap:
                j -= m1
            u0 += t
            u1 -= t
            scratch[0, n_cuts] = n0
            scratch[1, n_cuts] = n1
            scratch[2, n_cuts] = u0
            scratch[3, n_cuts] = u1
            n_cuts += 1
    # evaluate_cut's window-wide terms (river recomputes them per cut: same values)
    delta_prime = np.log(2.0 * np.log(width) / delta)
    mean_variance = state[_VARIANCE] / width
    two_thirds_dp = 2.0 / 3.0 * delta_prime
    any_fire = False
    for c in range(n_cuts):
        a0 = scratch[0, c]
        a1 = scratch[1, c]
        delta_mean = (scratch[2, c] / a0) - (scratch[3, c] / a1)
        m_recip = 1.0 / (a0 - mwl + 1.0) + 1.0 / (a1 - mwl + 1.0)
        epsilon = np.sqrt(2.0 * m_recip * mean_variance * delta_prime) + two_thirds_dp * m_recip
        f = (a1 >= mwl) & (a0 >= mwl) & (abs(delta_mean) > epsilon)
        fire[c] = f
        any_fire |= f
    if any_fire:
        for c in range(n_cuts):
            if fire[c]:
                return c
    return -1


@_inline
def _step(state, x, drifted, tick, phase, width, total, variance, params, scratch, fire, cuts, i):
    """One value through river's ``ADWIN.update``; returns the flag and the new scalars.

    The scalars that change on every value (drift flag, tick, width, total, variance) travel
    in registers; the buckets, and the scalars while a cut scan runs, live in ``state``.
    On a change, the part of the window dropped and the part kept go to ``cuts[:, i]``.
    """
    delta, clock, max_buckets, mwl, grace_period = params
    m1 = max_buckets + 1
    stride = 2 * m1 + 2
    if drifted:
        # river's ADWIN.update: a detector that signalled drift starts afresh
        state[:] = 0.0
        state[_N_ROWS] = 1.0
        tick = 0.0
        phase = 0
        width = 0.0
        total = 0.0
        variance = 0.0

    # insert_element: the value enters row 0, then the running variance (river's order)
    c = int(state[_HEADER])
    j = _slot(_HEADER, int(state[_HEADER + 1]), c, m1)
    state[j] = x
    state[j + m1] = 0.0
    state[_HEADER] = c + 1
    width += 1.0
    incremental_variance = 0.0
    if width > 1.0:
        delta_v = x - total / (width - 1.0)
        incremental_variance = (width - 1.0) * delta_v * delta_v / width
    variance += incremental_variance
    total += x
    if c + 1 == m1:
        _compress(state, max_buckets, stride)

    # detect_change: river checks when its i32 tick is a multiple of clock
    tick += 1.0
    phase += 1
    if phase == clock:
        phase = 0
    if tick > _I32_MAX:
        tick = -2147483648.0
        phase = -2147483648 % clock
    change = False
    if phase == 0 and width > grace_period:
        state[_WIDTH] = width
        state[_TOTAL] = total
        state[_VARIANCE] = variance
        dropped = 0.0  # sum of the dropped buckets, added as they go (not total - total')
        while _first_cut(state, delta, m1, mwl, stride, scratch, fire) >= 0:
            change = True
            if state[_WIDTH] > 0.0:
                dropped += _delete_oldest(state, max_buckets, stride)
            else:  # unreachable: a firing cut has values on both sides
                break
        if change:
            dropped_n = width - state[_WIDTH]
            kept = state[_WIDTH]
            record_cut(cuts, i, dropped / dropped_n, state[_TOTAL] / kept, dropped_n, kept)
        width = state[_WIDTH]
        total = state[_TOTAL]
        variance = state[_VARIANCE]
    return (DRIFT if change else NONE), change, tick, phase, width, total, variance


def _scratch(max_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Work space of one cut scan: running n0, n1, u0, u1 per cut, and which cuts fire."""
    n = MAX_ROWS * (max_buckets + 1)
    return np.empty((4, n)), np.empty(n, dtype=np.bool_)


@_njit
def _run_kernel(state, xs, flags, cuts, params, scratch, fire):
    drifted = state[_DRIFTED] != 0.0
    tick = state[_TICK]
    phase = int(state[_PHASE])
    width = state[_WIDTH]
    total = state[_TOTAL]
    variance = state[_VARIANCE]
    for i in range(xs.shape[0]):
        flags[i], drifted, tick, phase, width, total, variance = _step(
            state,
            xs[i],
            drifted,
            tick,
            phase,
            width,
            total,
            variance,
            params,
            scratch,
            fire,
            cuts,
            i,
        )
    state[_DRIFTED] = 1.0 if drifted else 0.0
    state[_TICK] = tick
    state[_PHASE] = phase
    state[_WIDTH] = width
    state[_TOTAL] = total
    state[_VARIANCE] = variance


@_njit
def _run_bank_kernel(states, ids, xs, flags, cuts, params, scratch, fire):
    for i in range(xs.shape[0]):
        state = states[ids[i]]
        flags[i], drifted, tick, phase, width, total, variance = _step(
            state,
            xs[i],
            state[_DRIFTED] != 0.0,
            state[_TICK],
            int(state[_PHASE]),
            state[_WIDTH],
            state[_TOTAL],
            state[_VARIANCE],
            params,
            scratch,
            fire,
            cuts,
            i,
        )
        state[_DRIFTED] = 1.0 if drifted else 0.0
        state[_TICK] = tick
        state[_PHASE] = phase
        state[_WIDTH] = width
        state[_TOTAL] = total
        state[_VARIANCE] = variance


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


class ADWIN(ChangeDetector):
    r"""Adaptive Windowing change detector, bit-exact to river 0.26's ``drift.ADWIN``.

    ADWIN keeps a variable-length window of recent values, compressed into an exponential
    histogram of buckets, and drops its older part whenever the means of an older sub-window
    W0 and a newer sub-window W1 differ by more than a bound derived from ``delta``.

    At a drift, the two sides of the change (``drift_before_mean`` / ``drift_before_n`` and
    ``drift_after_mean`` / ``drift_after_n`` in ``update_many``'s result, ``last_drift_*``
    after ``update``) are exactly what ADWIN cut: *before* is the mean and count of the values
    it dropped from its window (their bucket sums, added as they are dropped), *after* the
    mean and count of the window it kept, at that moment. Unlike ``estimation`` read at the
    end of a batch (the window restarts at the next value), they depend on the values alone.

    Parameters
    ----------
    delta
        Significance value, in (0, 1); smaller means fewer false alarms and slower detection.
    clock
        Check for change every ``clock`` values (1 checks after every value).
    max_buckets
        Buckets of each size kept before the two oldest are merged.
    min_window_length
        Sub-windows shorter than this are not tested.
    grace_period
        No change is checked until the window holds more than this many values.

    Notes
    -----
    After a drift is signalled the whole window is discarded at the next update, as river
    does. The bucket rows live in fixed slots of the state array (see the module docstring:
    64 rows, never the limit in practice).

    Examples
    --------
    >>> import random
    >>> from driftline.detectors import ADWIN

    >>> rng = random.Random(12345)
    >>> adwin = ADWIN()

    >>> # Simulate a data stream composed by two data distributions
    >>> data_stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)

    >>> for i, val in enumerate(data_stream):
    ...     _ = adwin.update(val)
    ...     if adwin.drift_detected:
    ...         print(f"Change detected at index {i}, input value: {val}")
    Change detected at index 1023, input value: 4

    The same in one call over the whole batch:

    >>> ADWIN().update_many(data_stream).drift.tolist()
    [1023]

    What was cut there: the 992 values dropped, and the 32 kept after the change.

    >>> found = ADWIN().update_many(data_stream)
    >>> found.drift_before_mean.round(3).tolist(), found.drift_before_n.tolist()
    ([0.494], [992.0])
    >>> found.drift_after_mean.tolist(), found.drift_after_n.tolist()
    ([4.5], [32.0])
    """

    _params: ClassVar[tuple[str, ...]] = (
        "delta",
        "clock",
        "max_buckets",
        "min_window_length",
        "grace_period",
    )

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        if isinstance(delta, bool) or not isinstance(delta, (int, float, np.floating)):
            raise ValueError(f"delta must be a number in (0, 1), got {delta!r}")
        if not 0.0 < float(delta) < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        self.delta = float(delta)
        self.clock = _check_int("clock", clock, 1)
        if self.clock > _I32_MAX:
            raise ValueError(f"clock must be <= {_I32_MAX} (river keeps it in an i32)")
        self.max_buckets = _check_int("max_buckets", max_buckets, 1)
        if self.max_buckets > 1000:
            raise ValueError(f"max_buckets must be <= 1000, got {max_buckets}")
        self.min_window_length = _check_int("min_window_length", min_window_length, 1)
        self.grace_period = _check_int("grace_period", grace_period, 0)
        super().__init__()

    def _initial_state(self) -> np.ndarray:
        state = np.zeros(_state_size(self.max_buckets), dtype=np.float64)
        state[_N_ROWS] = 1.0
        return state

    def _kernel_params(self) -> tuple[float, int, int, float, float]:
        return (
            self.delta,
            self.clock,
            self.max_buckets,
            float(self.min_window_length),
            float(self.grace_period),
        )

    def _work_space(self) -> tuple[np.ndarray, np.ndarray]:
        # kept between calls: update() one value at a time should not allocate each time
        space = self.__dict__.get("_space")
        if space is None:
            space = self._space = _scratch(self.max_buckets)
        return space

    def _run(self, state: np.ndarray, xs: np.ndarray, flags: np.ndarray, cuts: np.ndarray) -> None:
        _run_kernel(state, xs, flags, cuts, self._kernel_params(), *self._work_space())

    def _run_bank(
        self,
        states: np.ndarray,
        stream_ids: np.ndarray,
        xs: np.ndarray,
        flags: np.ndarray,
        cuts: np.ndarray,
    ) -> None:
        _run_bank_kernel(
            states, stream_ids, xs, flags, cuts, self._kernel_params(), *self._work_space()
        )

    @property
    def width(self) -> int:
        """Number of values in the current window."""
        return int(self._state[_WIDTH])

    @property
    def total(self) -> float:
        """Sum of the values in the current window."""
        return float(self._state[_TOTAL])

    @property
    def variance(self) -> float:
        """What river's ``ADWIN.variance`` returns: the window's sum of squared deviations
        from its mean (divide by ``width`` for the variance, see ``variance_in_window``)."""
        return float(self._state[_VARIANCE])

    @property
    def variance_in_window(self) -> float:
        """Variance of the values in the window (``variance / width``)."""
        width = self._state[_WIDTH]
        return float(self._state[_VARIANCE] / width) if width else 0.0

    @property
    def estimation(self) -> float:
        """Mean of the values in the current window (0.0 when empty)."""
        width = self._state[_WIDTH]
        return float(self._state[_TOTAL] / width) if width else 0.0

    @property
    def n_buckets(self) -> int:
        """Buckets currently summarising the window."""
        rows = int(self._state[_N_ROWS])
        stride = 2 * self.max_buckets + 4
        return int(sum(self._state[_HEADER + r * stride] for r in range(rows)))
