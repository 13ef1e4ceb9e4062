"""Reference window vs current window drift tests (data drift of features and predictions).

Two families, in the spirit of Evidently's column drift tests:

* **p-value tests** — two-sample Kolmogorov–Smirnov (``ks``), χ² goodness of fit of the current
  category counts against the reference proportions (``chisquare``), two-proportion z-test for
  binary columns (``z``). Drift when ``p_value < threshold`` (default 0.05).
* **distance tests** — population stability index (``psi``), Jensen–Shannon distance
  (``jensenshannon``), Wasserstein distance divided by the reference standard deviation
  (``wasserstein``, Evidently's "normed"). Drift when ``statistic >= threshold`` (default 0.1).

Every test returns a :class:`WindowTestResult`. Below ``min_samples`` values in either window the
result says ``insufficient_data=True`` and ``drift=False``, with no statistic: too few values
give verdicts that flip on noise.

:func:`choose_test` picks a test from the column kind and the reference size, like Evidently's
default. Numeric bins come from the reference's quantiles (plus an underflow and an overflow
bin), so a current window can be kept as counts: see :mod:`driftline.detectors.histogram`.

KS equals ``scipy.stats.ks_2samp(method="auto")``: the exact null distribution when both windows
have at most 10,000 values, otherwise the one-sample Kolmogorov distribution of
``round(n*m/(n+m))`` values (see :mod:`driftline.detectors._ks` for what runs in Numba and what
in scipy). The χ² p-value is ``scipy.special.chdtrc``.

Example
-------
>>> import numpy as np
>>> from driftline.detectors.window_tests import ks_2samp, psi
>>> rng = np.random.default_rng(0)
>>> reference = rng.normal(0.0, 1.0, 500)
>>> result = ks_2samp(reference, rng.normal(0.5, 1.0, 400))
>>> result.test, result.drift, round(result.statistic, 3), result.p_value < 1e-6
('ks', True, 0.233, True)
>>> psi(reference, rng.normal(0.0, 1.0, 400)).drift
False
>>> ks_2samp(reference, [0.1, 0.2]).insufficient_data
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numba import njit

from . import _ks

__all__ = [
    "DEFAULT_MIN_SAMPLES",
    "DISTANCE_TESTS",
    "P_VALUE_TESTS",
    "TestChoice",
    "WindowTestResult",
    "chisquare",
    "chisquare_counts",
    "choose_test",
    "jensen_shannon",
    "jensen_shannon_categorical",
    "jensen_shannon_counts",
    "ks_2samp",
    "ks_2samp_sorted",
    "psi",
    "psi_counts",
    "quantile_edges",
    "run_test",
    "wasserstein",
    "z_test",
    "z_test_counts",
]

DEFAULT_MIN_SAMPLES = 30
DEFAULT_BINS = 10
# Evidently replaces empty-bin shares by 1e-4 before PSI; without it one empty bin makes PSI
# infinite.
PSI_EPSILON = 1e-4
# Evidently's floor on the reference std for normed Wasserstein, so a constant reference
# column does not divide by zero.
WASSERSTEIN_MIN_STD = 1e-3
# scipy's ks_2samp(method="auto") is exact up to this window size.
KS_EXACT_MAX_N = _ks.MAX_EXACT_N

P_VALUE_TESTS = {"ks": 0.05, "chisquare": 0.05, "z": 0.05}
DISTANCE_TESTS = {"psi": 0.1, "jensenshannon": 0.1, "wasserstein": 0.1}


class WindowTestResult(NamedTuple):
    """Outcome of one reference-vs-current test.

    ``statistic`` and ``p_value`` are ``None`` when ``insufficient_data``; ``p_value`` is also
    ``None`` for distance tests. ``drift`` is ``p_value < threshold`` for p-value tests and
    ``statistic >= threshold`` for distance tests, and always ``False`` without enough data.
    """

    test: str
    statistic: float | None
    p_value: float | None
    threshold: float
    drift: bool
    n_reference: int
    n_current: int
    insufficient_data: bool = False


@dataclass(frozen=True)
class TestChoice:
    """A test name and its default threshold, as chosen by :func:`choose_test`."""

    __test__ = False  # not a pytest class, despite the name

    test: str
    threshold: float


def choose_test(kind: str, n_reference: int, n_unique: int | None = None) -> TestChoice:
    """Default test for a column, Evidently's rule.

    ``kind`` is ``"numeric"`` or ``"categorical"``; ``n_unique`` is the number of distinct
    values seen in reference and current together (``None``: many).

    ======================  ==============================  ===============================
    column                  reference <= 1000 values        reference > 1000 values
    ======================  ==============================  ===============================
    numeric, > 5 values     ``ks`` (p < 0.05)               ``wasserstein`` normed (>= 0.1)
    numeric, 3..5 values    ``chisquare`` (p < 0.05)        ``jensenshannon`` (>= 0.1)
    categorical, > 2        ``chisquare`` (p < 0.05)        ``jensenshannon`` (>= 0.1)
    binary (<= 2 values)    ``z`` (p < 0.05)                ``jensenshannon`` (>= 0.1)
    ======================  ==============================  ===============================

    Small references get a significance test: with few values a distance is noisy, while a
    p-value accounts for the sample size. Large references get a distance: with many values
    every test becomes "significant" for shifts too small to matter.

    >>> choose_test("numeric", 500)
    TestChoice(test='ks', threshold=0.05)
    >>> choose_test("numeric", 50_000)
    TestChoice(test='wasserstein', threshold=0.1)
    >>> choose_test("categorical", 200, n_unique=2)
    TestChoice(test='z', threshold=0.05)
    >>> choose_test("categorical", 5000, n_unique=12)
    TestChoice(test='jensenshannon', threshold=0.1)
    """
    if kind not in ("numeric", "categorical"):
        raise ValueError(f"kind must be 'numeric' or 'categorical', got {kind!r}")
    if n_reference < 0:
        raise ValueError(f"n_reference must be >= 0, got {n_reference}")
    few = n_unique is not None and n_unique <= 5
    if n_reference <= 1000:
        if kind == "numeric" and not few:
            name = "ks"
        elif n_unique is not None and n_unique <= 2:
            name = "z"
        else:
            name = "chisquare"
    elif kind == "numeric" and not few:
        name = "wasserstein"
    else:
        name = "jensenshannon"
    return TestChoice(name, {**P_VALUE_TESTS, **DISTANCE_TESTS}[name])


# -- input checks ------------------------------------------------------------------------


def _values(xs: Any, what: str) -> np.ndarray:
    values = np.asarray(xs, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError(f"the {what} window is empty; a drift test needs values on both sides")
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ValueError(
            f"{what} value at index {bad} is {values[bad]}; drift tests accept finite numbers "
            "only (count missing values separately, e.g. as a share-of-missing metric)"
        )
    return values


def _counts(counts: Any, what: str) -> np.ndarray:
    values = np.asarray(counts, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError(f"{what} counts are empty; give one count per bin or category")
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"{what} counts must be finite and >= 0, got {values}")
    return values


def _check_threshold(threshold: float) -> float:
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a positive finite number, got {threshold}")
    return float(threshold)


def _check_min_samples(min_samples: int) -> int:
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    return int(min_samples)


def _insufficient(test: str, threshold: float, n_ref: int, n_cur: int) -> WindowTestResult:
    return WindowTestResult(test, None, None, threshold, False, n_ref, n_cur, True)


def _too_few(n_ref: int, n_cur: int, min_samples: int) -> bool:
    return n_ref < min_samples or n_cur < min_samples


# -- binning -------------------------------------------------------------------------------


def quantile_edges(reference: Any, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (duplicates dropped).

    With ``k`` inner edges there are ``k + 1`` bins: ``(-inf, e0), [e0, e1), ..., [e_k-1, inf)``,
    so the first and last bins also catch current values outside the reference's range.

    >>> quantile_edges([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], bins=4).tolist()
    [3.25, 5.5, 7.75]
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    values = _values(reference, "reference")
    inner = np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    # Ties (a discrete column) collapse quantiles; equal edges would make empty bins.
    return np.unique(inner)


@njit(cache=True)
def _bin_index(edges: np.ndarray, x: float) -> int:
    """Number of edges <= x, i.e. ``searchsorted(edges, x, side="right")``."""
    lo, hi = 0, edges.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if edges[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _bin_counts_kernel(values: np.ndarray, edges: np.ndarray, counts: np.ndarray) -> None:
    for i in range(values.shape[0]):
        counts[_bin_index(edges, values[i])] += 1.0


def _bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin; bins are ``(-inf, e0), [e0, e1), ..., [e_last, inf)``."""
    counts = np.zeros(edges.shape[0] + 1)
    _bin_counts_kernel(
        np.ascontiguousarray(values, dtype=np.float64),
        np.ascontiguousarray(edges, dtype=np.float64),
        counts,
    )
    return counts


# -- distances from counts -------------------------------------------------------------------


def _paired(reference_counts: Any, current_counts: Any) -> tuple[np.ndarray, np.ndarray]:
    ref = _counts(reference_counts, "reference")
    cur = _counts(current_counts, "current")
    if ref.shape != cur.shape:
        raise ValueError(f"{ref.shape[0]} reference bins but {cur.shape[0]} current bins")
    return ref, cur


def _distance_result(
    test: str,
    statistic: float,
    threshold: float,
    n_ref: int,
    n_cur: int,
) -> WindowTestResult:
    return WindowTestResult(test, statistic, None, threshold, statistic >= threshold, n_ref, n_cur)


def psi_counts(
    reference_counts: Any,
    current_counts: Any,
    threshold: float = DISTANCE_TESTS["psi"],
    min_samples: int = DEFAULT_MIN_SAMPLES,
    epsilon: float = PSI_EPSILON,
) -> WindowTestResult:
    """PSI = sum((cur - ref) * ln(cur / ref)) over bin shares, empty shares set to ``epsilon``.

    Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift.
    """
    threshold, min_samples = _check_threshold(threshold), _check_min_samples(min_samples)
    ref, cur = _paired(reference_counts, current_counts)
    n_ref, n_cur = int(ref.sum()), int(cur.sum())
    if _too_few(n_ref, n_cur, min_samples):
        return _insufficient("psi", threshold, n_ref, n_cur)
    ref, cur = ref / ref.sum(), cur / cur.sum()
    ref = np.where(ref == 0, epsilon, ref)
    cur = np.where(cur == 0, epsilon, cur)
    return _distance_result(
        "psi", float(np.sum((cur - ref) * np.log(cur / ref))), threshold, n_ref, n_cur
    )


def jensen_shannon_counts(
    reference_counts: Any,
    current_counts: Any,
    threshold: float = DISTANCE_TESTS["jensenshannon"],
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """Jensen–Shannon distance (natural log, as ``scipy.spatial.distance.jensenshannon``).

    The square root of the JS divergence: 0 for equal distributions, at most sqrt(ln 2) ~ 0.833.
    """
    threshold, min_samples = _check_threshold(threshold), _check_min_samples(min_samples)
    ref, cur = _paired(reference_counts, current_counts)
    n_ref, n_cur = int(ref.sum()), int(cur.sum())
    if _too_few(n_ref, n_cur, min_samples):
        return _insufficient("jensenshannon", threshold, n_ref, n_cur)
    ref, cur = ref / ref.sum(), cur / cur.sum()
    mid = (ref + cur) / 2.0

    def kl(p: np.ndarray) -> float:
        # 0 * ln(0 / m) = 0; m > 0 wherever p > 0.
        nz = p > 0
        return float(np.sum(p[nz] * np.log(p[nz] / mid[nz])))

    divergence = max((kl(ref) + kl(cur)) / 2.0, 0.0)
    return _distance_result("jensenshannon", math.sqrt(divergence), threshold, n_ref, n_cur)


def chisquare_counts(
    reference_counts: Any,
    current_counts: Any,
    threshold: float = P_VALUE_TESTS["chisquare"],
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """χ² goodness of fit of current counts against reference proportions (Evidently's form).

    Expected counts are the reference counts scaled to the current total, i.e.
    ``scipy.stats.chisquare(current, reference * n_current / n_reference)``; ``k - 1`` degrees of
    freedom for ``k`` categories. A category seen only in the current window gives an infinite
    statistic (p = 0): a brand-new category is drift. With a single category, p = 1.
    """
    threshold, min_samples = _check_threshold(threshold), _check_min_samples(min_samples)
    ref, cur = _paired(reference_counts, current_counts)
    n_ref, n_cur = int(ref.sum()), int(cur.sum())
    if _too_few(n_ref, n_cur, min_samples):
        return _insufficient("chisquare", threshold, n_ref, n_cur)
    expected = ref * (cur.sum() / ref.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = (cur - expected) ** 2 / expected
    # 0/0 cannot happen (a category is listed because one side has it); x/0 is +inf.
    statistic = float(np.sum(terms))
    dof = ref.shape[0] - 1
    if dof == 0:
        p_value = 1.0
    else:
        # scipy.special is imported here, not at the top: it adds ~0.3 s to importing
        # driftline.detectors, which most users of the detectors never need.
        from scipy.special import chdtrc

        p_value = float(chdtrc(dof, statistic))  # what scipy.stats.chi2.sf computes
    return WindowTestResult(
        "chisquare", statistic, p_value, threshold, p_value < threshold, n_ref, n_cur
    )


def z_test_counts(
    reference_positives: int,
    n_reference: int,
    current_positives: int,
    n_current: int,
    threshold: float = P_VALUE_TESTS["z"],
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """Two-sided two-proportion z-test with a pooled proportion (Evidently's ``z`` test).

    ``statistic`` is z = (p_ref - p_cur) / sqrt(P (1 - P) (1/n_ref + 1/n_cur)). When both windows
    hold one and the same value (P is 0 or 1) there is nothing to test: z = 0, p = 1.
    """
    threshold, min_samples = _check_threshold(threshold), _check_min_samples(min_samples)
    if not (0 <= reference_positives <= n_reference and 0 <= current_positives <= n_current):
        raise ValueError("positives must be between 0 and the window size")
    if _too_few(n_reference, n_current, min_samples):
        return _insufficient("z", threshold, n_reference, n_current)
    p_ref = reference_positives / n_reference
    p_cur = current_positives / n_current
    pooled = (reference_positives + current_positives) / (n_reference + n_current)
    variance = pooled * (1.0 - pooled) * (1.0 / n_reference + 1.0 / n_current)
    if variance == 0.0:
        z, p_value = 0.0, 1.0
    else:
        z = (p_ref - p_cur) / math.sqrt(variance)
        # erfc keeps precision in the tail, where 2 * (1 - Phi(|z|)) would round to 0.
        p_value = math.erfc(abs(z) / math.sqrt(2.0))
    return WindowTestResult("z", z, p_value, threshold, p_value < threshold, n_reference, n_current)


# -- tests on raw values ----------------------------------------------------------------------


def psi(
    reference: Any,
    current: Any,
    bins: int = DEFAULT_BINS,
    threshold: float = DISTANCE_TESTS["psi"],
    min_samples: int = DEFAULT_MIN_SAMPLES,
    epsilon: float = PSI_EPSILON,
) -> WindowTestResult:
    """PSI over ``bins`` reference-quantile bins (see :func:`psi_counts`)."""
    ref, cur = _values(reference, "reference"), _values(current, "current")
    edges = quantile_edges(ref, bins)
    return psi_counts(
        _bin_counts(ref, edges), _bin_counts(cur, edges), threshold, min_samples, epsilon
    )


def jensen_shannon(
    reference: Any,
    current: Any,
    bins: int = DEFAULT_BINS,
    threshold: float = DISTANCE_TESTS["jensenshannon"],
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """Jensen–Shannon distance over ``bins`` reference-quantile bins."""
    ref, cur = _values(reference, "reference"), _values(current, "current")
    edges = quantile_edges(ref, bins)
    return jensen_shannon_counts(
        _bin_counts(ref, edges), _bin_counts(cur, edges), threshold, min_samples
    )


def wasserstein(
    reference: Any,
    current: Any,
    threshold: float = DISTANCE_TESTS["wasserstein"],
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """Wasserstein-1 distance divided by the reference std (Evidently's "normed" Wasserstein).

    Equals ``scipy.stats.wasserstein_distance(reference, current) / max(std(reference), 1e-3)``,
    so 0.1 means "the distributions are a tenth of a standard deviation apart".
    """
    threshold, min_samples = _check_threshold(threshold), _check_min_samples(min_samples)
    ref, cur = _values(reference, "reference"), _values(current, "current")
    if _too_few(ref.size, cur.size, min_samples):
        return _insufficient("wasserstein", threshold, ref.size, cur.size)
    a, b = np.sort(ref), np.sort(cur)
    grid = np.sort(np.concatenate([a, b]))
    widths = np.diff(grid)
    cdf_a = np.searchsorted(a, grid[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, grid[:-1], side="right") / b.size
    distance = float(np.sum(np.abs(cdf_a - cdf_b) * widths))
    scale = max(float(np.std(ref)), WASSERSTEIN_MIN_STD)
    return _distance_result("wasserstein", distance / scale, threshold, ref.size, cur.size)


def _labels(xs: Any, what: str) -> np.ndarray:
    """Category labels as a 1-D array of strings, refusing missing values (None, NaN)."""
    # A list goes through object dtype: np.asarray(["a", nan]) would quietly make "nan" a label.
    values = (xs if isinstance(xs, np.ndarray) else np.asarray(xs, dtype=object)).ravel()
    if values.size == 0:
        raise ValueError(f"the {what} window is empty; a drift test needs values on both sides")
    bad = -1
    if values.dtype == object:
        # Mixed Python objects: only a per-item look can tell None / float NaN apart.
        for i, v in enumerate(values.tolist()):
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                bad = i
                break
    elif values.dtype.kind in "fc" and not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
    if bad >= 0:
        raise ValueError(
            f"{what} category at index {bad} is {values[bad]!r}; map missing values to a "
            "category of their own (e.g. '<missing>') or drop them before testing"
        )
    return values if values.dtype.kind == "U" else values.astype(str)


def _category_counts(reference: Any, current: Any) -> tuple[list[Any], np.ndarray, np.ndarray]:
    ref, cur = _labels(reference, "reference"), _labels(current, "current")
    ref_keys, ref_n = np.unique(ref, return_counts=True)
    cur_keys, cur_n = np.unique(cur, return_counts=True)
    keys = sorted(set(ref_keys.tolist()) | set(cur_keys.tolist()))
    ref_map = dict(zip(ref_keys.tolist(), ref_n.tolist(), strict=True))
    cur_map = dict(zip(cur_keys.tolist(), cur_n.tolist(), strict=True))
    ref_counts = np.array([ref_map.get(k, 0) for k in keys], dtype=np.float64)
    cur_counts = np.array([cur_map.get(k, 0) for k in keys], dtype=np.float64)
    return keys, ref_counts, cur_counts


def chisquare(
    reference: Any,
    current: Any,
    threshold: float = P_VALUE_TESTS["chisquare"],
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """χ² test on category labels (see :func:`chisquare_counts`). Labels compare as strings."""
    _, ref_counts, cur_counts = _category_counts(reference, current)
    return chisquare_counts(ref_counts, cur_counts, threshold, min_samples)


def z_test(
    reference: Any,
    current: Any,
    threshold: float = P_VALUE_TESTS["z"],
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """Two-proportion z-test on a column with at most two labels (see :func:`z_test_counts`)."""
    keys, ref_counts, cur_counts = _category_counts(reference, current)
    if len(keys) > 2:
        raise ValueError(f"z-test needs a binary column, found {len(keys)} labels: {keys[:5]}")
    return z_test_counts(
        int(ref_counts[0]),
        int(ref_counts.sum()),
        int(cur_counts[0]),
        int(cur_counts.sum()),
        threshold,
        min_samples,
    )


def jensen_shannon_categorical(
    reference: Any,
    current: Any,
    threshold: float = DISTANCE_TESTS["jensenshannon"],
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """Jensen–Shannon distance between category shares."""
    _, ref_counts, cur_counts = _category_counts(reference, current)
    return jensen_shannon_counts(ref_counts, cur_counts, threshold, min_samples)


def run_test(
    name: str,
    reference: Sequence[Any] | np.ndarray,
    current: Sequence[Any] | np.ndarray,
    kind: str = "numeric",
    threshold: float | None = None,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """Run a test by name (as returned by :func:`choose_test`) on raw windows.

    >>> run_test("z", ["a"] * 40 + ["b"] * 60, ["a"] * 70 + ["b"] * 30, kind="categorical").drift
    True
    """
    known = {**P_VALUE_TESTS, **DISTANCE_TESTS}
    if name not in known:
        raise ValueError(f"unknown test {name!r}; choose one of {sorted(known)}")
    limit = known[name] if threshold is None else threshold
    if kind == "categorical":
        if name == "chisquare":
            return chisquare(reference, current, limit, min_samples)
        if name == "z":
            return z_test(reference, current, limit, min_samples)
        if name in ("jensenshannon", "psi"):
            _, ref_counts, cur_counts = _category_counts(reference, current)
            fn = jensen_shannon_counts if name == "jensenshannon" else psi_counts
            return fn(ref_counts, cur_counts, limit, min_samples)
        raise ValueError(f"{name!r} needs numeric values, not categories")
    if kind != "numeric":
        raise ValueError(f"kind must be 'numeric' or 'categorical', got {kind!r}")
    if name == "ks":
        return ks_2samp(reference, current, limit, min_samples)
    if name == "psi":
        return psi(reference, current, threshold=limit, min_samples=min_samples)
    if name == "jensenshannon":
        return jensen_shannon(reference, current, threshold=limit, min_samples=min_samples)
    if name == "wasserstein":
        return wasserstein(reference, current, limit, min_samples)
    # chisquare / z on a numeric column with few distinct values: treat values as labels.
    return run_test(name, reference, current, "categorical", limit, min_samples)


# -- Kolmogorov–Smirnov ------------------------------------------------------------------------


def ks_2samp_sorted(
    reference_sorted: np.ndarray,
    current_sorted: np.ndarray,
    threshold: float = P_VALUE_TESTS["ks"],
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """:func:`ks_2samp` on already sorted, validated float64 arrays (skips the sort)."""
    threshold, min_samples = _check_threshold(threshold), _check_min_samples(min_samples)
    n1, n2 = reference_sorted.shape[0], current_sorted.shape[0]
    if _too_few(n1, n2, min_samples):
        return _insufficient("ks", threshold, n1, n2)
    d, p_value = _ks.ks_2samp_sorted(reference_sorted, current_sorted)
    return WindowTestResult("ks", d, p_value, threshold, p_value < threshold, n1, n2)


def ks_2samp(
    reference: Any,
    current: Any,
    threshold: float = P_VALUE_TESTS["ks"],
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """Two-sample, two-sided Kolmogorov–Smirnov test, as ``scipy.stats.ks_2samp`` ("auto").

    The statistic is the largest gap between the two empirical CDFs; the p-value is exact for
    windows of at most 10,000 values and asymptotic beyond (see the module docstring).
    """
    ref = np.sort(_values(reference, "reference"))
    cur = np.sort(_values(current, "current"))
    return ks_2samp_sorted(ref, cur, threshold, min_samples)
