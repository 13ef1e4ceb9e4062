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

The KS p-value follows ``scipy.stats.ks_2samp(method="auto")``: the exact null distribution when
both windows have at most 10,000 values (Hodges' lattice-path counts), otherwise the one-sample
Kolmogorov distribution of ``round(n*m/(n+m))`` values (Simard & L'Ecuyer's choice of method).
No scipy at run time: the special functions needed are written here.

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

__all__ = [
    "DEFAULT_MIN_SAMPLES",
    "DISTANCE_TESTS",
    "P_VALUE_TESTS",
    "TestChoice",
    "WindowTestResult",
    "chi2_sf",
    "chisquare",
    "chisquare_counts",
    "choose_test",
    "jensen_shannon",
    "jensen_shannon_categorical",
    "jensen_shannon_counts",
    "kolmogorov_sf",
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
KS_EXACT_MAX_N = 10_000

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
    p_value = 1.0 if dof == 0 else chi2_sf(statistic, dof)
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


@njit(cache=True)
def _ks_max_gap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Largest ECDF gaps (a above b, b above a) of two sorted samples, by one merge walk.

    The ECDFs are evaluated right after every distinct value, as scipy does with
    ``searchsorted(side="right")``, with the same ``i / n`` arithmetic.
    """
    na, nb = a.shape[0], b.shape[0]
    i = j = 0
    up = 0.0
    down = 0.0
    while i < na or j < nb:
        x = a[i] if j >= nb or (i < na and a[i] <= b[j]) else b[j]
        while i < na and a[i] <= x:
            i += 1
        while j < nb and b[j] <= x:
            j += 1
        gap = i / na - j / nb
        if gap > up:
            up = gap
        if -gap > down:
            down = -gap
    return up, down


@njit(cache=True)
def _ks_exact_equal(n: int, h: int) -> float:
    """P(D >= h/n) for two samples of size n: the alternating reflection series,
    2 * sum_k (-1)^(k+1) C(2n, n - k h) / C(2n, n), evaluated as nested ratios
    A0 (1 - A1 (1 - A2 (...))) with A_k = C(2n, n-(k+1)h) / C(2n, n-kh), so no binomial
    coefficient is ever formed and the cancellation of the raw sum is avoided."""
    total = 0.0
    k = n // h
    while k >= 0:
        ratio = 1.0
        for j in range(h):
            ratio = ratio * (n - k * h - j) / (n + k * h + j + 1)
        total = ratio * (1.0 - total)
        k -= 1
    return 2.0 * total


@njit(cache=True)
def _ks_exact_unequal(m: int, n: int, g: int, h: int) -> float:
    """P(D >= d) for sizes m, n by Hodges' inside method, carrying 1 - p (Viehmann 2021).

    Lattice paths from (0, 0) to (m, n) step right or up; a path "stays inside" while every
    point satisfies |x n / g - y m / g| < h. Q(x, y) = share of paths to (x, y) that have
    left the band obeys Q(x, y) = (x Q(x-1, y) + y Q(x, y-1)) / (x + y) inside and Q = 1
    outside, and Q(m, n) is the p-value. One column is kept; only its band is visited.
    """
    if m < n:
        m, n = n, m
    mg, ng = m // g, n // g
    col = np.ones(n + 1)
    top = min(int(math.ceil(h / mg)), n + 1)
    col[:top] = 0.0
    for x in range(1, m + 1):
        lo = max(int(math.floor((ng * x - h) / mg)) + 1, 0)
        lo = min(lo, n)
        hi = min(int(math.ceil((ng * x + h) / mg)), n + 1)
        if hi <= lo:
            return 1.0
        below = 0.0 if lo == 0 else 1.0
        for y in range(lo, hi):
            below = (col[y] * x + below * y) / (x + y)
            col[y] = below
    return col[n]


def _log_factorial_over_power(n: int) -> float:
    """log(n! / n^n)."""
    return math.lgamma(n + 1.0) - n * math.log(n)


def _smirnov_sf(n: int, d: float) -> float:
    """P(D+_n >= d), one-sided one-sample KS, by the Birnbaum–Tingey sum in log space."""
    if d <= 0.0:
        return 1.0
    if d >= 1.0:
        return 0.0
    jmax = int(math.floor(n * (1.0 - d)))
    j = np.arange(0, jmax + 1, dtype=np.float64)
    p = d + j / n
    q = 1.0 - p
    keep = q > 0.0  # a term with 1 - d - j/n = 0 is 0 (n - j > 0 there)
    j, p, q = j[keep], p[keep], q[keep]
    lgam = np.vectorize(math.lgamma, otypes=[np.float64])
    logs = (
        math.lgamma(n + 1.0)
        - lgam(j + 1.0)
        - lgam(n - j + 1.0)
        + (j - 1.0) * np.log(p)
        + (n - j) * np.log(q)
    )
    if logs.size == 0:
        return 0.0
    top = float(logs.max())
    return min(1.0, d * math.exp(top) * float(np.sum(np.exp(logs - top))))


def _kolmogorov_cdf_durbin(n: int, d: float) -> float:
    """P(D_n < d), exact, by Durbin's matrix (Marsaglia, Tsang & Wang 2003)."""
    nd = n * d
    if nd <= 0.5:
        return 0.0
    k = int(math.ceil(nd))
    h = k - nd
    size = 2 * k - 1
    powers = np.arange(1, size + 1, dtype=np.float64)
    inv_fact = np.empty(size)  # 1/0!, 1/1!, ... 1/(size-1)!
    first = np.empty(size)  # first column: (1 - h^i) / i!
    f = 1.0
    for i in range(size):
        inv_fact[i] = f
        f /= i + 1
        first[i] = (1.0 - h ** powers[i]) * f
    corner = (1.0 + max(2.0 * h - 1.0, 0.0) ** size - 2.0 * h**size) * f
    first[-1] = corner
    matrix = np.zeros((size, size))
    for col in range(1, size):
        matrix[col - 1 :, col] = inv_fact[: size - col + 1]
    matrix[:, 0] = first
    matrix[-1, :] = first[::-1]

    # Square-and-multiply, pulling powers of two out so nothing overflows.
    result = np.eye(size)
    exponent = 0
    base_exponent = 0
    power = n
    while power > 0:
        if power & 1:
            result = result @ matrix
            exponent += base_exponent
        power >>= 1
        if power:
            matrix = matrix @ matrix
            base_exponent *= 2
            scale = abs(matrix[k - 1, k - 1])
            if scale > 2.0**128:
                matrix /= 2.0**128
                base_exponent += 128
        mag = abs(result[k - 1, k - 1])
        if mag > 2.0**128:
            result /= 2.0**128
            exponent += 128
    value = result[k - 1, k - 1]
    if value <= 0.0:
        return 0.0
    log_p = math.log(value) + exponent * math.log(2.0) + _log_factorial_over_power(n)
    return min(1.0, math.exp(log_p))


def _kolmogorov_cdf_pelz_good(n: int, x: float) -> float:
    """Pelz–Good (1976) expansion of P(D_n <= x), for large n and small n x^2."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    z = math.sqrt(n) * x
    z2, z3, z4, z6 = z * z, z**3, z**4, z**6
    pi2, pi4, pi6 = math.pi**2, math.pi**4, math.pi**6
    log_q = -pi2 / 8.0 / z2
    if log_q < -708.0:
        return 0.0
    q = math.exp(log_q)
    k1a, k1b = -z2, pi2 / 4.0
    k2a, k2b, k2c = (
        6.0 * z6 + 2.0 * z4,
        (2.0 * z4 - 5.0 * z2) * pi2 / 4.0,
        pi4 * (1.0 - 2.0 * z2) / 16.0,
    )
    k3d = pi6 * (5.0 - 30.0 * z2) / 64.0
    k3c = pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0
    k3b = pi2 * (135.0 * z4 - 96.0 * z6) / 4.0
    k3a = -30.0 * z6 - 90.0 * z**8
    # Sums over odd m = 2k - 1 of c(m) q^(m^2), in Horner form over q^(8k).
    terms = np.zeros(4)
    kmax = int(math.ceil(16.0 * z / math.pi))
    for k in range(kmax, 0, -1):
        m = 2.0 * k - 1.0
        m2 = m * m
        coeffs = np.array(
            [
                1.0,
                k1a + k1b * m2,
                k2a + k2b * m2 + k2c * m2 * m2,
                k3a + k3b * m2 + k3c * m2 * m2 + k3d * m2**3,
            ]
        )
        terms = terms * q ** (8.0 * k) + coeffs
    terms *= q * math.sqrt(2.0 * math.pi)
    terms /= np.array([z, 6.0 * z4, 72.0 * z**7, 6480.0 * z**10])
    # Sums over all k of k^2 q'^(k^2) with q' = exp(-pi^2 / (2 z^2)).
    q_all = math.exp(-pi2 / 2.0 / z2)
    ks = np.arange(kmax, 0, -1, dtype=np.float64)
    weights = ks**2 * q_all ** (ks**2)
    terms[2] += np.sum(weights) * pi2 * math.sqrt(2.0 * math.pi) / (-36.0 * z3)
    root3z = math.sqrt(3.0) * z
    terms[3] += (
        np.sum((root3z + math.pi * ks) * (root3z - math.pi * ks) * weights)
        * pi2
        * math.sqrt(2.0 * math.pi)
        / (216.0 * z6)
    )
    terms /= float(n) ** (np.arange(4) / 2.0)
    return float(np.sum(terms))


def kolmogorov_sf(n: int, x: float) -> float:
    """P(D_n >= x) for the two-sided one-sample KS statistic (``scipy.stats.kstwo.sf``).

    Method by region, after Simard & L'Ecuyer (2011) as scipy chooses: closed forms at the
    extremes (Ruben–Gambino), twice the one-sided tail when that is exact or accurate
    (x >= 0.5, or n x^2 large), Durbin's matrix for small n or small n x^1.5, else Pelz–Good.

    >>> round(kolmogorov_sf(100, 0.1), 6)
    0.252693
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if x >= 1.0:
        return 0.0
    if x <= 0.0:
        return 1.0
    t = n * x
    if t <= 1.0:
        if t <= 0.5:
            return 1.0
        cdf = math.exp(_log_factorial_over_power(n) + n * math.log(2.0 * t - 1.0))
        return min(max(1.0 - cdf, 0.0), 1.0)
    if t >= n - 1:
        return min(2.0 * (1.0 - x) ** n, 1.0)
    if x >= 0.5:
        return min(2.0 * _smirnov_sf(n, x), 1.0)
    nx2 = t * x
    if n <= 140:
        if nx2 <= 4.0:
            return min(max(1.0 - _kolmogorov_cdf_durbin(n, x), 0.0), 1.0)
        return min(2.0 * _smirnov_sf(n, x), 1.0)
    if nx2 >= 370.0:
        return 0.0
    if nx2 >= 2.2:
        return min(2.0 * _smirnov_sf(n, x), 1.0)
    if n <= 100_000 and n * x**1.5 <= 1.4:
        cdf = _kolmogorov_cdf_durbin(n, x)
    else:
        cdf = _kolmogorov_cdf_pelz_good(n, x)
    return min(max(1.0 - cdf, 0.0), 1.0)


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
    up, down = _ks_max_gap(reference_sorted, current_sorted)
    d = down if down > up else up
    p_value = None
    if max(n1, n2) <= KS_EXACT_MAX_N:
        g = math.gcd(n1, n2)
        lcm = (n1 // g) * n2
        h = int(round(d * lcm))
        d = h / lcm  # scipy reports the statistic snapped to the lattice
        if h == 0:
            p_value = 1.0
        else:
            with np.errstate(all="ignore"):
                p = _ks_exact_equal(n1, h) if n1 == n2 else _ks_exact_unequal(n1, n2, g, h)
            if math.isfinite(p) and 0.0 <= p <= 1.0:
                p_value = p
    if p_value is None:
        m, n = sorted((float(n1), float(n2)), reverse=True)
        p_value = kolmogorov_sf(int(round(m * n / (m + n))), d)
    p_value = min(max(p_value, 0.0), 1.0)
    return WindowTestResult("ks", float(d), p_value, threshold, p_value < threshold, n1, n2)


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


# -- χ² distribution ---------------------------------------------------------------------------


def _gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x): series below a + 1, continued fraction
    (modified Lentz) above, each where it converges fast and keeps relative precision."""
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    log_prefix = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        term = total = 1.0 / a
        ap = a
        for _ in range(10_000):
            ap += 1.0
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    frac = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        frac *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return min(1.0, math.exp(log_prefix) * frac)


def chi2_sf(statistic: float, dof: int) -> float:
    """P(X >= statistic) for X ~ χ²(dof) (``scipy.stats.chi2.sf``)."""
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    return _gamma_q(dof / 2.0, statistic / 2.0)
