"""The worker's data-drift stage: each model's predictions, in windows, against its reference.

One call per model and batch (:func:`observe`, from ``BatchProcessor._model``): the batch's
prediction columns go to the model's :class:`~driftline.detectors.monitor.ProfileMonitor`
(kept in its ``ModelState``, so it is checkpointed with the detector banks and a restarted
worker continues the same windows), and every window that closes becomes

* ``feature_drift`` rows — one per (column, drift test) and the multivariate test;
* ``data_quality`` rows — one per (column, quality test);
* drift events (``driftline.drift.v1``) — one per drifted column, quality issue and
  multivariate drift, carrying the window's evidence.

The references in use land in ``reference_profiles`` (one row per column, keyed by the
content-hash ``reference_id``): uploaded ones as they arrive on ``driftline.references.v1``
(:func:`reference_rows` of the book's arrivals, written with the next batch), a model's
first-events reference when it is built.

A new model version re-baselines the windows at its first prediction (:func:`observe`): its
own uploaded reference, or its own first events, never the old version's (the rule:
:func:`_wanted`, and docs/drift.md, "Model versions").

Segments (:func:`_admissions`, :func:`_observe_segments`): besides its all-traffic windows, a model
gets one set of windows per segment value ``key=value`` its events carry, for the first
``MonitorConfig.max_segments`` values in event order (later ones are counted in
``segment_events_untested``, not tested). A segment's windows test it against its own first
``auto_reference_events`` events, not the model's reference: a segment may differ from the
whole training data by design (one region's customers are older), and that difference would
be reported in every window; against its own first events only a change within the segment
is. Every monitor of the model spreads the budget over the segment windows too
(:meth:`ProfileMonitor.set_segment_load`). Rows and drift events of a segment's windows carry
``segment = "key=value"`` (DriftEvents in ``evidence["segment"]``), ``""`` for all traffic.

Window boundaries, rows and event ids depend on the model's event sequence only, so any
batching and any restart give the same results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from driftline.detectors import reference
from driftline.detectors.monitor import (
    CodedLabels,
    FeatureBatch,
    MonitorConfig,
    ProfileMonitor,
    TestRow,
    WindowReport,
)
from driftline.detectors.reference import (
    PREDICTION_LABEL,
    PREDICTION_SCORE,
    PREDICTION_VALUE,
    ReferenceEntry,
    ReferenceProfile,
)
from driftline.schemas import Codec, event_id
from driftline.schemas.columns import PredictionColumns
from driftline.schemas.topics import REFERENCE_PROFILE
from driftline.streams.state import STREAM_FEATURE, STREAM_PREDICTION, ModelState

__all__ = [
    "ReferenceBook",
    "feature_batch",
    "observe",
    "reference_rows",
    "set_reference",
    "window_rows",
]

STREAM_METRIC = "METRIC"
# The reference's names for the model outputs -> the stream names drift events already use.
_OUTPUT_STREAMS = {PREDICTION_SCORE: "score", PREDICTION_VALUE: "value", PREDICTION_LABEL: "label"}


def feature_batch(predictions: PredictionColumns) -> FeatureBatch:
    """The monitor's view of prediction columns (no copies of the numeric matrix)."""
    score = predictions.prediction_score
    value = predictions.prediction_value
    label = predictions.prediction_label
    return FeatureBatch(
        tuple(predictions.numeric_names),
        predictions.numeric,
        {name: _coded(array) for name, array in predictions.categorical.items()},
        np.asarray(predictions.event_time, dtype=np.int64),
        score if not np.isnan(score).all() else None,
        value if not np.isnan(value).all() else None,
        _coded(label) if label.null_count < len(label) else None,
    )


def _coded(array: Any) -> CodedLabels:
    """An Arrow string column as codes into its distinct values: counting categories is then
    one ``bincount``, with no Python object per event."""
    encoded = array.dictionary_encode()
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    codes = np.where(encoded.indices.is_null().to_numpy(zero_copy_only=False), -1, codes)
    return CodedLabels(codes.astype(np.int64), tuple(encoded.dictionary.to_pylist()))


class ReferenceBook(reference.ReferenceBook):
    """The worker's :class:`driftline.detectors.reference.ReferenceBook` (the one the API
    reads too), decoding with the worker's codec and keeping arrivals for
    ``reference_profiles``. :func:`observe` looks a model up at every batch, so a running
    worker uses a new reference from the model's next window on, without a restart; a
    tombstone removes the model's entry and the worker keeps the reference it has."""

    def __init__(self, codec: Codec) -> None:
        super().__init__(
            lambda value: codec.decode(value, expected=REFERENCE_PROFILE)[1], keep_arrivals=True
        )
        self.codec = codec


def reference_rows(entry: ReferenceEntry, segment: str = "") -> list[dict[str, Any]]:
    """``reference_profiles`` rows of one reference: one per column, stream names as in
    ``feature_drift`` (``score`` / ``value`` / ``label`` for the model's outputs);
    ``segment`` names the segment whose first events it was built from ("" otherwise)."""
    profile = entry.profile
    rows = []
    for stats in profile.column_stats():
        kind, name = _stream(stats["column"], "drift")
        rows.append({
            "model_id": profile.model_id,
            "reference_id": profile.reference_id,
            "reference_version": profile.version,
            "reference_source": profile.source,
            "uploaded_at": int(entry.uploaded_at),
            "uploaded_by": entry.uploaded_by,
            "n_events": int(profile.n_events),
            "stream_kind": kind,
            "feature": name,
            "column_kind": stats["column_kind"],
            "n_present": stats["n_present"],
            "n_missing": stats["n_missing"],
            "missing_rate": float(stats["missing_rate"]),
            "min": stats["min"],
            "max": stats["max"],
            "std": stats["std"],
            "top_share": float(stats["top_share"]),
            "quantiles": stats["quantiles"],
            "bin_counts": stats["bin_counts"],
            "categories": stats["categories"],
            "in_multivariate": int(profile.pca is not None and stats["column"] in profile.pca.features),
            "segment": segment,
        })  # fmt: skip
    return rows


def set_reference(state: ModelState, profile: ReferenceProfile, config: MonitorConfig) -> None:
    """Use ``profile`` for this model from its next window on."""
    if state.profiles is None:
        state.profiles = ProfileMonitor(state.model_id, profile, config)
    else:
        state.profiles.set_reference(profile)


def observe(
    state: ModelState,
    predictions: PredictionColumns,
    event_ids: np.ndarray,
    config: MonitorConfig,
    result: Any,
    references: ReferenceBook | None = None,
) -> None:
    """Feed one model's predictions of a batch (in event order) to its windows; add the rows
    and drift events of every window that closed to ``result`` (a ``BatchResult``).

    Re-baselining: the first prediction of a version the model's windows have not seen
    before starts them over (:meth:`ProfileMonitor.rebaseline`): the open window is dropped
    and that version is tested against its own reference (:func:`_wanted`) or its own first
    ``auto_reference_events`` events. A version seen before (the old one of a canary, a
    rollback) does not start them over: its events go to the windows in use.

    A reference in ``references`` that :func:`_wanted` picks and that differs from the one in
    use replaces it first (from the model's next window on). When that happens depends on
    when the record arrived, the one thing here that is not a function of the event
    sequence; the reference in use is part of the checkpointed state, so a restart continues
    with it. The same holds for ``config``, the model's own settings (:func:`configure`)."""
    n = len(predictions)
    if not n:
        return
    configure(state, config, predictions, result)
    versions = np.asarray(predictions.model_version.to_numpy(zero_copy_only=False), dtype=object)
    seen = state.profile_versions
    # Where a version serves for the first time, in event order: a function of the event
    # sequence, so any batching re-baselines at the same events.
    switches: dict[int, str] = {}
    if not seen or bool((versions != seen[-1]).any()):
        keys, first = np.unique(versions.astype(str), return_index=True)
        for at, version in sorted(zip(first.tolist(), keys.tolist(), strict=True)):
            if version not in seen:
                switches[at] = version
    # Where a segment value is admitted: the budget of every window of the model changes
    # there, so the batch is cut there too (any batching then spreads it alike).
    admissions = _admissions(state, predictions, config)
    cuts = sorted({0, *switches, *admissions, n})
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        version = switches.get(a)
        if version is not None:
            if seen and state.profiles is not None:
                state.profiles.rebaseline(version=version)
                result.counters["references_rebaselined"] += 1
            if seen:
                for monitor in state.segment_profiles.values():
                    monitor.rebaseline(version=version)
            # else: the model's first version (or windows restored from a checkpoint written
            # before versions were tracked), which keeps the windows it has
            seen.append(version)
        for name in admissions.get(a, ()):
            monitor = ProfileMonitor(state.model_id, config=config, segment=name)
            if len(seen) > 1:  # its first-events reference is the serving version's
                monitor.rebaseline(version=seen[-1])
            state.segment_profiles[name] = monitor
        part = predictions if (a, b) == (0, n) else predictions.slice(a, b)
        _observe(state, part, event_ids[a:b], config, result, references)
        _observe_segments(state, part, event_ids[a:b], result)


def configure(
    state: ModelState, config: MonitorConfig, predictions: PredictionColumns, result: Any
) -> None:
    """Use ``config`` (the model's own monitoring settings over the worker's defaults,
    ``streams.rulebook.MonitorConfigs``) in all of the model's windows from their next window
    on (:meth:`ProfileMonitor.set_config`); a no-op while it is the config in use."""
    changed = False
    for monitor in (state.profiles, *state.segment_profiles.values()):
        if monitor is None:
            continue
        warming = monitor.profile is None
        if monitor.set_config(config):
            changed = True
            if warming and monitor.profile is not None:
                # A smaller auto_reference_events than the first events it had: its reference
                # was built now, "uploaded" at this batch's first event.
                entry = ReferenceEntry(monitor.profile, int(predictions.event_time[0]), "worker")
                result.rows["reference_profiles"] += reference_rows(entry, monitor.segment)
    if changed:
        result.counters["monitor_settings_applied"] += 1


def _segment_load(state: ModelState) -> tuple[int, int]:
    """(segment keys, segment values) of the model's admitted segment windows. A name with
    more than one "=" (a key or value holding one) counts as a key of its own: never fewer
    keys than there are, so the budget holds (``K <= S`` either way)."""
    names = state.segment_profiles
    keys = {name.split("=", 1)[0] if name.count("=") == 1 else name for name in names}
    return len(keys), len(names)


def _admissions(
    state: ModelState, predictions: PredictionColumns, config: MonitorConfig
) -> dict[int, list[str]]:
    """Segment values to admit, by the position (in this batch) of their first event: the
    first ``max_segments`` values of the model in event order; values first seen at the same
    event go by name."""
    room = config.max_segments - len(state.segment_profiles)
    if room <= 0 or not predictions.segments:
        return {}
    found: list[tuple[int, str]] = []
    for key in sorted(predictions.segments):
        coded = _coded(predictions.segments[key])
        codes, first = np.unique(coded.codes, return_index=True)
        for code, at in zip(codes.tolist(), first.tolist(), strict=True):
            if code >= 0:
                name = f"{key}={coded.labels[code]}"
                if name not in state.segment_profiles:
                    found.append((at, name))
    admitted: dict[int, list[str]] = {}
    for at, name in sorted(found)[:room]:
        admitted.setdefault(at, []).append(name)
    return admitted


def _observe_segments(
    state: ModelState, predictions: PredictionColumns, event_ids: np.ndarray, result: Any
) -> None:
    """Feed each admitted segment's events of these predictions to its windows; count the
    events of segment values that are not tested (over the ``max_segments`` bound)."""
    if not predictions.segments:
        return
    if not state.segment_profiles:
        # segment windows off (the default) or none admitted: every non-null value is
        # untested, counted without dictionary-encoding each key's column per batch
        untested = sum(len(column) - column.null_count for column in predictions.segments.values())
        if untested:
            result.counters["segment_events_untested"] += untested
        return
    load = _segment_load(state)
    batch: FeatureBatch | None = None
    for key in sorted(predictions.segments):
        coded = _coded(predictions.segments[key])
        untested = int((coded.codes >= 0).sum())
        for code, label in enumerate(coded.labels):
            monitor = state.segment_profiles.get(f"{key}={label}")
            if monitor is None:
                continue
            rows = np.flatnonzero(coded.codes == code)
            if not rows.size:
                continue
            untested -= int(rows.size)
            if batch is None:
                batch = feature_batch(predictions)
            monitor.set_segment_load(*load)
            _feed(monitor, batch.take(rows), rows, predictions, event_ids, result)
        if untested:
            result.counters["segment_events_untested"] += untested


def _wanted(state: ModelState, references: ReferenceBook | None) -> ReferenceProfile | None:
    """The uploaded reference the windows of the version in use should test against, or None
    to keep what they have. The rule:

    1. the model's latest reference uploaded with ``version`` equal to the serving version;
    2. else the reference in use, if it was uploaded for this version (the book may have lost
       it: the topic is compacted by model, and a restart reads only the latest);
    3. else, for the model's first version only, its latest reference whatever its version
       (the rule from before versions: a reference labelled ``train-7`` serves version 1);
    4. else none: a later version without its own reference keeps its first events."""
    if references is None or not state.profile_versions:
        return None
    version = state.profile_versions[-1]
    own = references.for_version(state.model_id, version)
    if own is not None:
        return own
    monitor = state.profiles
    in_use = monitor.profile if monitor is not None else None
    if in_use is not None and in_use.source != "first_events" and in_use.version == version:
        return None
    if len(state.profile_versions) == 1:
        return references.get(state.model_id)
    return None


def _observe(
    state: ModelState,
    predictions: PredictionColumns,
    event_ids: np.ndarray,
    config: MonitorConfig,
    result: Any,
    references: ReferenceBook | None,
) -> None:
    """:func:`observe`'s all-traffic windows for events of one version epoch (no
    re-baseline inside)."""
    monitor = state.profiles
    uploaded = _wanted(state, references)
    if uploaded is not None and (
        monitor is None
        or monitor.profile is None
        or monitor.profile.reference_id != uploaded.reference_id
    ):
        set_reference(state, uploaded, config)
        monitor = state.profiles
        result.counters["references_applied"] += 1
    if monitor is None:
        monitor = state.profiles = ProfileMonitor(state.model_id, config=config)
    monitor.set_segment_load(*_segment_load(state))
    _feed(monitor, feature_batch(predictions), None, predictions, event_ids, result)


def _feed(
    monitor: ProfileMonitor,
    batch: FeatureBatch,
    rows: np.ndarray | None,
    predictions: PredictionColumns,
    event_ids: np.ndarray,
    result: Any,
) -> None:
    """Feed ``batch`` (the events at ``rows`` of ``predictions``, or all of them) to one of
    the model's monitors; add the rows and drift events of every window that closed."""
    n = len(batch)
    first_seq = monitor.seq
    had_reference = monitor.profile is not None
    warmup_start = monitor.warmup_start
    reports = monitor.update(batch)
    if not had_reference and monitor.profile is not None:
        # Built from the version's first events in this batch: "uploaded" at the event time
        # of its last event, so a replay writes the same row.
        wanted = monitor.config.auto_reference_events
        last = min(max(warmup_start + wanted - 1 - first_seq, 0), n - 1)
        entry = ReferenceEntry(monitor.profile, int(batch.event_time[last]), "worker")
        result.rows["reference_profiles"] += reference_rows(entry, monitor.segment)
    for report in reports:
        # The closing event is always in this batch; its version (not the batch's last one)
        # keeps the rows independent of where the batch ends.
        closing = report.closed_by_seq - first_seq
        if rows is not None:
            closing = int(rows[closing])
        version = str(predictions.model_version[closing])
        drift_rows, quality_rows = window_rows(report, version)
        result.rows["feature_drift"] += drift_rows
        result.rows["data_quality"] += quality_rows
        for event in drift_events(report, version, str(event_ids[closing])):
            result.drift_events.append(event)
            result.rows["drift_events"].append(event)
        result.counters["drift_windows"] += 1


def _stream(feature: str, signal: str) -> tuple[str, str]:
    if signal == "multivariate":
        return STREAM_METRIC, "multivariate"
    if feature in _OUTPUT_STREAMS:
        return STREAM_PREDICTION, _OUTPUT_STREAMS[feature]
    return STREAM_FEATURE, feature


def window_rows(
    report: WindowReport, model_version: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``feature_drift`` and ``data_quality`` rows of one closed window."""
    drift: list[dict[str, Any]] = []
    quality: list[dict[str, Any]] = []
    for row in report.rows:
        kind, name = _stream(row.feature, row.signal)
        r = row.result
        record = {
            "model_id": report.model_id,
            "model_version": model_version,
            "window_index": report.window_index,
            "window_start": report.start_time_ms,
            "window_end": report.end_time_ms,
            "first_position": report.first_seq,
            "last_position": report.last_seq,
            "stream_kind": kind,
            "feature": name,
            "column_kind": row.kind,
            "test": r.test,
            "statistic": _finite(r.statistic),
            "p_value": r.p_value,
            "threshold": float(r.threshold),
            "n_reference": int(r.n_reference),
            "n_current": int(r.n_current),
            "insufficient_data": int(r.insufficient_data),
            "drifted": int(r.drift),
            "reference_id": report.reference_id,
            "reference_version": report.reference_version,
            "reference_source": report.reference_source,
            "segment": report.segment,
        }
        (quality if row.signal == "quality" else drift).append(record)
    return drift, quality


def _finite(value: float | None) -> float | None:
    """ClickHouse takes inf, but JSON consumers do not; an infinite statistic (a category
    the reference never had, in Evidently's χ²) is kept as null with the p-value saying it."""
    if value is None or not np.isfinite(value):
        return None
    return float(value)


def drift_events(
    report: WindowReport, model_version: str, source_event_id: str
) -> list[dict[str, Any]]:
    """One DriftEvent per drifted column, quality issue and multivariate drift."""
    by_feature: dict[str, list[TestRow]] = {}
    for row in report.rows:
        by_feature.setdefault(row.feature, []).append(row)
    window = {
        "window_index": str(report.window_index),
        "window_start": str(report.start_time_ms),
        "window_end": str(report.end_time_ms),
        "first_position": str(report.first_seq),
        "last_position": str(report.last_seq),
        "reference_id": report.reference_id,
        "reference_version": report.reference_version,
        "reference_source": report.reference_source,
        "alpha": repr(report.alpha),
    }
    if report.segment:
        # In the evidence map rather than a new DriftEvent field: every reader of the topic,
        # however old its schema manifest, decodes it (docs/drift.md, "Segments").
        window["segment"] = report.segment
    events = []
    for feature in report.drifted_features:
        rows = [r for r in by_feature[feature] if r.signal == "drift"]
        deciding = min(
            (r for r in rows if r.result.p_value is not None and r.result.test != "psi"),
            key=lambda r: r.result.p_value,
        )
        events.append(_event(report, model_version, source_event_id, deciding, rows, window))
    for feature, test in report.quality_issues:
        (row,) = [r for r in by_feature[feature] if r.result.test == test]
        events.append(_event(report, model_version, source_event_id, row, [row], window))
    if report.multivariate_drift:
        (row,) = [r for r in by_feature["*"] if r.signal == "multivariate"]
        events.append(_event(report, model_version, source_event_id, row, [row], window))
    return events


def _event(
    report: WindowReport,
    model_version: str,
    source_event_id: str,
    deciding: TestRow,
    rows: list[TestRow],
    window: dict[str, str],
) -> dict[str, Any]:
    kind, name = _stream(deciding.feature, deciding.signal)
    evidence = {**window, "signal": deciding.signal}
    for row in rows:
        r = row.result
        evidence[f"{r.test}.statistic"] = repr(r.statistic)
        if r.p_value is not None:
            evidence[f"{r.test}.p_value"] = repr(r.p_value)
        evidence[f"{r.test}.threshold"] = repr(r.threshold)
        evidence[f"{r.test}.drift"] = str(r.drift).lower()
    evidence["n_reference"] = str(deciding.result.n_reference)
    evidence["n_current"] = str(deciding.result.n_current)
    test = deciding.result.test
    # a segment's positions count its own events: the segment keeps its ids apart from the
    # all-traffic windows' (whose ids are as before segments existed)
    cause = [str(report.closed_by_seq), *([report.segment] if report.segment else [])]
    return {
        "event_id": event_id("drift", report.model_id, kind, name, test, *cause),
        "model_id": report.model_id,
        "model_version": model_version,
        "stream_kind": kind,
        "stream_name": name,
        "detector": test,
        "detected_at": report.end_time_ms,
        "position": report.closed_by_seq,
        "statistic": _finite(deciding.result.statistic),
        "p_value": deciding.result.p_value,
        "threshold": float(deciding.result.threshold),
        "evidence": evidence,
        "source_event_id": source_event_id,
    }
