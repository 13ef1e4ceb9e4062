"""Binned two-sample tests with p-values that hold for a *sampled* reference.

:mod:`driftline.detectors.window_tests` follows Evidently: its χ² takes the reference shares as
the truth, and PSI / Jensen–Shannon come with fixed cut-offs (0.1) and no p-value. Both are
fine for a report; neither can be held to a false-alarm budget. A reference is itself a sample
(a training set, or a model's first events), so here every test compares two samples:

* ``chisquare`` — Pearson's χ² test of homogeneity on the ``2 x k`` table (reference, current)
  x bins, ``k - 1`` degrees of freedom: ``scipy.stats.chi2_contingency(correction=False)``.
* ``psi`` — the population stability index of the same table, with its asymptotic null
  distribution: for two samples of sizes ``n`` and ``m`` from one distribution,
  ``PSI * n m / (n + m)`` tends to χ² with ``k - 1`` degrees of freedom (PSI is the symmetrised
  Kullback–Leibler divergence, whose second-order expansion is Pearson's statistic; Yurdakul,
  "Statistical properties of population stability index", 2018).

Cells where either sample expects fewer than 5 values are pooled into one before testing (the
textbook condition for the χ² approximation; without it a rare category makes tiny p-values
out of noise). Pooling is decided from the table's margins only, so it is the same whatever
order the values came in.

>>> import numpy as np
>>> from driftline.detectors.two_sample import chisquare_homogeneity, psi_test
>>> ref = np.array([400.0, 300.0, 200.0, 100.0])
>>> r = chisquare_homogeneity(ref, np.array([40.0, 30.0, 20.0, 10.0]), alpha=1e-3)
>>> round(r.statistic, 6), r.p_value, r.drift
(0.0, 1.0, False)
>>> psi_test(ref, np.array([10.0, 20.0, 30.0, 40.0]), alpha=1e-3).drift
True
"""

from __future__ import annotations

import numpy as np

from .window_tests import (
    DEFAULT_MIN_SAMPLES,
    PSI_EPSILON,
    WindowTestResult,
    _check_min_samples,
    _insufficient,
    _paired,
    _too_few,
)

__all__ = ["MIN_EXPECTED", "chisquare_homogeneity", "pool_rare_cells", "psi_test"]

MIN_EXPECTED = 5.0


def _check_alpha(alpha: float) -> float:
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return float(alpha)


def pool_rare_cells(
    reference_counts: np.ndarray, current_counts: np.ndarray, min_expected: float = MIN_EXPECTED
) -> tuple[np.ndarray, np.ndarray]:
    """Merge cells whose smaller expected count is below ``min_expected`` into one cell.

    The expected count of cell ``j`` in the smaller sample is ``min(n, m) * total_j / (n + m)``
    under "same distribution". All rare cells are merged into one; if that cell is still rare,
    it joins the smallest of the remaining cells.

    >>> ref, cur = pool_rare_cells(np.array([500.0, 400.0, 2.0, 1.0]), np.array([50.0, 40.0, 1.0, 0.0]))
    >>> ref.tolist(), cur.tolist()
    ([500.0, 403.0], [50.0, 41.0])
    """
    n, m = reference_counts.sum(), current_counts.sum()
    totals = reference_counts + current_counts
    expected = min(n, m) * totals / (n + m)
    rare = expected < min_expected
    if not rare.any():
        return reference_counts, current_counts
    keep = ~rare
    ref = list(reference_counts[keep])
    cur = list(current_counts[keep])
    pooled_ref = float(reference_counts[rare].sum())
    pooled_cur = float(current_counts[rare].sum())
    if min(n, m) * (pooled_ref + pooled_cur) / (n + m) >= min_expected or not ref:
        ref.append(pooled_ref)
        cur.append(pooled_cur)
    else:
        smallest = int(np.argmin(np.asarray(ref) + np.asarray(cur)))
        ref[smallest] += pooled_ref
        cur[smallest] += pooled_cur
    return np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)


def _chi2_sf(dof: int, statistic: float) -> float:
    # scipy.special is imported late: it adds ~0.3 s to importing driftline.detectors.
    from scipy.special import chdtrc

    return float(chdtrc(dof, statistic))


def chisquare_homogeneity(
    reference_counts: np.ndarray,
    current_counts: np.ndarray,
    alpha: float,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    min_expected: float = MIN_EXPECTED,
) -> WindowTestResult:
    """Pearson χ² test that two samples' counts over the same cells share one distribution.

    ``drift`` is ``p_value < alpha``; ``threshold`` in the result is ``alpha``.
    """
    alpha, min_samples = _check_alpha(alpha), _check_min_samples(min_samples)
    ref, cur = _paired(reference_counts, current_counts)
    n_ref, n_cur = int(ref.sum()), int(cur.sum())
    if _too_few(n_ref, n_cur, min_samples):
        return _insufficient("chisquare", alpha, n_ref, n_cur)
    ref, cur = pool_rare_cells(ref, cur, min_expected)
    nonempty = (ref + cur) > 0
    ref, cur = ref[nonempty], cur[nonempty]
    if ref.shape[0] < 2:
        return WindowTestResult("chisquare", 0.0, 1.0, alpha, False, n_ref, n_cur)
    table = np.vstack([ref, cur])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    p_value = _chi2_sf(ref.shape[0] - 1, statistic)
    return WindowTestResult("chisquare", statistic, p_value, alpha, p_value < alpha, n_ref, n_cur)


def psi_test(
    reference_counts: np.ndarray,
    current_counts: np.ndarray,
    alpha: float,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    min_expected: float = MIN_EXPECTED,
    epsilon: float = PSI_EPSILON,
) -> WindowTestResult:
    """PSI over the (pooled) cells with the p-value of ``PSI * n m / (n + m) ~ χ²(k - 1)``.

    Empty shares are replaced by ``epsilon`` as Evidently does (pooling makes that rare).
    """
    alpha, min_samples = _check_alpha(alpha), _check_min_samples(min_samples)
    ref, cur = _paired(reference_counts, current_counts)
    n_ref, n_cur = int(ref.sum()), int(cur.sum())
    if _too_few(n_ref, n_cur, min_samples):
        return _insufficient("psi", alpha, n_ref, n_cur)
    ref, cur = pool_rare_cells(ref, cur, min_expected)
    nonempty = (ref + cur) > 0
    ref, cur = ref[nonempty], cur[nonempty]
    if ref.shape[0] < 2:
        return WindowTestResult("psi", 0.0, 1.0, alpha, False, n_ref, n_cur)
    p, q = ref / ref.sum(), cur / cur.sum()
    p, q = np.where(p == 0, epsilon, p), np.where(q == 0, epsilon, q)
    statistic = float(np.sum((q - p) * np.log(q / p)))
    n_eff = n_ref * n_cur / (n_ref + n_cur)
    p_value = _chi2_sf(ref.shape[0] - 1, statistic * n_eff)
    return WindowTestResult("psi", statistic, p_value, alpha, p_value < alpha, n_ref, n_cur)
