"""Two-sample Kolmogorov-Smirnov test, exact as scipy's ``ks_2samp`` (two-sided, ``method="auto"``).

river's KSWIN calls ``scipy.stats.ks_2samp(window_sample, recent, method="auto")`` on every
value; for samples of at most 10 000 values "auto" is scipy's exact method. This module is
that computation without scipy:

* the statistic, with scipy's floating-point operations (ECDF differences ``i/n1 - j/n2``
  at every observed value, ties included), in Numba (``ks_statistic``);
* the exact p-value: for equal sizes scipy's ``_compute_prob_outside_square`` and for
  unequal sizes its ``_compute_outer_prob_inside_method``, ported operation for operation
  to Numba (``prob_outside_square``, ``outer_prob_inside``);
* scipy's fallback when the exact value leaves [0, 1] (rounding past 1.0, which happens for
  the smallest distances, where the p-value is within ~1e-4 of 1): the asymptotic
  ``kstwo.sf(d, round(n1 * n2 / (n1 + n2)))``, i.e. scipy's ``_kolmogn`` one-sample
  distribution, whose branches for such distances (Ruben-Gambino and the Durbin matrix of
  Marsaglia-Tsang-Wang) are ported in NumPy (``kolmogn_sf``).

For a detector the sample sizes are fixed, so ``pvalue_table(n)`` precomputes the p-value of
every possible distance ``h / n`` once; the Numba kernel then only computes the statistic.
Samples larger than 10 000 (where scipy switches to its asymptotic distribution for every
distance) are refused.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import njit

__all__ = [
    "MAX_EXACT_N",
    "ks_2samp",
    "ks_statistic",
    "kolmogn_sf",
    "outer_prob_inside",
    "prob_outside_square",
    "pvalue_table",
]

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
    """scipy's ``_compute_prob_outside_square``: Pr(D_{n,n} >= h/n), exact arithmetic order."""
    p = 0.0
    k = int(np.floor(n / h))
    while k >= 0:
        p1 = 1.0
        for j in range(h):
            p1 = (n - k * h - j) * p1 / (n + k * h + j + 1)
        p = p1 * (1.0 - p)
        k -= 1
    return 2 * p


@_njit
def outer_prob_inside(m, n, g, h):
    """scipy's ``_compute_outer_prob_inside_method``: Pr(D_{m,n} >= h/lcm(m, n))."""
    if m < n:
        m, n = n, m
    mg = m // g
    ng = n // g
    minj = 0
    maxj = min(int(np.ceil(h / mg)), n + 1)
    curlen = maxj - minj
    len_a = min(2 * maxj + 2, n + 1)
    a = np.ones(len_a)
    a[minj:maxj] = 0.0
    for i in range(1, m + 1):
        lastminj = minj
        lastlen = curlen
        minj = max(int(np.floor((ng * i - h) / mg)) + 1, 0)
        minj = min(minj, n)
        maxj = min(int(np.ceil((ng * i + h) / mg)), n + 1)
        if maxj <= minj:
            return 1.0
        val = 0.0 if minj == 0 else 1.0
        for jj in range(maxj - minj):
            j = jj + minj
            val = (a[jj + minj - lastminj] * i + val * j) / (i + j)
            a[jj] = val
        curlen = maxj - minj
        if lastlen > curlen:
            a[maxj - minj : maxj - minj + (lastlen - curlen)] = 1
    return a[maxj - minj - 1]


# -- scipy's asymptotic fallback: the one-sample two-sided KS distribution (``kstwo``) ------

_E128 = 128
_EP128 = np.ldexp(np.longdouble(1), _E128)
_EM128 = np.ldexp(np.longdouble(1), -_E128)
_LOG_2PI = np.log(2 * np.pi)
_STIRLING_COEFFS = [
    -2.955065359477124183e-2,
    6.4102564102564102564e-3,
    -1.9175269175269175269e-3,
    8.4175084175084175084e-4,
    -5.952380952380952381e-4,
    7.9365079365079365079e-4,
    -2.7777777777777777778e-3,
    8.3333333333333333333e-2,
]


def _log_nfactorial_div_n_pow_n(n: int) -> float:
    rn = 1.0 / n
    return np.log(n) / 2 - n + _LOG_2PI / 2 + rn * np.polyval(_STIRLING_COEFFS, rn / n)


def _kolmogn_dmtw_cdf(n: int, d: float) -> float:
    """Pr(D_n <= d) by the Durbin matrix algorithm as Marsaglia, Tsang and Wang compute it
    (scipy's ``_kolmogn_DMTW``, same NumPy operations)."""
    if d >= 1.0:
        return 1.0
    nd = n * d
    if nd <= 0.5:
        return 0.0
    k = int(np.ceil(nd))
    h = k - nd
    m = 2 * k - 1
    big_h = np.zeros([m, m])
    intm = np.arange(1, m + 1)
    v = 1.0 - h**intm
    w = np.empty(m)
    fac = 1.0
    for j in intm:
        w[j - 1] = fac
        fac /= j
        v[j - 1] *= fac
    tt = max(2 * h - 1.0, 0) ** m - 2 * h**m
    v[-1] = (1.0 + tt) * fac
    for i in range(1, m):
        big_h[i - 1 :, i] = w[: m - i + 1]
    big_h[:, 0] = v
    big_h[-1, :] = np.flip(v, axis=0)

    h_pwr = np.eye(np.shape(big_h)[0])
    nn = n
    expnt = 0
    h_expnt = 0
    while nn > 0:
        if nn % 2:
            h_pwr = np.matmul(h_pwr, big_h)
            expnt += h_expnt
        big_h = np.matmul(big_h, big_h)
        h_expnt *= 2
        if np.abs(big_h[k - 1, k - 1]) > _EP128:
            big_h /= _EP128
            h_expnt += _E128
        nn = nn // 2
    p = h_pwr[k - 1, k - 1]
    for i in range(1, n + 1):
        p = i * p / n
        if np.abs(p) < _EM128:
            p *= _EP128
            expnt -= _E128
    if expnt != 0:
        p = np.ldexp(p, expnt)
    return float(np.clip(p, 0.0, 1.0))


def kolmogn_sf(n: int, x: float) -> float:
    """``scipy.stats.kstwo.sf(x, n)`` where ks_2samp needs it (scipy's ``_kolmogn``).

    Ported: the trivial ends, Ruben-Gambino (x <= 1/n and x >= 1 - 1/n) and the Durbin
    matrix, which is what scipy uses for the distances whose exact two-sample p-value
    rounds past 1. Elsewhere scipy would use Pomeranz's recursion, Pelz-Good or Smirnov's
    formula; this computes the Durbin matrix there too (the same probability, exactly
    computed, to within rounding).
    """
    if x >= 1.0:
        return 0.0
    if x <= 0.0 or x <= 0.5 / n:
        return 1.0
    t = n * x
    if t <= 1.0:
        if t <= 0.5:
            return 1.0
        if n <= 140:
            prob = np.prod(np.arange(1, n + 1) * (1.0 / n) * (2 * t - 1))
        else:
            prob = np.exp(_log_nfactorial_div_n_pow_n(n) + n * np.log(2 * t - 1))
        return float(np.clip(1.0 - prob, 0.0, 1.0))
    if t >= n - 1:
        prob = 2 * (1.0 - x) ** n
        return float(np.clip(prob, 0.0, 1.0))
    nxsquared = t * x
    if n > 140 and nxsquared >= 370.0:
        return 0.0
    cdfprob = 1.0 if (n > 140 and nxsquared >= 18.0) else _kolmogn_dmtw_cdf(n, x)
    return float(np.clip(1.0 - cdfprob, 0.0, 1.0))


def _exact_pvalue(n1: int, n2: int, g: int, h: int) -> float:
    """scipy's ``_attempt_exact_2kssamp`` (two-sided) and its fallback, given h."""
    if h == 0:
        return 1.0
    prob = prob_outside_square(n1, h) if n1 == n2 else outer_prob_inside(n1, n2, g, h)
    if not 0.0 <= prob <= 1.0:
        lcm = (n1 // g) * n2
        big, small = sorted([float(n1), float(n2)], reverse=True)
        en = big * small / (big + small)
        prob = kolmogn_sf(int(np.round(en)), h * 1.0 / lcm)
    return float(np.clip(prob, 0.0, 1.0))


@lru_cache(maxsize=64)
def _pvalue_table_cached(n: int) -> np.ndarray:
    table = np.empty(n + 1)
    for h in range(n + 1):
        table[h] = _exact_pvalue(n, n, n, h)
    table.setflags(write=False)
    return table


def pvalue_table(n: int) -> np.ndarray:
    """p-value of ``ks_2samp`` for two samples of ``n`` values at distance ``h / n``,
    indexed by ``h`` (read-only, cached)."""
    if not 1 <= n <= MAX_EXACT_N:
        raise ValueError(f"sample size must be in [1, {MAX_EXACT_N}], got {n}")
    return _pvalue_table_cached(int(n))


@_njit
def distance_index(d, lcm):
    """scipy's ``h = int(np.round(d * lcm))`` (NumPy rounds half to even, as ``rint``)."""
    return int(np.rint(d * lcm))


def ks_2samp(data1, data2) -> tuple[float, float]:
    """(statistic, p-value) of ``scipy.stats.ks_2samp(data1, data2)`` (two-sided, "auto").

    Examples
    --------
    >>> from driftline.detectors._ks import ks_2samp
    >>> ks_2samp([0.1, 0.4, 0.7, 0.9], [0.2, 0.3, 0.5, 0.6, 0.8, 1.3])
    (0.25, 0.9952380952380953)
    """
    a = np.sort(np.asarray(data1, dtype=np.float64))
    b = np.sort(np.asarray(data2, dtype=np.float64))
    n1, n2 = a.shape[0], b.shape[0]
    if min(n1, n2) == 0:
        raise ValueError("Data passed to ks_2samp must not be empty")
    if max(n1, n2) > MAX_EXACT_N:
        raise ValueError(
            f"samples of more than {MAX_EXACT_N} values take scipy's asymptotic p-value, "
            "which is not ported"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("samples must be finite")
    d = ks_statistic(a, b)
    g = math.gcd(n1, n2)
    lcm = (n1 // g) * n2
    h = distance_index(d, lcm)
    return h * 1.0 / lcm, _exact_pvalue(n1, n2, g, h)
