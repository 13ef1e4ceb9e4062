"""Two-sample Kolmogorov-Smirnov test, equal to ``scipy.stats.ks_2samp`` (two-sided, "auto").

One implementation for the window test (:func:`driftline.detectors.window_tests.ks_2samp`) and
for KSWIN's p-value table. What is computed where:

* the statistic, in Numba (``ks_statistic``): one merge walk of the sorted samples with
  scipy's floating-point operations. scipy sorts, concatenates and runs two ``searchsorted``;
  the walk is ~6x faster at 100,000 values a side, where scipy spends its time.
* the exact p-value of two samples of *equal* size, in Numba (``prob_outside_square``, scipy's
  ``_compute_prob_outside_square`` operation for operation). scipy offers no public
  distribution for it (only ``ks_2samp`` on the data), and its private function is a Python
  loop: at n = 10,000 one p-value takes 2.9 ms there and 0.055 ms here, and KSWIN's table of
  n + 1 p-values 60 s there and 2 s here (measured on the 2-core development machine).
* the exact p-value of samples of *different* sizes: ``scipy.stats.ks_2samp`` itself. Its
  algorithm is vectorised NumPy, as fast as the Numba port it replaces where the time goes
  (34 ms either way at 10,000 vs 9,000); small windows pay its ~0.5 ms call overhead
  (1,000 vs 700: 0.9 ms, was 0.34 ms), once per test of a window, not per value.
* the asymptotic p-value (samples over 10,000 values, or an exact value that rounds past 1):
  ``scipy.stats.kstwo.sf`` at ``round(n1 * n2 / (n1 + n2))``, scipy's own fallback.

Examples
--------
>>> import numpy as np
>>> from driftline.detectors._ks import ks_2samp_sorted
>>> a = np.array([0.1, 0.4, 0.7, 0.9])
>>> ks_2samp_sorted(a, np.array([0.2, 0.3, 0.5, 0.6]))  # equal sizes: Numba throughout
(0.5, 0.7714285714285716)
>>> ks_2samp_sorted(a, np.array([0.2, 0.3, 0.5, 0.6, 0.8, 1.3]))  # unequal: scipy's ks_2samp
(0.25, 0.9952380952380953)
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
from numba import njit

__all__ = ["MAX_EXACT_N", "ks_2samp_sorted", "ks_statistic", "prob_outside_square", "pvalue_table"]

# scipy's MAX_AUTO_N: method="auto" is exact up to this many values per sample
MAX_EXACT_N = 10000

_njit = njit(cache=True, error_model="numpy", nogil=True)


@_njit
def ks_statistic(a, b):
    """The two-sided statistic of two *sorted* samples, as scipy computes it.

    scipy evaluates ``cdf1 - cdf2`` (``searchsorted(side="right") / n``) at every value of
    both samples and takes ``d = max(cddiffs)`` unless ``-min(cddiffs)`` (clipped to [0, 1])
    is larger. Walking the merged samples gives the same differences, value by value.
    """
    n1 = a.shape[0]
    n2 = b.shape[0]
    i = 0
    j = 0
    max_s = -np.inf
    min_s = np.inf
    while i < n1 or j < n2:
        v = a[i] if j >= n2 or (i < n1 and a[i] <= b[j]) else b[j]
        while i < n1 and a[i] <= v:
            i += 1
        while j < n2 and b[j] <= v:
            j += 1
        diff = i / n1 - j / n2
        if diff > max_s:
            max_s = diff
        if diff < min_s:
            min_s = diff
    minus = -min_s
    if minus < 0.0:
        minus = 0.0
    elif minus > 1.0:
        minus = 1.0
    return minus if minus > max_s else max_s


@_njit
def prob_outside_square(n, h):
    """scipy's ``_compute_prob_outside_square``: Pr(D_{n,n} >= h/n), same arithmetic order.

    2 * sum_k (-1)^(k+1) C(2n, n - k h) / C(2n, n), as nested ratios (Horner-like), so no
    binomial coefficient is formed. Kept in Numba for speed (see the module docstring).
    """
    p = 0.0
    k = int(np.floor(n / h))
    while k >= 0:
        p1 = 1.0
        for j in range(h):
            p1 = (n - k * h - j) * p1 / (n + k * h + j + 1)
        p = p1 * (1.0 - p)
        k -= 1
    return 2 * p


def _asymptotic_pvalue(n1: int, n2: int, d: float) -> float:
    """scipy's ``method="asymp"`` (two-sided): ``kstwo.sf(d, round(n1 n2 / (n1 + n2)))``."""
    # scipy.stats takes ~1 s to import; only this path and unequal sizes need it, so
    # `import driftline.detectors` does not pay for it.
    from scipy.stats import kstwo

    m, n = sorted([float(n1), float(n2)], reverse=True)
    return float(kstwo.sf(d, np.round(m * n / (m + n))))


def _equal_size_pvalue(n: int, h: int) -> float:
    """scipy's two-sided p-value for two samples of ``n`` values at distance ``h / n``."""
    if h == 0:
        return 1.0
    prob = prob_outside_square(n, h)
    if not 0.0 <= prob <= 1.0:
        # scipy's fallback: for the smallest distances the exact value rounds past 1.
        prob = _asymptotic_pvalue(n, n, h * 1.0 / n)
    return float(np.clip(prob, 0.0, 1.0))


@lru_cache(maxsize=64)
def _pvalue_table_cached(n: int) -> np.ndarray:
    table = np.array([_equal_size_pvalue(n, h) for h in range(n + 1)])
    table.setflags(write=False)
    return table


def pvalue_table(n: int) -> np.ndarray:
    """p-value of ``ks_2samp`` for two samples of ``n`` values at distance ``h / n``,
    indexed by ``h`` (read-only, cached): KSWIN's kernel looks p-values up here."""
    if not 1 <= n <= MAX_EXACT_N:
        raise ValueError(f"sample size must be in [1, {MAX_EXACT_N}], got {n}")
    return _pvalue_table_cached(int(n))


def ks_2samp_sorted(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of ``scipy.stats.ks_2samp(a, b)`` for sorted, finite, non-empty
    float64 arrays (the caller validates)."""
    n1, n2 = a.shape[0], b.shape[0]
    if n1 != n2 and max(n1, n2) <= MAX_EXACT_N:
        from scipy.stats import ks_2samp  # see _asymptotic_pvalue on the deferred import

        with warnings.catch_warnings():
            # scipy announces its fallback to the asymptotic p-value; the result is the answer
            warnings.filterwarnings("ignore", "ks_2samp: Exact calculation", RuntimeWarning)
            result = ks_2samp(a, b)
        return float(result.statistic), float(result.pvalue)
    d = ks_statistic(a, b)
    if n1 == n2 and n1 <= MAX_EXACT_N:
        # scipy reports the statistic snapped to the lattice of possible distances, h / n
        h = int(np.round(d * n1))
        return h * 1.0 / n1, _equal_size_pvalue(n1, h)
    return float(d), float(np.clip(_asymptotic_pvalue(n1, n2, d), 0.0, 1.0))
