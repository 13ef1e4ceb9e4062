"""Memory-bounded current windows: counts against bins fixed by the reference.

A worker sees a feature's values in Kafka batches. Keeping every value of a day-long current
window would grow without bound, so a window keeps only:

* :class:`NumericWindow` — counts in ``bins`` reference-quantile bins (PSI, Jensen–Shannon,
  χ²/z on discrete columns), counts in ``fine_bins`` finer quantile bins plus the running min and
  max (Wasserstein, by spreading each bin's mass evenly over the bin), and a uniform reservoir
  sample of at most ``ks_capacity`` values (KS, which needs values). Up to ``ks_capacity`` values
  the reservoir holds the window exactly and the KS result equals ``ks_2samp`` on the raw
  window; beyond, KS runs on the uniform sample, so its p-value is that of a
  ``ks_capacity``-value sample — less power than the full window, never false confidence.
  A reference larger than ``ks_capacity`` is subsampled the same way, once.
* :class:`CategoricalWindow` — one count per category (labels compared as strings); categories
  first seen in the current window are counted too, and a χ² test calls them drift.

Memory is ``O(bins + fine_bins + ks_capacity)`` per numeric window whatever the traffic; one
Numba pass per batch does the binning, min/max and reservoir. Windows pickle.

Example
-------
>>> import numpy as np
>>> from driftline.detectors.histogram import NumericWindow
>>> rng = np.random.default_rng(1)
>>> window = NumericWindow(rng.normal(0.0, 1.0, 5000))
>>> for _ in range(20):
...     _ = window.update(rng.normal(0.3, 1.0, 1000))
>>> window.n_current
20000
>>> result = window.test()  # reference > 1000 values: normed Wasserstein, threshold 0.1
>>> result.test, result.drift, round(result.statistic, 2)
('wasserstein', True, 0.31)
>>> round(window.psi().statistic, 3), window.ks().drift  # PSI < 0.1: 'stable' by its rule
(0.094, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from .window_tests import (
    DEFAULT_BINS,
    DEFAULT_MIN_SAMPLES,
    DISTANCE_TESTS,
    P_VALUE_TESTS,
    WASSERSTEIN_MIN_STD,
    WindowTestResult,
    _bin_counts,
    _bin_index,
    _check_min_samples,
    _check_threshold,
    _insufficient,
    _labels,
    _too_few,
    _values,
    chisquare_counts,
    choose_test,
    jensen_shannon_counts,
    ks_2samp_sorted,
    psi_counts,
    quantile_edges,
    z_test_counts,
)

__all__ = ["CategoricalWindow", "NumericWindow"]

DEFAULT_FINE_BINS = 100
DEFAULT_KS_CAPACITY = 10_000
# A numeric column with at most this many distinct reference values is treated as discrete:
# one bin per value (Evidently's "n_unique <= 5" rule).
DISCRETE_MAX_VALUES = 5

# Meta slots of a NumericWindow's running state.
_SEEN, _FILL, _MIN, _MAX, _UNDER_SUM, _OVER_SUM = 0, 1, 2, 3, 4, 5


@njit(cache=True)
def _next_random(rng: np.ndarray) -> float:
    """xorshift64* in [0, 1): deterministic, and its state is one word we can persist."""
    x = rng[0]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    rng[0] = x
    return float((x * np.uint64(2685821657736338717)) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _accumulate(
    xs: np.ndarray,
    edges: np.ndarray,
    counts: np.ndarray,
    fine_edges: np.ndarray,
    fine_counts: np.ndarray,
    reservoir: np.ndarray,
    meta: np.ndarray,
    rng: np.ndarray,
) -> None:
    """One pass over a batch: both histograms, min/max and reservoir (Vitter's algorithm R)."""
    capacity = reservoir.shape[0]
    seen = int(meta[_SEEN])
    fill = int(meta[_FILL])
    lo, hi = meta[_MIN], meta[_MAX]
    last = fine_edges.shape[0]
    for i in range(xs.shape[0]):
        x = xs[i]
        counts[_bin_index(edges, x)] += 1.0
        fine = _bin_index(fine_edges, x)
        fine_counts[fine] += 1.0
        # Sums in the two open-ended bins give their exact share of the Wasserstein integral.
        if fine == 0:
            meta[_UNDER_SUM] += x
        elif fine == last:
            meta[_OVER_SUM] += x
        if x < lo:
            lo = x
        if x > hi:
            hi = x
        if fill < capacity:
            reservoir[fill] = x
            fill += 1
        else:
            # Keep the new value with probability capacity / (seen + 1), in a random slot.
            j = int(_next_random(rng) * (seen + 1))
            if j < capacity:
                reservoir[j] = x
        seen += 1
    meta[_SEEN] = seen
    meta[_FILL] = fill
    meta[_MIN] = lo
    meta[_MAX] = hi


def _uniform_sample(values: np.ndarray, capacity: int, seed: int) -> np.ndarray:
    if values.shape[0] <= capacity:
        return values
    return np.random.default_rng(seed).choice(values, size=capacity, replace=False)


def _tail_integrals(
    edges: np.ndarray, counts: np.ndarray, under_sum: float, over_sum: float
) -> np.ndarray:
    """Integral of F below the first edge and of 1 - F above the last, from bin sums:
    sum((e0 - x) / n) over the underflow bin and sum((x - ek) / n) over the overflow bin."""
    n = counts.sum()
    return np.array(
        [(counts[0] * edges[0] - under_sum) / n, (over_sum - counts[-1] * edges[-1]) / n]
    )


def _binned_wasserstein(
    edges: np.ndarray,
    ref_counts: np.ndarray,
    cur_counts: np.ndarray,
    ref_tails: np.ndarray,
    cur_tails: np.ndarray,
) -> float:
    """W1 = integral of |F_ref - F_cur| from histograms on shared bins.

    Between the first and last edge each bin's mass is spread evenly over the bin, so both
    CDFs are piecewise linear with the same breakpoints and each segment's integral is exact
    (split where the difference changes sign). The open-ended outer bins use their exact
    integrals instead (assuming one CDF stays above the other out there, as in a shift).
    """
    widths = np.diff(edges)
    diff = (
        np.cumsum(ref_counts)[:-1] / ref_counts.sum()
        - np.cumsum(cur_counts)[:-1] / cur_counts.sum()
    )
    d0, d1 = diff[:-1], diff[1:]
    a0, a1 = np.abs(d0), np.abs(d1)
    total = a0 + a1
    with np.errstate(invalid="ignore", divide="ignore"):
        crossing = np.where(total > 0, (d0 * d0 + d1 * d1) / (2.0 * total), 0.0)
    area = np.where(d0 * d1 >= 0, total / 2.0, crossing) * widths
    return float(np.sum(area) + np.sum(np.abs(ref_tails - cur_tails)))


class NumericWindow:
    """A reference sample and a growing current window of a numeric column, kept as counts.

    Parameters
    ----------
    reference
        The reference values (training data or a healthy period); at least one, all finite.
    bins
        Reference-quantile bins for PSI and Jensen–Shannon (10: deciles, PSI's usual grid).
    fine_bins
        Finer quantile bins for the Wasserstein approximation.
    ks_capacity
        Values kept (uniform reservoir) for the KS test, per window.
    min_samples
        Below this many current (or reference) values every test answers
        ``insufficient_data``.
    seed
        Seeds the reservoir's random choices, so replays of a stream give the same sample.
    """

    def __init__(
        self,
        reference: Any,
        bins: int = DEFAULT_BINS,
        fine_bins: int = DEFAULT_FINE_BINS,
        ks_capacity: int = DEFAULT_KS_CAPACITY,
        min_samples: int = DEFAULT_MIN_SAMPLES,
        seed: int = 0,
    ) -> None:
        if ks_capacity < 1:
            raise ValueError(f"ks_capacity must be >= 1, got {ks_capacity}")
        ref = _values(reference, "reference")
        self.bins, self.fine_bins, self.ks_capacity = bins, fine_bins, int(ks_capacity)
        self.min_samples, self.seed = _check_min_samples(min_samples), int(seed)
        distinct = np.unique(ref)
        self.discrete = distinct.shape[0] <= DISCRETE_MAX_VALUES
        if self.discrete:
            # One bin per distinct value for the tests (values below the smallest share its
            # bin); for Wasserstein every value is an edge, so values outside the reference's
            # range land in the open outer bins, whose sums make their share exact.
            self.edges = distinct[1:].copy()
            self.fine_edges = distinct.copy()
        else:
            self.edges = quantile_edges(ref, bins)
            self.fine_edges = quantile_edges(ref, fine_bins)
        self.n_reference = ref.shape[0]
        self.reference_counts = _bin_counts(ref, self.edges)
        self.reference_fine_counts = _bin_counts(ref, self.fine_edges)
        self.reference_sorted = np.sort(_uniform_sample(ref, self.ks_capacity, self.seed))
        self.reference_min, self.reference_max = float(ref.min()), float(ref.max())
        fine_index = np.searchsorted(self.fine_edges, ref, side="right")
        self.reference_tails = _tail_integrals(
            self.fine_edges,
            self.reference_fine_counts,
            float(ref[fine_index == 0].sum()),
            float(ref[fine_index == self.fine_edges.shape[0]].sum()),
        )
        self.reference_std = float(np.std(ref))
        self.n_unique_reference = distinct.shape[0]
        self.reset()

    def reset(self) -> None:
        """Empty the current window (e.g. at the start of a new period)."""
        self.counts = np.zeros(self.edges.shape[0] + 1)
        self.fine_counts = np.zeros(self.fine_edges.shape[0] + 1)
        self.reservoir = np.empty(self.ks_capacity)
        self.meta = np.array([0.0, 0.0, np.inf, -np.inf, 0.0, 0.0])
        # splitmix64 of the seed, so nearby seeds give unrelated streams; never 0 for xorshift.
        z = (self.seed + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        self.rng = np.array([(z ^ (z >> 31)) or 1], dtype=np.uint64)

    @property
    def n_current(self) -> int:
        return int(self.meta[_SEEN])

    def update(self, values: Any) -> NumericWindow:
        """Add a batch of current values (finite numbers); returns self."""
        xs = np.ascontiguousarray(values, dtype=np.float64).ravel()
        if xs.size and not np.isfinite(xs).all():
            bad = int(np.flatnonzero(~np.isfinite(xs))[0])
            raise ValueError(
                f"current value at index {bad} is {xs[bad]}; windows accept finite numbers only "
                "(count missing values separately)"
            )
        if xs.size:
            _accumulate(
                xs,
                self.edges,
                self.counts,
                self.fine_edges,
                self.fine_counts,
                self.reservoir,
                self.meta,
                self.rng,
            )
        return self

    def current_sample(self) -> np.ndarray:
        """The values KS sees: the whole window up to ``ks_capacity``, else a uniform sample."""
        return self.reservoir[: int(self.meta[_FILL])].copy()

    # -- tests ---------------------------------------------------------------------------
    def _guard(self, test: str, threshold: float) -> WindowTestResult | None:
        if _too_few(self.n_reference, self.n_current, self.min_samples):
            return _insufficient(test, threshold, self.n_reference, self.n_current)
        return None

    def psi(self, threshold: float = DISTANCE_TESTS["psi"]) -> WindowTestResult:
        return psi_counts(self.reference_counts, self.counts, threshold, self.min_samples)

    def jensen_shannon(
        self, threshold: float = DISTANCE_TESTS["jensenshannon"]
    ) -> WindowTestResult:
        return jensen_shannon_counts(
            self.reference_counts, self.counts, threshold, self.min_samples
        )

    def chisquare(self, threshold: float = P_VALUE_TESTS["chisquare"]) -> WindowTestResult:
        """χ² over the bins (meaningful for a discrete column: one bin per value)."""
        return chisquare_counts(self.reference_counts, self.counts, threshold, self.min_samples)

    def z_test(self, threshold: float = P_VALUE_TESTS["z"]) -> WindowTestResult:
        """z-test of the share of the lowest value; for a column with two values."""
        if self.counts.shape[0] > 2:
            raise ValueError("z_test needs a binary column (at most 2 distinct reference values)")
        return z_test_counts(
            int(self.reference_counts[0]),
            self.n_reference,
            int(self.counts[0]),
            self.n_current,
            threshold,
            self.min_samples,
        )

    def wasserstein(self, threshold: float = DISTANCE_TESTS["wasserstein"]) -> WindowTestResult:
        """Normed Wasserstein from the fine histograms (exact up to within-bin spread)."""
        threshold = _check_threshold(threshold)
        guard = self._guard("wasserstein", threshold)
        if guard is not None:
            return guard
        tails = _tail_integrals(
            self.fine_edges, self.fine_counts, self.meta[_UNDER_SUM], self.meta[_OVER_SUM]
        )
        if self.discrete:
            # Mass sits on the reference's values, so both CDFs are steps between them: exact
            # as long as current values are reference values too (a value in between counts
            # as the one below it).
            ref_cdf = np.cumsum(self.reference_fine_counts)[1:-1] / self.n_reference
            cur_cdf = np.cumsum(self.fine_counts)[1:-1] / self.n_current
            steps = float(np.sum(np.abs(ref_cdf - cur_cdf) * np.diff(self.fine_edges)))
            distance = steps + float(np.sum(np.abs(self.reference_tails - tails)))
        else:
            distance = _binned_wasserstein(
                self.fine_edges,
                self.reference_fine_counts,
                self.fine_counts,
                self.reference_tails,
                tails,
            )
        statistic = distance / max(self.reference_std, WASSERSTEIN_MIN_STD)
        return WindowTestResult(
            "wasserstein",
            statistic,
            None,
            threshold,
            statistic >= threshold,
            self.n_reference,
            self.n_current,
        )

    def ks(self, threshold: float = P_VALUE_TESTS["ks"]) -> WindowTestResult:
        """Two-sample KS on the reference (sample) and the current reservoir.

        ``n_current`` in the result is the window's full count; the p-value is that of the
        sample actually compared (see the module docstring).
        """
        threshold = _check_threshold(threshold)
        guard = self._guard("ks", threshold)
        if guard is not None:
            return guard
        result = ks_2samp_sorted(
            self.reference_sorted, np.sort(self.current_sample()), threshold, 1
        )
        return result._replace(n_reference=self.n_reference, n_current=self.n_current)

    def test(self, name: str | None = None, threshold: float | None = None) -> WindowTestResult:
        """Run ``name`` (default: :func:`~driftline.detectors.window_tests.choose_test`)."""
        if name is None:
            n_unique = self.n_unique_reference if self.discrete else None
            choice = choose_test("numeric", self.n_reference, n_unique)
            name, default = choice.test, choice.threshold
        else:
            default = {**P_VALUE_TESTS, **DISTANCE_TESTS}.get(name)
            if default is None:
                raise ValueError(f"unknown test {name!r}")
        method = {
            "ks": self.ks,
            "psi": self.psi,
            "jensenshannon": self.jensen_shannon,
            "wasserstein": self.wasserstein,
            "chisquare": self.chisquare,
            "z": self.z_test,
        }[name]
        return method(default if threshold is None else threshold)


class CategoricalWindow:
    """A reference and a growing current window of a categorical column, kept as counts.

    Labels are compared as strings (``1`` and ``"1"`` are one category). Missing values
    (``None``, NaN) are refused: give them a category of their own.

    Parameters
    ----------
    reference
        The reference labels; their distinct values are the known categories.
    min_samples
        Below this many current (or reference) values every test answers
        ``insufficient_data``.

    Example
    -------

    >>> window = CategoricalWindow(["cat"] * 60 + ["dog"] * 40)
    >>> _ = window.update(["cat"] * 20 + ["dog"] * 25 + ["eel"] * 5)
    >>> result = window.test()  # 3 categories, small reference: chi-square
    >>> result.test, result.drift, result.statistic
    ('chisquare', True, inf)
    """

    def __init__(self, reference: Any, min_samples: int = DEFAULT_MIN_SAMPLES) -> None:
        labels = _labels(reference, "reference")
        keys, counts = np.unique(labels, return_counts=True)
        self.categories: list[str] = keys.tolist()
        self._index = {key: i for i, key in enumerate(self.categories)}
        self.reference_counts = counts.astype(np.float64)
        self.n_reference = int(counts.sum())
        self.min_samples = _check_min_samples(min_samples)
        self.reset()

    def reset(self) -> None:
        self.counts = np.zeros(len(self.categories))
        self.new_categories: dict[str, int] = {}

    @property
    def n_current(self) -> int:
        return int(self.counts.sum()) + sum(self.new_categories.values())

    def update(self, values: Any) -> CategoricalWindow:
        """Add a batch of current labels; returns self."""
        if np.size(values) == 0:
            return self
        labels = _labels(values, "current")
        keys, counts = np.unique(labels, return_counts=True)
        for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
            slot = self._index.get(key)
            if slot is None:
                self.new_categories[key] = self.new_categories.get(key, 0) + count
            else:
                self.counts[slot] += count
        return self

    def aligned_counts(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Categories (reference ones first, then new ones) with reference and current counts."""
        new = sorted(self.new_categories)
        keys = self.categories + new
        ref = np.concatenate([self.reference_counts, np.zeros(len(new))])
        cur = np.concatenate([self.counts, [float(self.new_categories[k]) for k in new]])
        return keys, ref, cur

    def chisquare(self, threshold: float = P_VALUE_TESTS["chisquare"]) -> WindowTestResult:
        _, ref, cur = self.aligned_counts()
        return chisquare_counts(ref, cur, threshold, self.min_samples)

    def jensen_shannon(
        self, threshold: float = DISTANCE_TESTS["jensenshannon"]
    ) -> WindowTestResult:
        _, ref, cur = self.aligned_counts()
        return jensen_shannon_counts(ref, cur, threshold, self.min_samples)

    def psi(self, threshold: float = DISTANCE_TESTS["psi"]) -> WindowTestResult:
        _, ref, cur = self.aligned_counts()
        return psi_counts(ref, cur, threshold, self.min_samples)

    def z_test(self, threshold: float = P_VALUE_TESTS["z"]) -> WindowTestResult:
        keys, ref, cur = self.aligned_counts()
        if len(keys) > 2:
            raise ValueError(f"z_test needs a binary column, found {len(keys)} categories")
        return z_test_counts(
            int(ref[0]), self.n_reference, int(cur[0]), self.n_current, threshold, self.min_samples
        )

    def test(self, name: str | None = None, threshold: float | None = None) -> WindowTestResult:
        """Run ``name`` (default: :func:`~driftline.detectors.window_tests.choose_test`)."""
        if name is None:
            keys, _, _ = self.aligned_counts()
            choice = choose_test("categorical", self.n_reference, len(keys))
            name, default = choice.test, choice.threshold
        else:
            default = {**P_VALUE_TESTS, **DISTANCE_TESTS}.get(name)
            if default is None or name in ("ks", "wasserstein"):
                raise ValueError(f"test {name!r} does not apply to categories")
        method = {
            "psi": self.psi,
            "jensenshannon": self.jensen_shannon,
            "chisquare": self.chisquare,
            "z": self.z_test,
        }[name]
        return method(default if threshold is None else threshold)
