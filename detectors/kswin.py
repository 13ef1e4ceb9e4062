"""KSWIN: Kolmogorov-Smirnov windowing change detection (Raab et al., 2020), exact to river 0.26.

river's ``drift.KSWIN`` keeps a sliding window of the last ``window_size`` values. Once it is
full, every value draws ``stat_size`` positions from the older part of the window with
``random.Random(seed).sample(range(window_size - stat_size), stat_size)``, runs
``scipy.stats.ks_2samp`` between those values and the ``stat_size`` most recent ones, and
signals drift when ``p_value <= alpha`` and the statistic exceeds 0.1.

This module does all of it in one Numba kernel:

* CPython's Mersenne Twister (MT19937, ``genrand_uint32``), ``getrandbits``,
  ``_randbelow`` and ``Random.sample`` -- including the choice between its pool and set
  algorithms -- so an integer seed draws exactly river's positions. The generator starts
  from ``random.Random(seed).getstate()``, i.e. CPython's own seeding (``init_by_array``).
* the KS statistic and scipy's exact p-value (``_ks.py``), through a table of the p-value of
  every possible distance, computed once per ``stat_size``.

State layout (``float64``, length ``631 + stat_size + window_size``)::

    [0] drift signalled by the previous update   [1] values since the last reset (river's n)
    [2] p-value of the last test                 [3] statistic of the last test
    [4] values in the window  [5] ring position of the oldest value
    [6] MT19937 position (624 = twist next; -1 = not seeded yet)   [7:631] MT19937 words
    [631:631 + stat_size] the (up to) stat_size most recent values, kept sorted
    [631 + stat_size:] the window, a ring buffer

Every value is an integer below 2**32 or a window value, so float64 holds it exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import ClassVar

import numpy as np
from numba import njit

from ._ks import MAX_EXACT_N, pvalue_table
from .base import DRIFT, NONE, ChangeDetector, record_cut

__all__ = ["KSWIN"]

_DRIFTED, _N, _P_VALUE, _STATISTIC, _LENGTH, _HEAD, _MT_POS = 0, 1, 2, 3, 4, 5, 6
_MT = 7
_MT_N = 624
_RECENT = _MT + _MT_N  # the stat_size most recent values, sorted; then the window ring

# seed=None draws with this seed (river would draw a fresh OS seed, see the class notes)
DEFAULT_SEED = 0

_njit = njit(cache=True, error_model="numpy", nogil=True, _nrt=False)
_inline = njit(cache=True, error_model="numpy", nogil=True, _nrt=False, inline="always")


# -- CPython's random.Random, on words kept in the float64 state --------------------------


@_njit
def _twist(state):
    """MT19937's regeneration of its 624 words (CPython ``genrand_uint32``'s refill)."""
    mt = _MT
    for kk in range(_MT_N - 397):
        y = (int(state[mt + kk]) & 0x80000000) | (int(state[mt + kk + 1]) & 0x7FFFFFFF)
        v = int(state[mt + kk + 397]) ^ (y >> 1)
        state[mt + kk] = v ^ 0x9908B0DF if y & 1 else v
    for kk in range(_MT_N - 397, _MT_N - 1):
        y = (int(state[mt + kk]) & 0x80000000) | (int(state[mt + kk + 1]) & 0x7FFFFFFF)
        v = int(state[mt + kk + 397 - _MT_N]) ^ (y >> 1)
        state[mt + kk] = v ^ 0x9908B0DF if y & 1 else v
    y = (int(state[mt + _MT_N - 1]) & 0x80000000) | (int(state[mt]) & 0x7FFFFFFF)
    v = int(state[mt + 396]) ^ (y >> 1)
    state[mt + _MT_N - 1] = v ^ 0x9908B0DF if y & 1 else v


@_inline
def _genrand_uint32(state, pos):
    """Next 32-bit output and the new position."""
    if pos >= _MT_N:
        _twist(state)
        pos = 0
    y = int(state[_MT + pos])
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    y ^= y >> 18
    return y, pos + 1


@_inline
def _sample(state, population, k, use_pool, out, pool, touched, marks):
    """``Random.sample(range(population), k)`` into ``out``, advancing the generator.

    ``use_pool`` is CPython's choice between its two algorithms: a pool list for small
    populations (``pool`` must hold ``0..population-1``; ``touched`` has room for k slots),
    a set of picks otherwise (``marks``, all False). Both are left as they were found.
    """
    pos = int(state[_MT_POS])
    if use_pool:
        # First CPython's accept/reject loop of _randbelow(population - i), which only needs
        # the outputs and i, written without branches on the random outputs (mispredicted
        # branches were most of the cost): a rejected output is overwritten by the next.
        # Then the pool swaps, for the k accepted draws only.
        bits = 0
        while (population >> bits) > 0:
            bits += 1
        i = 0
        while i < k:
            r, pos = _genrand_uint32(state, pos)
            r >>= 32 - bits  # getrandbits(bits)
            touched[i] = r
            i += r < population - i
            # bit length of the next range, population - i (it shrinks one at a time)
            bits -= ((population - i) >> (bits - 1)) == 0
        last = population - 1
        for i in range(k):
            j = touched[i]
            out[i] = pool[j]
            pool[j] = pool[last - i]
        for i in range(k):
            pool[touched[i]] = touched[i]
    else:
        bits = 0
        while (population >> bits) > 0:
            bits += 1
        for i in range(k):
            r, pos = _genrand_uint32(state, pos)
            r >>= 32 - bits
            while r >= population or marks[r]:
                r, pos = _genrand_uint32(state, pos)
                r >>= 32 - bits
            marks[r] = True
            out[i] = r
        for i in range(k):
            marks[out[i]] = False
    state[_MT_POS] = pos


def _sample_space(population: int, k: int, use_pool: bool) -> tuple[np.ndarray, ...]:
    """(picks, pool, touched, marks) for ``_sample``; only the chosen algorithm's are sized."""
    picks = np.empty(k, dtype=np.int64)
    pool = np.arange(population if use_pool else 1, dtype=np.int64)
    touched = np.empty(k if use_pool else 1, dtype=np.int64)
    marks = np.zeros(1 if use_pool else population, dtype=np.bool_)
    return picks, pool, touched, marks


@_njit
def _draw_kernel(state, population, k, use_pool, out, pool, touched, marks):
    for t in range(out.shape[0]):
        _sample(state, population, k, use_pool, out[t], pool, touched, marks)


def _draw(seed: int, population: int, k: int, times: int) -> np.ndarray:
    """``times`` successive ``random.Random(seed).sample(range(population), k)``, drawn by
    the kernel's generator (for tests)."""
    state = np.zeros(_RECENT)
    mt = random.Random(seed).getstate()[1]
    state[_MT : _MT + _MT_N] = mt[:_MT_N]
    state[_MT_POS] = mt[_MT_N]
    use_pool = _use_pool(population, k)
    out = np.empty((times, k), dtype=np.int64)
    _, pool, touched, marks = _sample_space(population, k, use_pool)
    _draw_kernel(state, population, k, use_pool, out, pool, touched, marks)
    return out


def _use_pool(population: int, k: int) -> bool:
    """CPython's ``Random.sample``: a pool list when it is smaller than a k-length set."""
    setsize = 21
    if k > 5:
        setsize += 4 ** math.ceil(math.log(k * 3, 4))
    return population <= setsize


# -- the detector kernel -------------------------------------------------------------------


@_inline
def _sort_into(src, dst, n):
    """``dst[:n]`` = sorted ``src[:n]``.

    Small samples are placed by rank (the count of smaller values: a loop without
    branches that LLVM vectorises); equal values take consecutive slots. About three times
    faster than an insertion sort of 30 random values, whose branches mispredict. Larger
    ones by heapsort (the kernels run without Numba's runtime, so without its sort).
    """
    if n <= 64:
        for k in range(n):
            dst[k] = np.nan  # free slot (the values are finite)
        for i in range(n):
            v = src[i]
            rank = 0
            for j in range(n):
                rank += src[j] < v
            while dst[rank] == v:
                rank += 1
            dst[rank] = v
    else:  # heapsort: no allocation, O(n log n)
        for i in range(n):
            dst[i] = src[i]
        for start in range(n // 2 - 1, -1, -1):
            _sift_down(dst, start, n)
        for end in range(n - 1, 0, -1):
            top = dst[0]
            dst[0] = dst[end]
            dst[end] = top
            _sift_down(dst, 0, end)


@_inline
def _sift_down(a, root, end):
    """Restore the max-heap below ``root`` in ``a[:end]``."""
    v = a[root]
    child = 2 * root + 1
    while child < end:
        if child + 1 < end and a[child + 1] > a[child]:
            child += 1
        if a[child] <= v:
            break
        a[root] = a[child]
        root = child
        child = 2 * root + 1
    a[root] = v


@_inline
def _replace_sorted(state, base, count, old, new, remove):
    """In the sorted ``state[base:base + count]``, drop one value equal to ``old`` (if
    ``remove``) and insert ``new``, in one shift. Values equal under ``==`` (0.0 and -0.0)
    are interchangeable for the KS statistic, so which of equal values goes is immaterial."""
    if remove:
        lo = 0
        hi = count
        while lo < hi:  # first index with value >= old
            mid = (lo + hi) >> 1
            if state[base + mid] < old:
                lo = mid + 1
            else:
                hi = mid
        # close the gap at lo, then insert new among the remaining count - 1
        for i in range(lo, count - 1):
            state[base + i] = state[base + i + 1]
        count -= 1
    i = count
    while i > 0 and state[base + i - 1] > new:
        state[base + i] = state[base + i - 1]
        i -= 1
    state[base + i] = new


@_inline
def _step(
    state,
    x,
    alpha,
    window_size,
    stat_size,
    use_pool,
    table,
    fractions,
    mt0,
    values,
    picks,
    pool,
    touched,
    marks,
    cuts,
    at,
):
    """One value through river's ``KSWIN.update``; returns the flag. On a drift, the older
    part of the window (dropped) and the ``stat_size`` newest values (kept) go to
    ``cuts[:, at]``."""
    if state[_DRIFTED] != 0.0:
        # river's KSWIN.update: after a drift the detector starts afresh (empty window, the
        # generator reseeded with the same seed)
        state[:] = 0.0
        state[_MT_POS] = -1.0
    state[_N] += 1.0

    # window.append(x) on a deque of maxlen window_size, and the sorted recent values
    window = _RECENT + stat_size
    length = int(state[_LENGTH])
    head = int(state[_HEAD])
    leaving = 0.0  # the value that drops out of the stat_size most recent ones
    full_recent = length >= stat_size
    if full_recent:
        slot = head + length - stat_size
        if slot >= window_size:
            slot -= window_size
        leaving = state[window + slot]
    if length < window_size:
        slot = head + length
        if slot >= window_size:
            slot -= window_size
        state[window + slot] = x
        length += 1
        state[_LENGTH] = length
    else:
        state[window + head] = x
        head += 1
        if head == window_size:
            head = 0
        state[_HEAD] = head
    _replace_sorted(state, _RECENT, min(length - 1, stat_size), leaving, x, full_recent)
    if length < window_size:
        state[_DRIFTED] = 0.0
        return NONE

    if state[_MT_POS] < 0.0:  # first draw since construction or reset: seed
        for i in range(_MT_N):
            state[_MT + i] = mt0[i]
        state[_MT_POS] = mt0[_MT_N]
    population = window_size - stat_size
    _sample(state, population, stat_size, use_pool, picks, pool, touched, marks)
    drawn = values[0]
    rnd = values[1]
    recent = values[2]
    for i in range(stat_size):
        slot = head + picks[i]
        if slot >= window_size:
            slot -= window_size
        drawn[i] = state[window + slot]
        recent[i] = state[_RECENT + i]
    _sort_into(drawn, rnd, stat_size)

    # ks_2samp's statistic (see _ks.ks_statistic) for two samples of n values: a merge of
    # the sorted samples without branches on the data (they mispredict half the time),
    # taking the ECDF difference after the last of each run of equal values. +inf closes
    # both samples; fractions[i] is i / n divided as scipy divides, lcm(n, n) = n.
    n = stat_size
    rnd[n] = np.inf
    recent[n] = np.inf
    i = 0
    j = 0
    max_s = -np.inf
    min_s = np.inf
    a = rnd[0]
    b = recent[0]
    for _ in range(2 * n):
        take_a = a <= b
        current = min(a, b)
        i += take_a
        j += not take_a
        a = rnd[i]
        b = recent[j]
        # the difference counts only after the last of a run of equal values; elsewhere it
        # is replaced by 0, a difference scipy always has (at the largest value), so the
        # extremes are unchanged (a multiplication: LLVM turns selects here into branches)
        diff = (fractions[i] - fractions[j]) * np.float64(min(a, b) != current)
        max_s = max(max_s, diff)
        min_s = min(min_s, diff)
    minus = -min_s
    if minus < 0.0:
        minus = 0.0
    elif minus > 1.0:
        minus = 1.0
    d = minus if minus > max_s else max_s
    h = int(np.rint(d * n))
    statistic = h * 1.0 / n
    p_value = table[h]
    state[_STATISTIC] = statistic
    state[_P_VALUE] = p_value
    if p_value <= alpha and statistic > 0.1:
        # means of the older part and of the newest values, each summed oldest first
        older = 0.0
        newest = 0.0
        for k in range(window_size):
            slot = head + k
            if slot >= window_size:
                slot -= window_size
            if k < population:
                older += state[window + slot]
            else:
                newest += state[window + slot]
        record_cut(cuts, at, older / population, newest / n, population, n)
        # river keeps only the most recent stat_size values (until the reset above); the
        # sorted recent values stay as they are
        head += population
        if head >= window_size:
            head -= window_size
        state[_HEAD] = head
        state[_LENGTH] = stat_size
        state[_DRIFTED] = 1.0
        return DRIFT
    state[_DRIFTED] = 0.0
    return NONE


@_njit
def _run_kernel(state, xs, flags, cuts, params, values, picks, pool, touched, marks):
    alpha, window_size, stat_size, use_pool, table, fractions, mt0 = params
    for i in range(xs.shape[0]):
        flags[i] = _step(
            state,
            xs[i],
            alpha,
            window_size,
            stat_size,
            use_pool,
            table,
            fractions,
            mt0,
            values,
            picks,
            pool,
            touched,
            marks,
            cuts,
            i,
        )


@_njit
def _run_bank_kernel(states, ids, xs, flags, cuts, params, values, picks, pool, touched, marks):
    alpha, window_size, stat_size, use_pool, table, fractions, mt0 = params
    for i in range(xs.shape[0]):
        flags[i] = _step(
            states[ids[i]],
            xs[i],
            alpha,
            window_size,
            stat_size,
            use_pool,
            table,
            fractions,
            mt0,
            values,
            picks,
            pool,
            touched,
            marks,
            cuts,
            i,
        )


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


class KSWIN(ChangeDetector):
    r"""Kolmogorov-Smirnov Windowing change detector, exact to river 0.26's ``drift.KSWIN``.

    KSWIN keeps a sliding window of the last ``window_size`` values. Once it is full, each
    value compares, with a two-sample Kolmogorov-Smirnov test, the ``stat_size`` most
    recent values against ``stat_size`` values drawn at random from the rest of the window;
    it signals drift when the p-value is at most ``alpha`` and the statistic exceeds 0.1,
    then starts afresh.

    At a drift, the two sides of the change (``drift_before_mean`` / ``drift_before_n`` and
    ``drift_after_mean`` / ``drift_after_n`` in ``update_many``'s result, ``last_drift_*``
    after ``update``) are the two parts of the full window at that moment: *before* is the
    mean of the ``window_size - stat_size`` older values (the part the reference sample is
    drawn from, and that the detector drops), *after* the mean of the ``stat_size`` newest
    values (the part it keeps). KSWIN tests distributions, so the means can be close while
    the shapes differ.

    Parameters
    ----------
    alpha
        Significance level of the KS test, in [0, 1]; very sensitive, keep it below 0.01.
    window_size
        Size of the sliding window; at least ``2 * stat_size``.
    stat_size
        Size of the recent sample and of the random reference sample (1 to 10 000).
    seed
        Seed of the reference sampling: the same integer draws exactly what river's KSWIN
        draws. ``None`` uses the fixed seed ``DEFAULT_SEED`` (0).
    window
        Values to start the window with (the most recent ``window_size`` are kept), to
        avoid a cold start.

    Notes
    -----
    Two deliberate differences from river, both where river has no fixed answer or fails:

    * ``seed=None``: river seeds from the operating system, so its draws are not
      reproducible; here the default is a fixed seed, so a replayed stream raises the same
      alerts (the detector's state round trip carries the generator either way). Pass an
      integer seed per detector for independent draws.
    * ``window_size < 2 * stat_size`` and ``stat_size > 10 000`` raise ``ValueError`` here;
      river accepts the first and then fails on the first full window (``random.sample``:
      "Sample larger than population"), and for the second scipy's "auto" method switches
      to an asymptotic p-value that is not ported.

    The p-value of every possible distance is computed once per ``stat_size`` with
    scipy's exact algorithm (``driftline.detectors._ks``), and the recent values are kept
    sorted as the window slides, so each value costs one draw, one sort of the drawn sample
    and one merge.

    Examples
    --------
    >>> import random
    >>> from driftline.detectors import KSWIN

    >>> rng = random.Random(12345)
    >>> kswin = KSWIN(alpha=0.0001, seed=42)

    >>> # Simulate a data stream composed by two data distributions
    >>> data_stream = rng.choices([0, 1], k=1000) + rng.choices(range(4, 8), k=1000)

    >>> for i, val in enumerate(data_stream):
    ...     _ = kswin.update(val)
    ...     if kswin.drift_detected:
    ...         print(f"Change detected at index {i}, input value: {val}")
    Change detected at index 1016, input value: 6

    The same in one call over the whole batch:

    >>> KSWIN(alpha=0.0001, seed=42).update_many(data_stream).drift.tolist()
    [1016]
    """

    _params: ClassVar[tuple[str, ...]] = ("alpha", "window_size", "stat_size", "seed", "window")

    def __init__(
        self,
        alpha: float = 0.005,
        window_size: int = 100,
        stat_size: int = 30,
        seed: int | None = None,
        window: Iterable[float] | None = None,
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)):
            raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
        self.alpha = float(alpha)
        self.stat_size = _check_int("stat_size", stat_size, 1)
        if self.stat_size > MAX_EXACT_N:
            raise ValueError(
                f"stat_size must be <= {MAX_EXACT_N} (scipy's exact KS p-value limit), "
                f"got {stat_size}"
            )
        self.window_size = _check_int("window_size", window_size, 2)
        if self.window_size < 2 * self.stat_size:
            raise ValueError(
                f"window_size must be at least 2 * stat_size = {2 * self.stat_size}, got "
                f"{window_size}: the reference sample of stat_size values is drawn without "
                "replacement from the window_size - stat_size older values"
            )
        if self.window_size - self.stat_size >= 2**32:
            raise ValueError("window_size - stat_size must be below 2**32")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        if window is not None:
            values = [float(v) for v in window]
            if not all(math.isfinite(v) for v in values):
                raise ValueError("window values must be finite numbers")
            window = values
        self.window = window

        self._table = pvalue_table(self.stat_size)
        # scipy's ECDF values i / n, divided as scipy divides them
        self._fractions = np.arange(self.stat_size + 1) / self.stat_size
        mt = random.Random(DEFAULT_SEED if self.seed is None else self.seed).getstate()[1]
        self._mt0 = np.array(mt, dtype=np.float64)
        self._use_pool = _use_pool(self.window_size - self.stat_size, self.stat_size)
        self._space: tuple[np.ndarray, ...] | None = None
        super().__init__()

    def _initial_state(self) -> np.ndarray:
        window = _RECENT + self.stat_size
        state = np.zeros(window + self.window_size, dtype=np.float64)
        state[_MT_POS] = -1.0
        if self.window:  # river: `if window:`, then a deque of maxlen window_size
            kept = self.window[-self.window_size :]
            state[window : window + len(kept)] = kept
            state[_LENGTH] = len(kept)
            recent = np.sort(np.array(kept[-self.stat_size :], dtype=np.float64))
            state[_RECENT : _RECENT + recent.shape[0]] = recent
        return state

    def _kernel_args(self) -> tuple:
        # Work space, reused across calls: the kernel leaves the sampling arrays as it found
        # them (a population-sized pool or set would cost more to rebuild than a test).
        if self._space is None:
            population = self.window_size - self.stat_size
            self._space = (
                # drawn values; sorted; recent values (the last two closed by a sentinel)
                np.empty((3, self.stat_size + 1)),
                *_sample_space(population, self.stat_size, self._use_pool),
            )
        params = (
            self.alpha,
            self.window_size,
            self.stat_size,
            self._use_pool,
            self._table,
            self._fractions,
            self._mt0,
        )
        return (params, *self._space)

    def _run(self, state: np.ndarray, xs: np.ndarray, flags: np.ndarray, cuts: np.ndarray) -> None:
        _run_kernel(state, xs, flags, cuts, *self._kernel_args())

    def _run_bank(
        self,
        states: np.ndarray,
        stream_ids: np.ndarray,
        xs: np.ndarray,
        flags: np.ndarray,
        cuts: np.ndarray,
    ) -> None:
        _run_bank_kernel(states, stream_ids, xs, flags, cuts, *self._kernel_args())

    @property
    def p_value(self) -> float:
        """p-value of the last KS test (0.0 before the first, as river's ``p_value``)."""
        return float(self._state[_P_VALUE])

    @property
    def statistic(self) -> float:
        """KS statistic of the last test (0.0 before the first)."""
        return float(self._state[_STATISTIC])

    @property
    def n(self) -> int:
        """Values seen since construction or the last reset after a drift (river's ``n``)."""
        return int(self._state[_N])

    @property
    def sliding_window(self) -> np.ndarray:
        """The values in the window, oldest first (river's ``window`` deque)."""
        length = int(self._state[_LENGTH])
        head = int(self._state[_HEAD])
        ring = self._state[_RECENT + self.stat_size :]
        return ring[(head + np.arange(length)) % self.window_size].copy()
