"""What the dashboard shows, read from ClickHouse through the store interface
(``store.query(sql, parameters)``): the tables the workers write (sinks/migrations).

Times travel as epoch milliseconds. Free text is bound hex-encoded (api/sql.py).
Buckets follow the data, not the range: a model seen for one minute of a week still gets a
readable chart (``bucket_seconds``).
"""

from __future__ import annotations

import math
from typing import Any

from ..sql import hexed, text

__all__ = ["bucket_seconds", "overview", "series", "heatmap", "segments", "drifts", "event"]

_RANGE = "{col} >= fromUnixTimestamp64Milli({{since:Int64}}, 'UTC') AND " \
         "{col} < fromUnixTimestamp64Milli({{until:Int64}}, 'UTC')"  # fmt: skip
_NICE = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)


def _in_range(col: str) -> str:
    return _RANGE.format(col=col)


def bucket_seconds(first_ms: int | None, last_ms: int | None, points: int = 150) -> int:
    """A round bucket width giving at most about ``points`` buckets over the data's extent.

    >>> bucket_seconds(0, 60_000), bucket_seconds(0, 86_400_000), bucket_seconds(None, None)
    (1, 600, 60)
    """
    if first_ms is None or last_ms is None:
        return 60
    wanted = max(1.0, (last_ms - first_ms) / 1000 / points)
    return next((n for n in _NICE if n >= wanted), math.ceil(wanted / 86400) * 86400)


def _ms(value: Any) -> int | None:
    return None if value is None else int(value)


def overview(store: Any, since: int, until: int) -> list[dict[str, Any]]:
    """One row per model and version: traffic, label coverage, accuracy / MAE, drift, alerts."""
    params = {"since": since, "until": until}
    metrics = store.query(
        "SELECT model_id, model_version, sum(predictions), sum(labeled), sum(classified), "
        "sum(correct), sum(scored), sum(error_sum), toUnixTimestamp(min(minute)) * 1000, "
        "toUnixTimestamp(max(minute)) * 1000 FROM model_metrics_minute "
        f"WHERE segment = '' AND {_in_range('minute')} "
        "GROUP BY model_id, model_version ORDER BY model_id, model_version",
        params,
    )
    drift = {
        (m, v): (n, last)
        for m, v, n, last in store.query(
            "SELECT model_id, model_version, count(), toUnixTimestamp64Milli(max(detected_at)) "
            f"FROM drift_events FINAL WHERE {_in_range('detected_at')} "
            "GROUP BY model_id, model_version",
            params,
        )
    }
    # Open = the latest state of an alert is pending or firing, whenever it started.
    alerts = dict(
        store.query(
            "SELECT model_id, countIf(s IN ('pending', 'firing')) FROM (SELECT model_id, "
            "fingerprint, argMax(state, updated_at) AS s FROM alerts FINAL "
            "GROUP BY model_id, fingerprint) GROUP BY model_id"
        )
    )
    rows = []
    for model, version, predictions, labeled, classified, correct, scored, error_sum, first, \
            last in metrics:  # fmt: skip
        n_drift, last_drift = drift.get((model, version), (0, None))
        rows.append(
            {
                "model_id": model,
                "model_version": version,
                "predictions": int(predictions),
                "labeled": int(labeled),
                "label_coverage": labeled / predictions if predictions else None,
                "accuracy": correct / classified if classified else None,
                "mae": error_sum / scored if scored and not classified else None,
                "first_seen": _ms(first),
                "last_seen": _ms(last),
                "drift_events": int(n_drift),
                "last_drift": _ms(last_drift),
                "open_alerts": int(alerts.get(model, 0)),
            }
        )
    return rows


def _segment_filter(segments_col: str) -> str:
    return (
        f" AND ({text('segment')} = '' OR has(arrayMap((k, v) -> concat(k, '=', v), "
        f"mapKeys({segments_col}), mapValues({segments_col})), {text('segment')}))"
    )


def _version_filter() -> str:
    return f" AND ({text('version')} = '' OR model_version = {text('version')})"


def _params(model: str, since: int, until: int, segment: str = "", version: str = "",
            bucket: int = 60) -> dict[str, Any]:  # fmt: skip
    return {"model": hexed(model), "since": since, "until": until, "segment": hexed(segment),
            "version": hexed(version), "bucket": bucket}  # fmt: skip


def series(store: Any, model: str, since: int, until: int, *, segment: str = "",
           version: str = "") -> dict[str, Any]:  # fmt: skip
    """Metrics per bucket (predictions, label coverage, accuracy, MAE) and the markers:
    drift events, retraining requests, first appearance of each model version."""
    params = _params(model, since, until, segment, version)
    where = f"model_id = {text('model')} AND "
    ((first, last),) = store.query(
        "SELECT toUnixTimestamp64Milli(min(event_time)), toUnixTimestamp64Milli(max(event_time)) "
        f"FROM predictions WHERE {where}{_in_range('event_time')}",
        params,
    ) or [(None, None)]
    if not first and not last:
        first = last = None
    params["bucket"] = bucket = bucket_seconds(first, last)
    interval = "INTERVAL {bucket:UInt32} SECOND"
    predictions = store.query(
        f"SELECT toUnixTimestamp(toStartOfInterval(event_time, {interval})) AS t, count() "
        f"FROM predictions FINAL WHERE {where}{_in_range('event_time')}"
        f"{_segment_filter('segments')}{_version_filter()} GROUP BY t ORDER BY t",
        params,
    )
    labels = store.query(
        f"SELECT toUnixTimestamp(toStartOfInterval(prediction_time, {interval})) AS t, count(), "
        "countIf(correct IS NOT NULL), sum(ifNull(correct, 0)), countIf(error IS NOT NULL), "
        f"sum(ifNull(error, 0)) FROM joined_labels FINAL WHERE {where}"
        f"{_in_range('prediction_time')}{_segment_filter('segments')}{_version_filter()} "
        "GROUP BY t ORDER BY t",
        params,
    )
    by_t = {int(t): {"t": int(t), "predictions": int(n)} for t, n in predictions}
    for t, labeled, classified, correct, scored, error_sum in labels:
        row = by_t.setdefault(int(t), {"t": int(t), "predictions": 0})
        row["labeled"] = int(labeled)
        row["accuracy"] = correct / classified if classified else None
        row["mae"] = error_sum / scored if scored and not classified else None
    points = [by_t[t] for t in sorted(by_t)]
    for row in points:
        row.setdefault("labeled", 0)
        row.setdefault("accuracy", None)
        row.setdefault("mae", None)
        row["label_coverage"] = row["labeled"] / row["predictions"] if row["predictions"] else None
    retraining = store.query(
        "SELECT toUnixTimestamp64Milli(requested_at), model_version, reason, priority, event_id "
        f"FROM retraining_requests FINAL WHERE {where}{_in_range('requested_at')} "
        "ORDER BY requested_at LIMIT 500",
        params,
    )
    versions = store.query(
        "SELECT model_version, toUnixTimestamp64Milli(min(event_time)) FROM predictions "
        f"WHERE {where}{_in_range('event_time')} GROUP BY model_version ORDER BY 2",
        params,
    )
    return {
        "model_id": model,
        "bucket_seconds": bucket,
        "points": points,
        "drifts": drifts(store, model, since, until, limit=500),
        "retraining": [
            {"at": int(at), "model_version": v, "reason": reason, "priority": priority,
             "event_id": event_id}  # fmt: skip
            for at, v, reason, priority, event_id in retraining
        ],
        "versions": [{"model_version": v, "first_seen": int(at)} for v, at in versions],
    }


def drifts(store: Any, model: str, since: int, until: int, *, limit: int = 200,
           stream: str = "") -> list[dict[str, Any]]:  # fmt: skip
    """Drift events with their evidence, oldest first (``stream``: ``KIND:name`` or all)."""
    params = {**_params(model, since, until), "stream": hexed(stream), "limit": limit}
    rows = store.query(
        "SELECT toUnixTimestamp64Milli(detected_at), event_id, model_version, stream_kind, "
        "stream_name, detector, position, statistic, p_value, threshold, evidence, "
        f"source_event_id FROM drift_events FINAL WHERE model_id = {text('model')} AND "
        f"{_in_range('detected_at')} AND ({text('stream')} = '' OR "
        f"concat(stream_kind, ':', stream_name) = {text('stream')}) "
        "ORDER BY detected_at, event_id LIMIT {limit:UInt32}",
        params,
    )
    keys = ("at", "event_id", "model_version", "stream_kind", "stream_name", "detector",
            "position", "statistic", "p_value", "threshold", "evidence", "source_event_id")  # fmt: skip
    out = []
    for row in rows:
        item = dict(zip(keys, row, strict=True))
        item["at"] = int(item["at"])
        item["evidence"] = dict(item["evidence"] or {})
        out.append(item)
    return out


def heatmap(store: Any, model: str, since: int, until: int, bucket: int) -> dict[str, Any]:
    """Per stream (``KIND:name``) and bucket: drift events and the detectors' latest estimate
    (``detector_stats``, one row per detector per worker batch)."""
    params = _params(model, since, until, bucket=bucket)
    interval = "INTERVAL {bucket:UInt32} SECOND"
    stats = store.query(
        "SELECT concat(stream_kind, ':', stream_name) AS s, "
        f"toUnixTimestamp(toStartOfInterval(time, {interval})) AS t, max(drift), "
        "argMax(estimate, time), max(n_values) FROM detector_stats FINAL "
        f"WHERE model_id = {text('model')} AND {_in_range('time')} GROUP BY s, t",
        params,
    )
    events = store.query(
        "SELECT concat(stream_kind, ':', stream_name) AS s, "
        f"toUnixTimestamp(toStartOfInterval(detected_at, {interval})) AS t, count() "
        f"FROM drift_events FINAL WHERE model_id = {text('model')} AND "
        f"{_in_range('detected_at')} GROUP BY s, t",
        params,
    )
    cells: dict[tuple[str, int], dict[str, Any]] = {}
    for s, t, drift, estimate, n in stats:
        cells[(s, int(t))] = {"stream": s, "t": int(t), "drifts": int(drift),
                              "estimate": estimate, "n_values": int(n)}  # fmt: skip
    for s, t, n in events:
        cell = cells.setdefault((s, int(t)), {"stream": s, "t": int(t), "drifts": 0,
                                              "estimate": None, "n_values": None})  # fmt: skip
        cell["drifts"] = max(cell["drifts"], int(n))
    streams = sorted({s for s, _ in cells}, key=lambda s: (s.split(":")[0] != "ERROR", s))
    times = sorted({t for _, t in cells})
    return {"bucket_seconds": bucket, "streams": streams, "times": times,
            "cells": sorted(cells.values(), key=lambda c: (c["stream"], c["t"]))}  # fmt: skip


def segments(store: Any, model: str) -> list[str]:
    """The ``key=value`` segments a model's traffic carries (the per-minute metrics' keys)."""
    rows = store.query(
        "SELECT DISTINCT segment FROM model_metrics_minute "
        f"WHERE model_id = {text('model')} AND segment != '' ORDER BY segment LIMIT 500",
        {"model": hexed(model)},
    )
    return [s for (s,) in rows]


def versions(store: Any, model: str) -> list[str]:
    rows = store.query(
        "SELECT DISTINCT model_version FROM model_metrics_minute "
        f"WHERE model_id = {text('model')} ORDER BY model_version LIMIT 500",
        {"model": hexed(model)},
    )
    return [v for (v,) in rows]


def event(store: Any, model: str, event_id: str) -> dict[str, Any]:
    """The raw evidence behind a drift: the prediction or outcome with this id, and its join."""
    params = {"model": hexed(model), "id": hexed(event_id)}
    where = f"model_id = {text('model')} AND event_id = {text('id')}"

    def rows(sql: str) -> list[dict[str, Any]]:
        frame = store.query_df(sql, params)
        return json_safe(frame.to_dict("records"))

    return {
        "predictions": rows(f"SELECT * EXCEPT ingested_at FROM predictions FINAL WHERE {where} LIMIT 1"),
        "outcomes": rows(f"SELECT * EXCEPT ingested_at FROM outcomes FINAL WHERE {where} LIMIT 1"),
        "joined_labels": rows(
            "SELECT * EXCEPT ingested_at FROM joined_labels FINAL WHERE model_id = "
            f"{text('model')} AND (prediction_id = {text('id')} OR outcome_id = {text('id')}) "
            "LIMIT 10"
        ),
    }


def json_safe(value: Any) -> Any:
    """Rows as JSON: times as ISO text, NaN/NULL as None, numpy scalars as Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
