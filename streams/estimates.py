"""The worker's performance estimates before labels arrive: CBPE per model and event-time window.

One call per model and batch (:func:`observe`, from ``BatchProcessor._model``): the batch's
scored classifier predictions go to the model's :class:`~driftline.detectors.cbpe.CBPE` in
event order, then the batch's labelled pairs (in the order they were joined) fit its
calibration until it is frozen. The estimator lives in the model's ``ModelState``, so it is
checkpointed with the detector banks and a restarted worker continues the same windows.

Every window that closes (or that waited for the calibration, once it is frozen) becomes

* a ``performance_estimates`` row: expected accuracy with its standard error, and for binary
  models the expected confusion cells, precision, recall and F1 of the positive class; the
  view ``performance_estimates_realised`` puts the realised values from ``joined_labels``
  beside it as labels arrive (docs/cbpe.md);
* ``detector_stats`` rows (stream kind ``METRIC``, stream ``estimated_accuracy`` /
  ``estimated_precision`` / ``estimated_recall`` / ``estimated_f1``, detector ``CBPE``, at the
  window's end), which alert rules watch through the ``estimated_*`` metrics
  (``driftline.schemas.rules``), in the workers and in the API's dry-run alike.

Which predictions: classifiers' (a ``prediction_label``) with a ``prediction_score`` — the
positive-class probability of a binary model or the confidence of ``prediction_label`` of a
multi-class one, as the schema defines it. A prediction with class probabilities but no score
is not estimated: the confidence must also reach the calibration through the join, which
carries the score only.

Per model version (:class:`VersionedEstimates`): windows stay the model's, but every version
has a calibration of its own, fitted on its own first ``calibration_size`` labelled pairs. The
first ``calibration_size`` predictions of a version that replaced another are read through the
version it replaced (its calibration: the new version's own labels are not there yet), every
later one through its own; the window's row names the calibrations it used
(``calibration_versions``) and how many of its predictions were read through another
version's (``n_borrowed``). Which calibration reads a prediction is fixed when the prediction
arrives (by its rank among its version's predictions), and a window waits until every
calibration it needs is frozen (docs/cbpe.md, "Per model version").

Rows, ids and decisions depend on the model's event sequence only: a window closes at the first
prediction of a later window, labelled pairs are taken in join order, and an estimate is a
function of the window's histogram and the frozen calibrations, whenever it is computed.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from driftline.detectors.cbpe import CBPE, WindowEstimate
from driftline.schemas import event_id, rules
from driftline.schemas.columns import PredictionColumns
from driftline.streams.join import Pairs
from driftline.streams.versions import ranks_within, version_groups

if TYPE_CHECKING:  # state.py holds a VersionedEstimates: import it for type hints only
    from driftline.streams.state import ModelState

__all__ = [
    "ESTIMATED_METRICS",
    "EstimateConfig",
    "EstimatedWindow",
    "VersionedEstimates",
    "estimate_rows",
    "observe",
]

METHOD = rules.ESTIMATOR
STREAM_METRIC = "METRIC"
# detector_stats stream name (the metric rules name, driftline.schemas.rules) -> estimate field
ESTIMATED_METRICS = {name: name.removeprefix("estimated_") for name in rules.ESTIMATED_METRICS}


@dataclass(frozen=True)
class EstimateConfig:
    """CBPE's settings for every model (see :class:`~driftline.detectors.cbpe.CBPE`)."""

    window_ms: int = 3_600_000
    calibration_size: int = 5_000
    n_bins: int = 50
    min_bin_count: int = 100
    max_pending: int = 1_000  # closed windows kept while a calibration they need is not frozen

    def build(self) -> CBPE:
        return CBPE(
            window_ms=self.window_ms,
            n_bins=self.n_bins,
            calibration_size=self.calibration_size,
            min_bin_count=self.min_bin_count,
        )


# The window histogram's rows: one per (version, the version whose calibration reads it, class).
_SEP = "\x1f"
_MAGIC = b"DLV1"
# rows of the window histogram: plenty for versions x 2 calibrations x classes (never shared)
_MAX_ROWS = 1 << 16


@dataclass(frozen=True)
class EstimatedWindow:
    """One window's estimate and the calibrations behind it: ``calibrations``, the versions
    whose maps read its predictions (sorted); ``n_borrowed``, its predictions read through
    another version's map than their own."""

    estimate: WindowEstimate
    calibrations: tuple[str, ...]
    n_borrowed: int


class VersionedEstimates:
    """CBPE for one model with a calibration per model version (see the module docstring).

    ``windows`` is a :class:`CBPE` used for windowing only: its classes are
    ``version␟calibrating version␟predicted class``, so a window served by several versions
    keeps each one's predictions apart; ``calibrations`` are one :class:`CBPE` per version,
    fitted on that version's labelled pairs and used through :meth:`CBPE.cells`.
    """

    def __init__(self, config: EstimateConfig) -> None:
        self.config = config
        self.windows = CBPE(
            window_ms=config.window_ms, n_bins=config.n_bins, calibration_size=1,
            min_bin_count=1, max_classes=_MAX_ROWS, max_pending=0,
        )  # fmt: skip
        self.calibrations: dict[str, CBPE] = {}
        self.served: dict[str, int] = {}  # predictions seen per version, for their ranks
        # closed windows waiting for a calibration: (start, late, version, histogram)
        self.pending: list[tuple[int, int, str, np.ndarray]] = []
        self.dropped_windows = 0

    @property
    def window_ms(self) -> int:
        return self.config.window_ms

    def update(
        self, times: np.ndarray, predicted: np.ndarray, scores: np.ndarray,
        versions: np.ndarray, previous: dict[str, str | None],
    ) -> list[EstimatedWindow]:  # fmt: skip
        """Scored predictions in event order; ``previous``: each version's predecessor (the
        version it replaced, None for none). Returns the windows estimated now."""
        keys, groups = version_groups(versions)
        rank = ranks_within(groups)
        for g, version in enumerate(keys):
            rank[groups == g] += self.served.get(version, 0)
        for g, version in enumerate(keys):
            self.served[version] = self.served.get(version, 0) + int((groups == g).sum())
        # who calibrates each prediction: its predecessor for a replacing version's first
        # calibration_size predictions, itself after (and always, for a first version)
        borrowed = np.asarray([previous.get(v) is not None for v in keys], dtype=bool)[groups]
        borrowed &= rank < self.config.calibration_size
        classes, class_of = np.unique(np.asarray(predicted).astype(str), return_inverse=True)
        code = (groups * 2 + borrowed) * len(classes) + class_of.reshape(-1)
        codes, where = np.unique(code, return_inverse=True)
        names = []
        for c in codes.tolist():
            g, rest = divmod(c, 2 * len(classes))
            lender, k = divmod(rest, len(classes))
            version = keys[g]
            source = str(previous.get(version)) if lender else version
            names.append(_SEP.join((version, source, str(classes[k]))))
        composite = np.asarray(names, dtype=object)[where.reshape(-1)]
        closed = self.windows.close_windows(times, composite, scores, versions)
        out = []
        for window in closed:
            estimated = self._estimate(*window)
            if estimated is not None:
                out.append(estimated)
            else:
                self._wait(window)
        return out

    def observe_labels(
        self, versions: np.ndarray, predicted: np.ndarray, scores: np.ndarray,
        correct: np.ndarray,
    ) -> list[EstimatedWindow]:  # fmt: skip
        """Labelled pairs in join order fit their versions' calibrations; returns the waiting
        windows that a calibration frozen now lets estimate."""
        keys, groups = version_groups(versions)
        froze = False
        for g, version in enumerate(keys):
            cbpe = self.calibrations.get(version)
            if cbpe is None:
                cbpe = self.calibrations[version] = self.config.build()
            if cbpe.frozen:
                continue
            mine = groups == g
            cbpe.observe_labels(predicted[mine], scores[mine], correct[mine])
            froze |= cbpe.frozen
        if not froze or not self.pending:
            return []
        out, still = [], []
        for window in self.pending:
            estimated = self._estimate(*window)
            if estimated is not None:
                out.append(estimated)
            else:
                still.append(window)
        self.pending = still
        return out

    def _wait(self, window: tuple[int, int, str, np.ndarray]) -> None:
        if not self.config.max_pending:
            self.dropped_windows += 1
            return
        self.pending.append(window)
        if len(self.pending) > self.config.max_pending:
            del self.pending[0]
            self.dropped_windows += 1

    def _estimate(
        self, start: int, late: int, version: str, hist: np.ndarray
    ) -> EstimatedWindow | None:
        """The window's estimate: per calibrating version, its predictions' cells through that
        version's map, summed; None while a map it needs is not frozen."""
        rows = np.flatnonzero(hist.sum(axis=1) > 0)
        parts = [self.windows.labels[r].split(_SEP) for r in rows.tolist()]
        sources = sorted({source for _, source, _ in parts})
        maps = [self.calibrations.get(source) for source in sources]
        if any(m is None or not m.frozen for m in maps):
            return None
        cells = np.zeros(7)
        for source, cbpe in zip(sources, maps, strict=True):
            mine = [i for i, (_, s, _) in enumerate(parts) if s == source]
            cells += cbpe.cells([parts[i][2] for i in mine], hist[rows[mine]])
        n, expected, variance, tp, fp, fn, tn = cells.tolist()
        positives = {m.positive_label for m in maps}
        positive = positives.pop() if len(positives) == 1 else None
        if positive is None:  # not binary, or the versions disagree on the positive class
            tp = fp = fn = tn = math.nan
        borrowed = int(sum(hist[r].sum() for r, (v, s, _) in zip(rows, parts, strict=True)
                           if v != s))  # fmt: skip
        estimate = WindowEstimate(
            start, start + self.window_ms, int(n), late, version, expected / n,
            math.sqrt(variance) / n, _ratio(tp, tp + fp), _ratio(tp, tp + fn),
            _ratio(2 * tp, 2 * tp + fp + fn), tp, fp, fn, tn, positive,
            min(m.n_calibration for m in maps),
        )  # fmt: skip
        return EstimatedWindow(estimate, tuple(sources), borrowed)

    # -- state ----------------------------------------------------------------------------------
    def to_state(self) -> bytes:
        header = {
            "config": asdict(self.config),
            "served": self.served,
            "calibrations": list(self.calibrations),
            "pending": [[s, late, v, h.shape[0]] for s, late, v, h in self.pending],
            "dropped_windows": self.dropped_windows,
        }
        parts = [json.dumps(header, separators=(",", ":")).encode(), self.windows.to_state()]
        parts += [cbpe.to_state() for cbpe in self.calibrations.values()]
        parts += [np.ascontiguousarray(h, dtype="<f8").tobytes() for *_, h in self.pending]
        return _MAGIC + b"".join(struct.pack("<Q", len(p)) + p for p in parts)

    @classmethod
    def from_state(cls, data: bytes) -> VersionedEstimates:
        if data[:4] != _MAGIC:
            raise ValueError("not a VersionedEstimates state (bad magic bytes)")
        parts, pos = [], 4
        while pos < len(data):
            (size,) = struct.unpack_from("<Q", data, pos)
            parts.append(data[pos + 8 : pos + 8 + size])
            pos += 8 + size
        header = json.loads(parts[0])
        out = cls(EstimateConfig(**header["config"]))
        out.windows = CBPE.from_state(parts[1])
        n = len(header["calibrations"])
        out.calibrations = {
            v: CBPE.from_state(blob)
            for v, blob in zip(header["calibrations"], parts[2 : 2 + n], strict=True)
        }
        out.served = {str(k): int(v) for k, v in header["served"].items()}
        out.pending = [
            (int(s), int(late), str(v),
             np.frombuffer(blob, dtype="<f8").reshape(int(rows), out.config.n_bins).copy())
            for (s, late, v, rows), blob in zip(header["pending"], parts[2 + n :], strict=True)
        ]  # fmt: skip
        out.dropped_windows = int(header["dropped_windows"])
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VersionedEstimates) and self.to_state() == other.to_state()


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def observe(
    state: ModelState,
    predictions: PredictionColumns,
    pairs: Pairs,
    correct: np.ndarray,
    config: EstimateConfig,
    result: Any,
) -> None:
    """Feed one model's batch: its predictions (in event order), then its labelled pairs
    (``correct``: 1/0 per pair, -1 where the pair is not a classification); add the rows of
    every window estimated to ``result`` (a ``BatchResult``)."""
    scored = _scored(predictions)
    labelled = np.isfinite(pairs.prediction_score) & (correct >= 0)
    labelled &= np.not_equal(pairs.prediction_label, None)
    if not scored.any() and not labelled.any():
        return
    cbpe = state.estimates
    if cbpe is None:
        cbpe = state.estimates = VersionedEstimates(config)
    estimates: list[EstimatedWindow] = []
    if scored.any():
        rows = np.flatnonzero(scored)
        labels = predictions.prediction_label.take(rows).to_numpy(zero_copy_only=False)
        versions = predictions.model_version.take(rows).to_numpy(zero_copy_only=False)
        # the version each one replaced (streams/versions.py registered them before us)
        previous = {str(v): r.previous for v, r in state.versions.versions.items()}
        estimates += cbpe.update(
            np.asarray(predictions.event_time)[rows],
            labels,
            predictions.prediction_score[rows],
            versions.astype(str),
            previous,
        )
    if labelled.any():
        estimates += cbpe.observe_labels(
            np.asarray(pairs.model_version[labelled]).astype(str),
            pairs.prediction_label[labelled],
            pairs.prediction_score[labelled],
            correct[labelled],
        )
    for estimated in estimates:
        row, stats = estimate_rows(state.model_id, cbpe.window_ms, estimated)
        result.rows["performance_estimates"].append(row)
        result.rows["detector_stats"] += stats
    result.counters["estimated_windows"] += len(estimates)


def _scored(predictions: PredictionColumns) -> np.ndarray:
    if not len(predictions):
        return np.zeros(0, dtype=bool)
    has_label = ~predictions.prediction_label.is_null().to_numpy(zero_copy_only=False)
    return np.isfinite(predictions.prediction_score) & has_label


def _nullable(value: float) -> float | None:
    return value if math.isfinite(value) else None


def estimate_rows(
    model_id: str, window_ms: int, estimated: EstimatedWindow
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``performance_estimates`` row of one window and its ``detector_stats`` rows."""
    estimate = estimated.estimate
    start = estimate.window_start_ms
    row = {
        "event_id": event_id("estimate", model_id, METHOD, str(start), str(window_ms)),
        "model_id": model_id,
        "model_version": estimate.model_version,
        "method": METHOD,
        "window_start": start,
        "window_end": estimate.window_end_ms,
        "window_ms": window_ms,
        "n_predictions": estimate.n_predictions,
        "n_late": estimate.n_late,
        "estimated_accuracy": estimate.accuracy,
        "accuracy_std_error": estimate.accuracy_std_error,
        "estimated_precision": _nullable(estimate.precision),
        "estimated_recall": _nullable(estimate.recall),
        "estimated_f1": _nullable(estimate.f1),
        "expected_tp": _nullable(estimate.expected_tp),
        "expected_fp": _nullable(estimate.expected_fp),
        "expected_fn": _nullable(estimate.expected_fn),
        "expected_tn": _nullable(estimate.expected_tn),
        "positive_label": estimate.positive_label,
        "calibration_size": estimate.calibration_size,
        "calibration_versions": list(estimated.calibrations),
        "n_borrowed": estimated.n_borrowed,
    }
    stats = []
    for name, field in ESTIMATED_METRICS.items():
        value = getattr(estimate, field)
        if not math.isfinite(value):
            continue
        stats.append(
            {
                "model_id": model_id,
                "stream_kind": STREAM_METRIC,
                "stream_name": name,
                "detector": METHOD,
                "time": estimate.window_end_ms,
                "n_values": estimate.n_predictions,
                "estimate": value,
                "statistic": estimate.accuracy_std_error if field == "accuracy" else None,
                "p_value": None,
                "drift": 0,
            }
        )
    return row, stats
