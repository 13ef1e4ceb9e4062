"""CBPE: confidence-based performance estimation (NannyML's method), for windows of predictions
whose labels have not arrived yet.

A classifier that publishes a confidence ``s`` with each prediction tells us how often it
expects to be right. If the confidence were calibrated, ``P(correct | s) = s`` and the expected
accuracy of a window would be the mean confidence. Real models are rarely calibrated, so the
calibration map ``c(g, s) = P(correct | predicted class g, confidence s)`` is fitted on labelled
predictions (the first ``calibration_size`` labelled pairs the model produces: its *reference*
period, as NannyML fits on a labelled reference set) and then frozen. A window's expected
accuracy is the mean of ``c`` over its predictions; for a binary model the expected confusion
matrix follows from the same map, predicted-positive rows contributing ``c`` to TP and ``1 - c``
to FP, predicted-negative rows ``c`` to TN and ``1 - c`` to FN, and expected precision, recall
and F1 are ratios of those expected cells (NannyML's estimator).

The assumption: **no concept drift** — ``P(y | s)`` stays what it was in the calibration
period. Covariate shift (the scores move) is what CBPE handles; a change of the relation
between score and truth is invisible to it, and the estimate then diverges from the realised
value until labels show it (see docs/cbpe.md).

Everything kept is a small array, so the estimator serialises to bytes and a restarted worker
continues exactly:

* calibration: per (predicted class, fine score bin) the number of labelled pairs and how many
  were correct. At the freeze, adjacent fine bins are pooled until each pooled bin holds at
  least ``min_bin_count`` pairs (histogram binning with data-adaptive edges, so no shape of
  ``c`` is assumed: a positive-class score gives a rising map for one predicted class and a
  falling one for the other); a class with fewer pairs than that uses the all-class map.
* windows: tumbling event-time windows ``[k * window_ms, (k + 1) * window_ms)``; a window holds
  a histogram of its predictions over (predicted class, fine score bin) and closes at the first
  prediction of a later window. A prediction older than the open window is *late*: counted,
  not estimated. Windows that close before the calibration is frozen wait (at most
  ``max_pending``) and are estimated at the freeze, with the same result as if the freeze had
  come first: an estimate is a function of the window's histogram and the frozen map only.

Scores are confidences or positive-class probabilities in [0, 1]; values outside are clipped to
the end bins. Predicted classes are kept by name, the first ``max_classes - 1`` in their own
calibration row, any further class sharing the last one.

Example
-------
A model whose confidence overstates its accuracy (it is right with probability ``s ** 2``):

>>> import numpy as np
>>> from driftline.detectors.cbpe import CBPE
>>> rng = np.random.default_rng(3)
>>> def traffic(n, start_ms):
...     s = rng.uniform(0.5, 1.0, n)
...     predicted = np.where(rng.random(n) < 0.5, "yes", "no").astype(object)
...     return start_ms + np.arange(n), predicted, s, rng.random(n) < s ** 2
>>> cbpe = CBPE(window_ms=10_000, calibration_size=20_000)
>>> times, predicted, s, correct = traffic(20_000, 0)
>>> cbpe.observe_labels(predicted, s, correct)    # the labelled past
[]
>>> times, predicted, s, correct = traffic(30_000, 100_000)
>>> estimates = cbpe.update(times, predicted, s)  # labels not there yet
>>> [e.window_start_ms for e in estimates]
[100000, 110000]
>>> first = estimates[0]
>>> round(first.accuracy, 3), round(first.accuracy_std_error, 4)  # E[s**2] = 0.583
(0.588, 0.0054)
>>> round(float(correct[:10_000].mean()), 3), round(float(s[:10_000].mean()), 3)  # realised; mean s
(0.576, 0.749)
>>> first.positive_label, round(first.precision, 3), round(first.recall, 3)
('yes', 0.588, 0.583)
"""

from __future__ import annotations

import json
import struct
from typing import Any, NamedTuple

import numpy as np
from numba import njit

__all__ = ["CBPE", "WindowEstimate", "confidence", "estimate_window"]

_MAGIC = b"DLC1"
_NO_WINDOW = -(2**62)  # no open window yet

_njit = njit(cache=True, nogil=True)


class WindowEstimate(NamedTuple):
    """The estimate of one closed window. ``accuracy_std_error``: the standard deviation of
    the window's realised accuracy around the estimate when P(y | score) has not changed: the
    realised count is a sum of independent Bernoulli(c) (variance ``sum c (1 - c)``), and each
    calibrated rate ``c`` is itself estimated from the ``m`` pairs of its pool (variance
    ``c (1 - c) / m``, weighted by the window's predictions in that pool, squared).
    Binary models only (else NaN / None): ``positive_label``, the expected confusion cells and
    precision, recall and F1 of the positive class."""

    window_start_ms: int
    window_end_ms: int
    n_predictions: int
    n_late: int
    model_version: str
    accuracy: float
    accuracy_std_error: float
    precision: float
    recall: float
    f1: float
    expected_tp: float
    expected_fp: float
    expected_fn: float
    expected_tn: float
    positive_label: str | None
    calibration_size: int


# -- kernels ------------------------------------------------------------------------------------


@_njit
def _bins(scores, n_bins):
    """Fine bin of each score: ``n_bins`` equal-width bins on [0, 1], outside values clipped."""
    out = np.empty(scores.shape[0], dtype=np.int64)
    for i in range(scores.shape[0]):
        b = int(np.floor(scores[i] * n_bins))
        out[i] = 0 if b < 0 else (n_bins - 1 if b >= n_bins else b)
    return out


@_njit
def _fit_kernel(cal_n, cal_correct, groups, bins, correct, n_cal, limit):
    """Add labelled pairs, in order, until the calibration holds ``limit``; returns how many
    it holds (pairs past the limit are not used: the map is frozen)."""
    for i in range(groups.shape[0]):
        if n_cal >= limit:
            break
        cal_n[groups[i], bins[i]] += 1.0
        cal_correct[groups[i], bins[i]] += correct[i]
        n_cal += 1
    return n_cal


@_njit
def _pool_row(n, c, min_count, out, out_n):
    """Histogram binning of one row: adjacent fine bins pooled left to right until a pool holds
    ``min_count`` pairs (a short last pool joins the one before); each fine bin gets its pool's
    rate (``out``) and its number of pairs (``out_n``). Returns False when the row has fewer than ``min_count`` pairs in all."""
    total = 0.0
    for b in range(n.shape[0]):
        total += n[b]
    if total < min_count or total == 0.0:
        return False
    start = 0
    pool_n = 0.0
    pool_c = 0.0
    last_start = 0
    for b in range(n.shape[0]):
        pool_n += n[b]
        pool_c += c[b]
        if pool_n >= min_count:
            for k in range(start, b + 1):
                out[k] = pool_c / pool_n
                out_n[k] = pool_n
            last_start = start
            start = b + 1
            pool_n = 0.0
            pool_c = 0.0
    if start < n.shape[0]:
        # the tail holds fewer than min_count: merge it into the last full pool
        tail_n = pool_n
        tail_c = pool_c
        for k in range(last_start, start):
            tail_n += n[k]
            tail_c += c[k]
        for k in range(last_start, n.shape[0]):
            out[k] = tail_c / tail_n
            out_n[k] = tail_n
    return True


@_njit
def _calibrate_kernel(cal_n, cal_correct, min_count, out, out_n):
    """The calibration map ``out[g, b]`` (and the pairs behind each value, ``out_n``) from
    the counts; rows with too few pairs take the map of all rows pooled."""
    n_groups, n_bins = cal_n.shape
    all_n = np.zeros(n_bins)
    all_c = np.zeros(n_bins)
    for g in range(n_groups):
        for b in range(n_bins):
            all_n[b] += cal_n[g, b]
            all_c[b] += cal_correct[g, b]
    pooled = np.full(n_bins, np.nan)
    pooled_n = np.zeros(n_bins)
    _pool_row(all_n, all_c, min(min_count, max(all_n.sum(), 1.0)), pooled, pooled_n)
    for g in range(n_groups):
        if not _pool_row(cal_n[g], cal_correct[g], min_count, out[g], out_n[g]):
            out[g, :] = pooled
            out_n[g, :] = pooled_n


@_njit
def _window_kernel(times, groups, bins, window_ms, start, hist, closed_start, closed_hist,
                   closed_late, closed_last, late):  # fmt: skip
    """Predictions in order into tumbling windows. A prediction of a later window closes the
    open one (its start, histogram, late count and the batch index of its last prediction, -1
    if that came in an earlier batch, go to the ``closed_*`` rows). Returns the open window's
    start, the number of windows closed, the late count of the open window and the batch
    index of its last prediction (-1: none in this batch)."""
    n_closed = 0
    last = -1
    for i in range(times.shape[0]):
        w = (times[i] // window_ms) * window_ms
        if start == _NO_WINDOW:
            start = w
        if w > start:
            closed_start[n_closed] = start
            closed_hist[n_closed] = hist
            closed_late[n_closed] = late
            closed_last[n_closed] = last
            n_closed += 1
            hist[:, :] = 0.0
            late = 0
            last = -1
            start = w
        elif w < start:
            late += 1
            continue
        hist[groups[i], bins[i]] += 1.0
        last = i
    return start, n_closed, late, last


@_njit
def _estimate_kernel(hist, calibration, pool_n, positive, order):
    """(n, expected correct, variance of the realised count, TP, FP, FN, TN) of one window
    histogram; ``positive`` < 0: not binary (the cells are NaN). The variance adds the
    window's own Bernoulli noise (``sum c (1 - c)``) and the calibration's: a pool's rate,
    estimated from ``m`` pairs, has variance ``c (1 - c) / m`` and weighs the ``H`` window
    predictions in it, ``H**2 c (1 - c) / m`` (pools are the runs of equal rate and size).
    Rows are summed in ``order`` (their classes' names sorted), so the result does not depend
    on the order the classes were first seen in."""
    n = 0.0
    expected = 0.0
    variance = 0.0
    tp = 0.0
    fp = 0.0
    fn = 0.0
    tn = 0.0
    n_bins = hist.shape[1]
    for g in order:
        run = 0.0
        for b in range(n_bins):
            c = calibration[g, b]
            h = hist[g, b]
            if b > 0 and (c != calibration[g, b - 1] or pool_n[g, b] != pool_n[g, b - 1]):
                prev = calibration[g, b - 1]
                if run > 0.0:
                    variance += run * run * prev * (1.0 - prev) / pool_n[g, b - 1]
                run = 0.0
            if h == 0.0:
                continue
            run += h
            n += h
            expected += h * c
            variance += h * c * (1.0 - c)
            if g == positive:
                tp += h * c
                fp += h * (1.0 - c)
            else:
                tn += h * c
                fn += h * (1.0 - c)
        if run > 0.0:
            last = calibration[g, n_bins - 1]
            variance += run * run * last * (1.0 - last) / pool_n[g, n_bins - 1]
    if positive < 0:
        tp = fp = fn = tn = np.nan
    return n, expected, variance, tp, fp, fn, tn


# -- public functions -----------------------------------------------------------------------------


def confidence(probabilities: Any) -> np.ndarray:
    """A multi-class model's confidence per prediction: the largest class probability of each
    row of an ``(n, k)`` matrix (NaN entries ignored; NaN for a row without any).

    >>> confidence([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]]).tolist()
    [0.5, 0.9]
    """
    matrix = np.asarray(probabilities, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"expected an (n, k) matrix of class probabilities, got {matrix.shape}")
    out = np.full(matrix.shape[0], np.nan)
    present = ~np.isnan(matrix).all(axis=1)
    if present.any():
        out[present] = np.nanmax(matrix[present], axis=1)
    return out


def estimate_window(
    hist: np.ndarray,
    calibration: np.ndarray,
    pool_n: np.ndarray,
    positive: int = -1,
    order: np.ndarray | None = None,
) -> tuple[float, ...]:
    """``(n, accuracy, accuracy_std_error, precision, recall, f1, tp, fp, fn, tn)`` of one
    window (see :class:`WindowEstimate`): its ``(rows, bins)`` histogram of predictions against
    a calibration map of the same shape and the labelled pairs behind each of its values
    (``pool_n``); ``positive`` is the positive class's row, -1 if the
    model is not binary (precision, recall, F1 and the cells are then NaN)."""
    n, expected, variance, tp, fp, fn, tn = _estimate_kernel(
        np.ascontiguousarray(hist, dtype=np.float64),
        np.ascontiguousarray(calibration, dtype=np.float64),
        np.ascontiguousarray(pool_n, dtype=np.float64),
        int(positive),
        np.arange(hist.shape[0]) if order is None else np.asarray(order, dtype=np.int64),
    )
    if n == 0:
        return 0.0, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan
    accuracy = expected / n
    std_error = float(np.sqrt(variance)) / n
    precision = tp / (tp + fp) if tp + fp > 0 else np.nan
    recall = tp / (tp + fn) if tp + fn > 0 else np.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else np.nan
    return n, accuracy, std_error, precision, recall, f1, tp, fp, fn, tn


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


class CBPE:
    """Confidence-based performance estimation over tumbling event-time windows.

    Parameters
    ----------
    window_ms
        Width of the estimation windows (event time, aligned to multiples of it).
    n_bins
        Fine equal-width score bins on [0, 1] that histograms and calibration counts use.
    calibration_size
        Labelled pairs the calibration map is fitted on (the first this many); then frozen.
    min_bin_count
        Least labelled pairs behind each pooled calibration bin.
    max_classes
        Calibration rows kept per predicted class (further classes share the last row).
    max_pending
        Closed windows kept while the calibration is not frozen yet (the oldest go first).

    ``observe_labels`` feeds labelled pairs (in the order they are labelled); ``update`` feeds
    predictions in event order and returns the estimates of the windows that closed (and of
    waiting windows, once the calibration is frozen). See the module docstring.
    """

    _params = ("window_ms", "n_bins", "calibration_size", "min_bin_count", "max_classes",
               "max_pending")  # fmt: skip

    def __init__(
        self,
        window_ms: int = 3_600_000,
        n_bins: int = 50,
        calibration_size: int = 5_000,
        min_bin_count: int = 100,
        max_classes: int = 32,
        max_pending: int = 1_000,
    ) -> None:
        self.window_ms = _check_int("window_ms", window_ms, 1)
        self.n_bins = _check_int("n_bins", n_bins, 1)
        self.calibration_size = _check_int("calibration_size", calibration_size, 1)
        self.min_bin_count = _check_int("min_bin_count", min_bin_count, 1)
        self.max_classes = _check_int("max_classes", max_classes, 2)
        self.max_pending = _check_int("max_pending", max_pending, 0)
        self._reset()

    def _reset(self) -> None:
        self.labels: list[str] = []  # predicted class of each calibration row, in first-seen order
        self._index: dict[str, int] = {}
        self.n_calibration = 0
        self.positive_label: str | None = None
        self._cal_n = np.zeros((0, self.n_bins))
        self._cal_correct = np.zeros((0, self.n_bins))
        self.calibration: np.ndarray | None = None  # the frozen map, (rows, n_bins)
        self._pool_n = np.zeros((0, self.n_bins))  # pairs behind each calibrated value
        self._start = _NO_WINDOW
        self._hist = np.zeros((0, self.n_bins))
        self._late = 0
        self._version = ""
        # closed windows waiting for the calibration: (start, late, version, histogram)
        self._pending: list[tuple[int, int, str, np.ndarray]] = []
        self.dropped_windows = 0

    # -- inputs ---------------------------------------------------------------------------------
    @property
    def frozen(self) -> bool:
        """True once the calibration map is fitted (estimates come out from then on)."""
        return self.calibration is not None

    def _rows(self, labels: Any) -> np.ndarray:
        """Calibration row of each predicted class, registering new classes in order."""
        values = np.asarray(labels, dtype=object)
        uniques, first, inverse = np.unique(values.astype(str), return_index=True,
                                            return_inverse=True)  # fmt: skip
        rows = np.empty(len(uniques), dtype=np.int64)
        for u in np.argsort(first, kind="stable").tolist():  # first-seen order
            label = str(uniques[u])
            row = self._index.get(label)
            if row is None:
                row = len(self.labels) if len(self.labels) < self.max_classes else -1
                if row < 0:
                    row = self.max_classes - 1  # the shared row of further classes
                else:
                    self.labels.append(label)
                    self._grow(len(self.labels))
                self._index[label] = row
            rows[u] = row
        return rows[inverse.reshape(-1)]

    def _grow(self, n_rows: int) -> None:
        def grown(a: np.ndarray) -> np.ndarray:
            return np.vstack([a, np.zeros((n_rows - a.shape[0], self.n_bins))])

        self._cal_n, self._cal_correct, self._hist = (
            grown(self._cal_n), grown(self._cal_correct), grown(self._hist)
        )  # fmt: skip
        self._pending = [(s, late, v, grown(h)) for s, late, v, h in self._pending]
        if self.calibration is not None:  # a class first seen after the freeze: pooled map
            pooled = self._pooled_map()
            extra = n_rows - self.calibration.shape[0]
            self.calibration = np.vstack([self.calibration, np.tile(pooled[0], (extra, 1))])
            self._pool_n = np.vstack([self._pool_n, np.tile(pooled[1], (extra, 1))])

    def _pooled_map(self) -> tuple[np.ndarray, np.ndarray]:
        out, out_n = np.full((1, self.n_bins), np.nan), np.zeros((1, self.n_bins))
        _calibrate_kernel(
            self._cal_n.sum(axis=0, keepdims=True),
            self._cal_correct.sum(axis=0, keepdims=True),
            float(self.min_bin_count),
            out,
            out_n,
        )
        return out[0], out_n[0]

    def observe_labels(self, predicted: Any, scores: Any, correct: Any) -> list[WindowEstimate]:
        """Labelled pairs, in the order they were labelled: each prediction's predicted class,
        its confidence and whether it was right. Until ``calibration_size`` pairs are in, they
        fit the calibration; the pair that completes it freezes the map and returns the
        estimates of the windows that waited for it."""
        s = _finite(scores, "scores")
        ok = np.asarray(correct, dtype=np.float64)
        if not (len(predicted) == len(s) == len(ok)):
            raise ValueError("predicted, scores and correct must have the same length")
        if self.frozen or not len(s):
            return []
        need = self.calibration_size - self.n_calibration
        rows = self._rows(np.asarray(predicted, dtype=object)[:need])
        self.n_calibration = int(
            _fit_kernel(self._cal_n, self._cal_correct, rows, _bins(s[:need], self.n_bins),
                        ok[:need], self.n_calibration, self.calibration_size)
        )  # fmt: skip
        if self.n_calibration < self.calibration_size:
            return []
        self._freeze()
        pending, self._pending = self._pending, []
        return [
            self._estimate(start, late, version, hist) for start, late, version, hist in pending
        ]

    def _freeze(self) -> None:
        calibration = np.full(self._cal_n.shape, np.nan)
        pool_n = np.zeros(self._cal_n.shape)
        _calibrate_kernel(
            self._cal_n, self._cal_correct, float(self.min_bin_count), calibration, pool_n
        )
        self.calibration, self._pool_n = calibration, pool_n
        seen = [label for row, label in enumerate(self.labels) if self._cal_n[row].sum() > 0]
        shared = len(self.labels) >= self.max_classes
        # binary: exactly two predicted classes in the calibration period; the positive one is
        # the greater name, as scikit-learn's pos_label=1 is for 0/1 ("1", "yes", "true" all
        # sort after their negatives)
        self.positive_label = max(seen) if len(seen) == 2 and not shared else None

    def update(self, times: Any, predicted: Any, scores: Any,
               versions: Any = None) -> list[WindowEstimate]:  # fmt: skip
        """Predictions in event order (event time in ms, predicted class, confidence; the
        model version of each, optional): the estimates of the windows they closed (none
        while the calibration is not frozen: those windows wait)."""
        out = []
        for window in self.close_windows(times, predicted, scores, versions):
            if self.frozen:
                out.append(self._estimate(*window))
            elif self.max_pending:
                self._pending.append(window)
                if len(self._pending) > self.max_pending:
                    del self._pending[0]
                    self.dropped_windows += 1
            else:
                self.dropped_windows += 1
        return out

    def close_windows(self, times: Any, predicted: Any, scores: Any,
                      versions: Any = None) -> list[tuple[int, int, str, np.ndarray]]:  # fmt: skip
        """The windowing half of :meth:`update`, without estimating: predictions in event
        order into the windows; returns the windows they closed as ``(start, late, version of
        the last prediction, histogram over (class row, fine bin))``, the histogram's rows
        being :attr:`labels` (the worker's per-version estimates, streams/estimates.py, keep
        their own calibrations and estimate these with :meth:`cells`)."""
        t = np.ascontiguousarray(times, dtype=np.int64)
        s = _finite(scores, "scores")
        if not (len(t) == len(s) == len(predicted)):
            raise ValueError("times, predicted and scores must have the same length")
        if not len(t):
            return []
        rows = self._rows(predicted)
        bound = len(np.unique(t // self.window_ms)) + 1
        closed_start = np.empty(bound, dtype=np.int64)
        closed_hist = np.empty((bound, *self._hist.shape))
        closed_late = np.empty(bound, dtype=np.int64)
        closed_last = np.empty(bound, dtype=np.int64)
        start, n_closed, late, last = _window_kernel(
            t, rows, _bins(s, self.n_bins), self.window_ms, self._start, self._hist,
            closed_start, closed_hist, closed_late, closed_last, self._late,
        )  # fmt: skip
        out = []
        for k in range(n_closed):
            i = int(closed_last[k])
            version = self._version if i < 0 or versions is None else str(versions[i])
            self._version = ""
            out.append((int(closed_start[k]), int(closed_late[k]), version, closed_hist[k].copy()))
        self._start, self._late = int(start), int(late)
        if last >= 0 and versions is not None:
            self._version = str(versions[int(last)])
        return out

    def cells(self, classes: Any, hist: np.ndarray) -> np.ndarray:
        """A histogram over (predicted class, fine bin), one row per name in ``classes``,
        read through the frozen map: ``[n, expected correct, variance of the realised count,
        TP, FP, FN, TN]`` (the cells NaN unless binary). Sums of these over disjoint
        histograms read through independent maps are the cells of their union, which is how
        a window served by several model versions is estimated. A class the calibration has
        not seen takes the all-class map (as in :meth:`update`)."""
        if self.calibration is None:
            raise ValueError("the calibration is not frozen yet")
        rows = self._rows(np.asarray(classes, dtype=object))
        mapped = np.zeros((len(self.labels), self.n_bins))
        np.add.at(mapped, rows, np.asarray(hist, dtype=np.float64))
        positive = self._index[self.positive_label] if self.positive_label is not None else -1
        return np.array(
            _estimate_kernel(
                mapped, self.calibration, self._pool_n, positive,
                np.argsort(np.array(self.labels, dtype=str), kind="stable"),
            )
        )  # fmt: skip

    def _estimate(self, start: int, late: int, version: str, hist: np.ndarray) -> WindowEstimate:
        assert self.calibration is not None
        positive = self._index[self.positive_label] if self.positive_label is not None else -1
        n, accuracy, std_error, precision, recall, f1, tp, fp, fn, tn = estimate_window(
            hist,
            self.calibration[: hist.shape[0]],
            self._pool_n[: hist.shape[0]],
            positive,
            np.argsort(np.array(self.labels[: hist.shape[0]], dtype=str), kind="stable"),
        )
        return WindowEstimate(
            start, start + self.window_ms, int(n), late, version, float(accuracy),
            float(std_error), float(precision), float(recall), float(f1), float(tp), float(fp),
            float(fn), float(tn), self.positive_label, self.n_calibration,
        )  # fmt: skip

    # -- state ----------------------------------------------------------------------------------
    def params(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self._params}

    def to_state(self) -> bytes:
        """Self-describing bytes: parameters, classes, counters, then the arrays."""
        header = {
            "params": self.params(),
            "labels": self.labels,
            "index": self._index,
            "n_calibration": self.n_calibration,
            "positive_label": self.positive_label,
            "frozen": self.frozen,
            "start": self._start,
            "late": self._late,
            "version": self._version,
            "pending": [[s, late, v] for s, late, v, _ in self._pending],
            "dropped_windows": self.dropped_windows,
        }
        arrays = [self._cal_n, self._cal_correct, self._hist]
        if self.calibration is not None:
            arrays += [self.calibration, self._pool_n]
        arrays += [h for *_, h in self._pending]
        blob = json.dumps(header, separators=(",", ":")).encode()
        body = b"".join(np.ascontiguousarray(a, dtype="<f8").tobytes() for a in arrays)
        return _MAGIC + struct.pack("<I", len(blob)) + blob + body

    @classmethod
    def from_state(cls, data: bytes) -> CBPE:
        if data[:4] != _MAGIC:
            raise ValueError("not a CBPE state (bad magic bytes)")
        (size,) = struct.unpack_from("<I", data, 4)
        header = json.loads(data[8 : 8 + size])
        cbpe = cls(**header["params"])
        rows = len(header["labels"])
        shape = (rows, cbpe.n_bins)
        count = rows * cbpe.n_bins
        n_arrays = 3 + 2 * int(header["frozen"]) + len(header["pending"])
        flat = np.frombuffer(data[8 + size :], dtype="<f8")
        if flat.shape[0] != n_arrays * count:
            raise ValueError(f"CBPE state has {flat.shape[0]} values, expected {n_arrays * count}")
        arrays = [flat[k * count : (k + 1) * count].reshape(shape).copy() for k in range(n_arrays)]
        cbpe.labels = list(header["labels"])
        cbpe._index = {str(k): int(v) for k, v in header["index"].items()}
        cbpe.n_calibration = int(header["n_calibration"])
        cbpe.positive_label = header["positive_label"]
        cbpe._cal_n, cbpe._cal_correct, cbpe._hist = arrays[:3]
        rest = arrays[3:]
        if header["frozen"]:
            cbpe.calibration, cbpe._pool_n, rest = rest[0], rest[1], rest[2:]
        cbpe._start = int(header["start"])
        cbpe._late = int(header["late"])
        cbpe._version = str(header["version"])
        cbpe._pending = [
            (int(s), int(late), str(v), h)
            for (s, late, v), h in zip(header["pending"], rest, strict=True)
        ]
        cbpe.dropped_windows = int(header["dropped_windows"])
        return cbpe

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CBPE) and self.to_state() == other.to_state()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"CBPE({args})"


def _finite(values: Any, name: str) -> np.ndarray:
    out = np.ascontiguousarray(values, dtype=np.float64)
    if out.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {out.shape}")
    if not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out))[0])
        raise ValueError(f"{name}[{bad}] is {out[bad]}; CBPE takes finite confidences only")
    return out
