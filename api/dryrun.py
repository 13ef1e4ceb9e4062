"""Dry-run: would a rule have fired over a past range? Evaluated on ClickHouse history through
the store interface (``store.query(sql, parameters)``) only.

* drift signals read ``drift_events``: every matching event is an instant on which the
  condition holds; ``cooldown`` suppresses re-firing of a group, ``min_samples`` requires the
  detector to have seen that many values (``position + 1``).
* metric signals read ``model_metrics_minute`` (all traffic, segment ``''``), summed into
  tumbling windows of ``window`` aligned to the epoch; a window with fewer than ``min_samples``
  values behind the metric is skipped.
* statistic signals read ``detector_stats`` rows; ``min_samples`` applies to ``n_values``.

A threshold fires once it has held for ``for`` on a series, then not again until it stopped
holding and ``cooldown`` has passed since the group's last firing. The worker's evaluator is
the authority; this is the same logic over stored history, for trying a rule before saving it.
"""

from __future__ import annotations

import fnmatch
import json
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.exceptions import RequestValidationError

from .models import (
    DriftSignal,
    DryRunResult,
    Firing,
    MetricSignal,
    RuleBase,
    StatisticSignal,
    Threshold,
    parse_duration,
)
from .sql import hexed, text

__all__ = ["evaluate", "OPS"]

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass
class Point:
    series: tuple[str, ...]
    labels: dict[str, str]
    at: datetime
    holds: bool
    value: float | None = None
    event_ids: list[str] = field(default_factory=list)


# Lists travel as one hex-encoded JSON String parameter: chdb and clickhouse-connect bind
# Array(String) parameters differently, and text needs hex (see sql.py).


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromtimestamp(float(value), UTC)


def _models(store: Any, rule: RuleBase, table: str, time_col: str, start: datetime,
            end: datetime, warnings: list[str]) -> list[str]:  # fmt: skip
    if rule.models is not None:
        return list(rule.models)
    selector = dict(rule.model_selector or {})
    pattern = selector.pop("model_id", "*")
    if selector:
        warnings.append(
            f"model labels {sorted(selector)} are not in the history tables; the dry-run "
            "matched models on model_id only"
        )
    rows = store.query(
        f"SELECT DISTINCT model_id FROM {table} WHERE {time_col} >= "
        "fromUnixTimestamp64Milli({start:Int64}, 'UTC') AND "
        f"{time_col} < fromUnixTimestamp64Milli({{end:Int64}}, 'UTC')",
        {"start": _ms(start), "end": _ms(end)},
    )
    return sorted(m for (m,) in rows if fnmatch.fnmatchcase(m, pattern))


def _too_many(max_rows: int) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "loc": ("body", "end"),
                "msg": f"more than {max_rows} rows of history in this range; narrow it",
                "type": "value_error",
            }
        ]
    )


def _stream_filter(signal: DriftSignal | StatisticSignal) -> str:
    return (
        f" AND stream_kind = {text('kind')}"
        f" AND ({text('stream')} = '*' OR stream_name = {text('stream')})"
        f" AND ({text('detector')} = '*' OR detector = {text('detector')})"
    )


def _drift_points(store: Any, rule: RuleBase, signal: DriftSignal, models: list[str],
                  start: datetime, end: datetime, max_rows: int) -> list[Point]:  # fmt: skip
    rows = store.query(
        "SELECT event_id, model_id, stream_kind, stream_name, detector, "
        "toUnixTimestamp64Milli(detected_at), position, statistic "
        "FROM drift_events FINAL "
        "WHERE detected_at >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') "
        "AND detected_at < fromUnixTimestamp64Milli({end:Int64}, 'UTC') "
        "AND has(JSONExtract(unhex({models:String}), 'Array(String)'), model_id)"
        + _stream_filter(signal)
        + " ORDER BY detected_at, event_id LIMIT {limit:UInt64}",
        {
            "start": _ms(start),
            "end": _ms(end),
            "models": hexed(json.dumps(models)),
            "kind": hexed(signal.stream_kind),
            "stream": hexed(signal.stream_name),
            "detector": hexed(signal.detector),
            "limit": max_rows + 1,
        },
    )
    if len(rows) > max_rows:
        raise _too_many(max_rows)
    points = []
    for event_id, model, kind, stream, detector, at_ms, position, statistic in rows:
        labels = {"model_id": model, "stream_kind": kind, "stream_name": stream,
                  "detector": detector}  # fmt: skip
        points.append(
            Point(
                series=(model, kind, stream, detector, event_id),
                labels=labels,
                at=datetime.fromtimestamp(at_ms / 1000, UTC),
                holds=position + 1 >= rule.min_samples,
                value=statistic,
                event_ids=[event_id],
            )
        )
    return points


def _metric_value(metric: str, sums: dict[str, float]) -> tuple[float | None, float]:
    """(value, samples behind it)."""
    if metric in ("accuracy", "error_rate"):
        n = sums["classified"]
        if not n:
            return None, 0
        accuracy = sums["correct"] / n
        return (accuracy if metric == "accuracy" else 1.0 - accuracy), n
    if metric in ("mae", "rmse"):
        n = sums["scored"]
        if not n:
            return None, 0
        if metric == "mae":
            return sums["error_sum"] / n, n
        return math.sqrt(sums["squared_error_sum"] / n), n
    if metric == "label_coverage":
        n = sums["predictions"]
        return (sums["labeled"] / n if n else None), n
    return sums["predictions"], math.inf  # prediction_count: zero traffic is a value too


_SUMS = ("predictions", "labeled", "classified", "correct", "scored", "error_sum",
         "squared_error_sum")  # fmt: skip


def _metric_points(store: Any, rule: RuleBase, signal: MetricSignal, condition: Threshold,
                   models: list[str], start: datetime, end: datetime,
                   max_rows: int) -> tuple[list[Point], int]:  # fmt: skip
    window = parse_duration(signal.window)
    rows = store.query(
        "SELECT model_id, toUnixTimestamp(toStartOfInterval(minute, toIntervalSecond({w:UInt32}))) "
        "AS bucket, "
        + ", ".join(f"sum({c})" for c in _SUMS)
        + " FROM model_metrics_minute WHERE segment = '' "
        "AND minute >= toDateTime(intDiv({start:Int64}, 1000), 'UTC') "
        "AND minute < toDateTime(intDiv({end:Int64}, 1000), 'UTC') "
        "AND has(JSONExtract(unhex({models:String}), 'Array(String)'), model_id) "
        "GROUP BY model_id, bucket ORDER BY model_id, bucket LIMIT {limit:UInt64}",
        {
            "w": window,
            "start": _ms(start),
            "end": _ms(end),
            "models": hexed(json.dumps(models)),
            "limit": max_rows + 1,
        },  # fmt: skip
    )
    if len(rows) > max_rows:
        raise _too_many(max_rows)
    by_bucket = {(r[0], int(r[1])): dict(zip(_SUMS, r[2:], strict=True)) for r in rows}
    first = int(start.timestamp()) // window * window
    buckets = range(first, int(end.timestamp()), window)
    if signal.metric == "prediction_count" and len(buckets) * max(1, len(models)) > max_rows:
        raise _too_many(max_rows)
    points = []
    test = OPS[condition.op]
    for model in models:
        # Only prediction_count reads a window without rows (as zero traffic).
        keys = buckets if signal.metric == "prediction_count" else sorted(
            b for m, b in by_bucket if m == model
        )  # fmt: skip
        for bucket in keys:
            sums = by_bucket.get((model, bucket), dict.fromkeys(_SUMS, 0))
            value, n = _metric_value(signal.metric, sums)
            if value is None or n < rule.min_samples:
                continue
            bucket_end = datetime.fromtimestamp(bucket + window, UTC)
            points.append(
                Point(
                    series=(model,),
                    labels={"model_id": model, "metric": signal.metric},
                    at=min(bucket_end, end),
                    holds=test(value, condition.value),
                    value=value,
                )
            )
    return points, len(rows)


def _statistic_points(store: Any, rule: RuleBase, signal: StatisticSignal,
                      condition: Threshold, models: list[str], start: datetime, end: datetime,
                      max_rows: int) -> list[Point]:  # fmt: skip
    rows = store.query(
        "SELECT model_id, stream_kind, stream_name, detector, toUnixTimestamp64Milli(time), "
        "n_values, estimate, statistic, p_value FROM detector_stats FINAL "
        "WHERE time >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') "
        "AND time < fromUnixTimestamp64Milli({end:Int64}, 'UTC') "
        "AND has(JSONExtract(unhex({models:String}), 'Array(String)'), model_id)"
        + _stream_filter(signal)
        + " ORDER BY time LIMIT {limit:UInt64}",
        {
            "start": _ms(start),
            "end": _ms(end),
            "models": hexed(json.dumps(models)),
            "kind": hexed(signal.stream_kind),
            "stream": hexed(signal.stream_name),
            "detector": hexed(signal.detector),
            "limit": max_rows + 1,
        },
    )
    if len(rows) > max_rows:
        raise _too_many(max_rows)
    test = OPS[condition.op]
    points = []
    for model, kind, stream, detector, at_ms, n_values, estimate, statistic, p_value in rows:
        value = {"n_values": n_values, "estimate": estimate, "statistic": statistic,
                 "p_value": p_value}[signal.field]  # fmt: skip
        if value is None or n_values < rule.min_samples:
            continue
        points.append(
            Point(
                series=(model, kind, stream, detector),
                labels={
                    "model_id": model,
                    "stream_kind": kind,
                    "stream_name": stream,
                    "detector": detector,
                },  # fmt: skip
                at=datetime.fromtimestamp(at_ms / 1000, UTC),
                holds=test(float(value), condition.value),
                value=float(value),
            )
        )
    return points


def fire(points: Iterable[Point], rule: RuleBase, *, instant: bool) -> list[Firing]:
    """Replay points in time order through the pending -> firing -> resolved cycle."""
    hold_for = timedelta(seconds=0 if instant else parse_duration(rule.for_))
    cooldown = timedelta(seconds=parse_duration(rule.cooldown))
    static = {"alertname": rule.name, "severity": rule.severity, **rule.labels}
    since: dict[tuple, datetime] = {}
    firing: set[tuple] = set()
    last_fire: dict[tuple, datetime] = {}
    firings = []
    for point in sorted(points, key=lambda p: p.at):
        labels = {**static, **point.labels}
        group = {key: labels.get(key, "") for key in rule.group_by}
        group_key = tuple(sorted(group.items()))
        if not point.holds:
            since.pop(point.series, None)
            firing.discard(point.series)
            continue
        start = since.setdefault(point.series, point.at)
        if point.series in firing or point.at - start < hold_for:
            continue
        last = last_fire.get(group_key)
        if last is not None and point.at - last < cooldown:
            continue
        last_fire[group_key] = point.at
        if not instant:
            firing.add(point.series)
        firings.append(
            Firing(group=group, at=point.at, value=point.value, event_ids=point.event_ids)
        )
    return firings


def evaluate(store: Any, rule: RuleBase, start: datetime, end: datetime, *,
             max_rows: int = 200_000) -> DryRunResult:  # fmt: skip
    warnings: list[str] = []
    signal, condition = rule.signal, rule.condition
    if isinstance(signal, DriftSignal):
        models = _models(store, rule, "drift_events", "detected_at", start, end, warnings)
        points = _drift_points(store, rule, signal, models, start, end, max_rows) if models else []
        if parse_duration(rule.for_):
            warnings.append("'for' does not apply to drift_detected (a drift event is instant)")
        evaluated, instant = len(points), True
    elif isinstance(signal, MetricSignal) and isinstance(condition, Threshold):
        models = _models(store, rule, "model_metrics_minute", "minute", start, end, warnings)
        points, evaluated = (
            _metric_points(store, rule, signal, condition, models, start, end, max_rows)
            if models
            else ([], 0)
        )
        instant = False
    elif isinstance(signal, StatisticSignal) and isinstance(condition, Threshold):
        models = _models(store, rule, "detector_stats", "time", start, end, warnings)
        points = (
            _statistic_points(store, rule, signal, condition, models, start, end, max_rows)
            if models
            else []
        )
        evaluated, instant = len(points), False
    else:  # check_rule refuses these combinations before we get here
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "condition"),
                    "msg": "signal and condition do not fit",
                    "type": "value_error",
                }
            ]  # fmt: skip
        )
    if not models:
        warnings.append("no model of the rule has history in this range")
    firings = fire(points, rule, instant=instant)
    return DryRunResult(
        would_fire=bool(firings),
        firings=firings,
        evaluated=evaluated,
        start=start,
        end=end,
        warnings=warnings,
    )
