"""Dry-run: would a rule have fired over a past range? Evaluated on ClickHouse history through
the store interface (``store.query(sql, parameters)``) only, with the lifecycle the workers'
evaluator uses (docs/alerting.md), per group (``model_id`` + ``group_by`` labels):

* drift signals read ``drift_events``. A matching event (``position + 1 >= min_samples``)
  starts an episode, PENDING (FIRING at once with ``for: 0s``); the condition holds until no
  matching drift for ``repeat_interval`` (the quiet period), when it RESOLVES; PENDING turns
  FIRING at ``starts_at + for`` if it still holds then.
* metric signals read ``model_metrics_minute`` (all traffic, segment ``''``) and tick once a
  minute over the trailing ``window`` (the workers tick every ``window / 20``, from their own
  buckets; the minute view keys labels by prediction time, the workers by outcome time).
* statistic signals read ``detector_stats`` rows; ``min_samples`` applies to ``n_values``; a
  group holds at a time if any of its streams does.
* thresholds: PENDING when the condition first holds, FIRING once it has held ``for``,
  RESOLVED at the first tick/row where it does not.
* after RESOLVED, a new episode of the group waits ``cooldown``.

The result lists each episode that reached FIRING (repeat notifications are not listed). The
worker's evaluator is the authority; this replays the same rules over stored history, to try a
rule before saving it.
"""

from __future__ import annotations

import fnmatch
import itertools
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
    """One moment of one series: a drift event, a metric tick or a detector_stats row."""

    labels: dict[str, str]
    at: datetime
    holds: bool
    value: float | None = None
    event_ids: list[str] = field(default_factory=list)


@dataclass
class Episode:
    group: dict[str, str]
    model_id: str
    starts_at: datetime
    last: datetime
    count: int = 1
    event_ids: list[str] = field(default_factory=list)
    value: float | None = None
    firing: Firing | None = None


MAX_TRIGGERS = 10


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
    # stream_name is an fnmatch glob, as in the workers: exact names filter in SQL, globs in
    # Python (_stream_matches).
    return (
        f" AND stream_kind = {text('kind')}"
        f" AND ({{glob:UInt8}} = 1 OR stream_name = {text('stream')})"
        f" AND ({text('detector')} = '*' OR detector = {text('detector')})"
    )


def _stream_params(signal: DriftSignal | StatisticSignal) -> dict[str, Any]:
    return {
        "kind": hexed(signal.stream_kind),
        "stream": hexed(signal.stream_name),
        "glob": int(any(c in signal.stream_name for c in "*?[")),
        "detector": hexed(signal.detector),
    }


def _stream_matches(signal: DriftSignal | StatisticSignal, name: str) -> bool:
    return fnmatch.fnmatchcase(name, signal.stream_name)


def _drift_points(store: Any, rule: RuleBase, signal: DriftSignal, models: list[str],
                  start: datetime, end: datetime, max_rows: int) -> list[Point]:  # fmt: skip
    rows = store.query(
        "SELECT event_id, model_id, model_version, stream_kind, stream_name, detector, "
        "toUnixTimestamp64Milli(detected_at), position "
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
            **_stream_params(signal),
            "limit": max_rows + 1,
        },
    )
    if len(rows) > max_rows:
        raise _too_many(max_rows)
    return [
        Point(
            labels={
                "model_id": model,
                "model_version": version,
                "stream_kind": kind,
                "stream_name": stream,
                "detector": detector,
            },  # fmt: skip
            at=datetime.fromtimestamp(at_ms / 1000, UTC),
            holds=position + 1 >= rule.min_samples,
            event_ids=[event_id],
        )
        for event_id, model, version, kind, stream, detector, at_ms, position in rows
        if _stream_matches(signal, stream)
    ]


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
    n = sums["predictions"]
    if metric == "label_coverage":
        return (min(1.0, sums["labeled"] / n) if n else None), n
    return n, n  # prediction_count: zero traffic is a value too


_SUMS = ("predictions", "labeled", "classified", "correct", "scored", "error_sum",
         "squared_error_sum")  # fmt: skip


def _metric_points(store: Any, rule: RuleBase, signal: MetricSignal, condition: Threshold,
                   models: list[str], start: datetime, end: datetime,
                   max_rows: int) -> tuple[list[Point], int]:  # fmt: skip
    """One point per model and minute tick ``t`` in [start, end], over ``[t - window, t)``."""
    window = parse_duration(signal.window) // 60
    first = int(start.timestamp()) // 60 - window  # minute index of the first window's start
    last = -(-int(end.timestamp()) // 60)  # last tick (minute index, rounded up)
    if (last - first) * max(1, len(models)) > max_rows:
        raise _too_many(max_rows)
    rows = store.query(
        "SELECT model_id, intDiv(toUnixTimestamp(minute), 60) AS m, "
        + ", ".join(f"sum({c})" for c in _SUMS)
        + " FROM model_metrics_minute WHERE segment = '' "
        "AND minute >= toDateTime({first:Int64} * 60, 'UTC') "
        "AND minute < toDateTime({last:Int64} * 60, 'UTC') "
        "AND has(JSONExtract(unhex({models:String}), 'Array(String)'), model_id) "
        "GROUP BY model_id, m ORDER BY model_id, m LIMIT {limit:UInt64}",
        {
            "first": first,
            "last": last,
            "models": hexed(json.dumps(models)),
            "limit": max_rows + 1,
        },  # fmt: skip
    )
    if len(rows) > max_rows:
        raise _too_many(max_rows)
    size = last - first
    dense = {m: {c: [0.0] * (size + 1) for c in _SUMS} for m in models}
    for model, minute, *sums in rows:
        for c, v in zip(_SUMS, sums, strict=True):
            dense[model][c][int(minute) - first + 1] = float(v)
    test = OPS[condition.op]
    points = []
    first_tick = -(-int(start.timestamp()) // 60)
    for model in models:
        # Prefix sums: a window's sums in O(1) per tick.
        prefix = {c: list(itertools.accumulate(dense[model][c])) for c in _SUMS}
        for tick in range(first_tick, last + 1):
            hi, lo = tick - first, tick - window - first
            sums = {c: prefix[c][hi] - prefix[c][lo] for c in _SUMS}
            value, n = _metric_value(signal.metric, sums)
            holds = value is not None and n >= rule.min_samples and test(value, condition.value)
            points.append(
                Point(
                    labels={"model_id": model, "model_version": "", "metric": signal.metric},
                    at=datetime.fromtimestamp(tick * 60, UTC),
                    holds=holds,
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
            **_stream_params(signal),
            "limit": max_rows + 1,
        },
    )
    if len(rows) > max_rows:
        raise _too_many(max_rows)
    test = OPS[condition.op]
    points = []
    for model, kind, stream, detector, at_ms, n_values, estimate, statistic, p_value in rows:
        if not _stream_matches(signal, stream):
            continue
        value = {"n_values": n_values, "estimate": estimate, "statistic": statistic,
                 "p_value": p_value}[signal.field]  # fmt: skip
        usable = value is not None and math.isfinite(value) and n_values >= rule.min_samples
        points.append(
            Point(
                labels={
                    "model_id": model,
                    "model_version": "",
                    "stream_kind": kind,
                    "stream_name": stream,
                    "detector": detector,
                },  # fmt: skip
                at=datetime.fromtimestamp(at_ms / 1000, UTC),
                holds=usable and test(float(value), condition.value),
                value=float(value) if usable else None,
            )
        )
    return points


def _group(rule: RuleBase, labels: dict[str, str]) -> tuple[tuple, dict[str, str]]:
    """The group key (``model_id`` always in it, as in the workers' fingerprint) and labels."""
    group = {key: labels.get(key, rule.labels.get(key, "")) for key in rule.group_by}
    return (labels["model_id"], tuple(sorted(group.items()))), group


def _fire(episode: Episode, at: datetime) -> Firing:
    episode.firing = Firing(
        group=episode.group,
        model_id=episode.model_id,
        starts_at=episode.starts_at,
        at=at,
        value=episode.value if episode.value is not None else float(episode.count),
        event_ids=list(episode.event_ids),
    )
    return episode.firing


def drift_firings(points: Iterable[Point], rule: RuleBase, end: datetime) -> list[Firing]:
    """Episodes of drift events: they hold until ``repeat_interval`` passes without one."""
    hold_for = timedelta(seconds=parse_duration(rule.for_))
    cooldown = timedelta(seconds=parse_duration(rule.cooldown))
    quiet = timedelta(seconds=parse_duration(rule.repeat_interval))
    open_: dict[tuple, Episode] = {}
    ended: dict[tuple, datetime] = {}
    firings: list[Firing] = []
    fired_episodes: list[tuple[Firing, Episode]] = []

    def fire(episode: Episode, at: datetime) -> None:
        firings.append(_fire(episode, at))
        fired_episodes.append((firings[-1], episode))

    def advance(key: tuple, now: datetime) -> None:
        episode = open_.get(key)
        if episode is None:
            return
        resolve_at = episode.last + quiet
        fire_at = episode.starts_at + hold_for
        if episode.firing is None and fire_at < resolve_at and fire_at <= now:
            fire(episode, fire_at)
        if resolve_at <= now:
            if episode.firing is not None:
                episode.firing.resolved_at = resolve_at
            ended[key] = resolve_at
            del open_[key]

    for point in sorted(points, key=lambda p: (p.at, p.event_ids)):
        key, group = _group(rule, point.labels)
        advance(key, point.at)
        if not point.holds:
            continue
        episode = open_.get(key)
        if episode is None:
            if key in ended and point.at < ended[key] + cooldown:
                continue
            episode = open_[key] = Episode(group, point.labels["model_id"], point.at, point.at)
            episode.event_ids = point.event_ids[:MAX_TRIGGERS]
            if not hold_for:
                fire(episode, point.at)
        else:
            episode.last = point.at
            episode.count += 1
            if len(episode.event_ids) < MAX_TRIGGERS:
                episode.event_ids += point.event_ids
        if not quiet:  # "until the next evaluation without drift": over at once
            advance(key, point.at)
    for key in list(open_):
        advance(key, end)
    for firing, episode in fired_episodes:  # the episode's first ids, also after firing
        firing.event_ids = episode.event_ids[:MAX_TRIGGERS]
    return sorted(firings, key=lambda f: (f.at, f.model_id))


def threshold_firings(points: Iterable[Point], rule: RuleBase) -> list[Firing]:
    """Episodes of a level: PENDING while it holds, FIRING after ``for``, RESOLVED when not."""
    hold_for = timedelta(seconds=parse_duration(rule.for_))
    cooldown = timedelta(seconds=parse_duration(rule.cooldown))
    # A group holds at a time if any of its series does (several streams in one group).
    moments: dict[tuple[tuple, datetime], tuple[dict[str, str], Point]] = {}
    for point in points:
        key, group = _group(rule, point.labels)
        seen = moments.get((key, point.at))
        if seen is None or (point.holds and not seen[1].holds):
            moments[(key, point.at)] = (group, point)
    open_: dict[tuple, Episode] = {}
    ended: dict[tuple, datetime] = {}
    firings: list[Firing] = []
    for (key, at), (group, point) in sorted(moments.items(), key=lambda kv: kv[0][1]):
        episode = open_.get(key)
        if not point.holds:
            if episode is not None:
                if episode.firing is not None:
                    episode.firing.resolved_at = at
                ended[key] = at
                del open_[key]
            continue
        if episode is None:
            if key in ended and at < ended[key] + cooldown:
                continue
            episode = open_[key] = Episode(group, point.labels["model_id"], at, at)
        episode.value = point.value
        if episode.firing is None and at - episode.starts_at >= hold_for:
            firings.append(_fire(episode, at))
    return sorted(firings, key=lambda f: (f.at, f.model_id))


def evaluate(store: Any, rule: RuleBase, start: datetime, end: datetime, *,
             max_rows: int = 200_000) -> DryRunResult:  # fmt: skip
    warnings: list[str] = []
    signal, condition = rule.signal, rule.condition
    if isinstance(signal, DriftSignal):
        models = _models(store, rule, "drift_events", "detected_at", start, end, warnings)
        points = _drift_points(store, rule, signal, models, start, end, max_rows) if models else []
        firings, evaluated = drift_firings(points, rule, end), len(points)
    elif isinstance(signal, MetricSignal) and isinstance(condition, Threshold):
        models = _models(store, rule, "model_metrics_minute", "minute", start, end, warnings)
        points, evaluated = (
            _metric_points(store, rule, signal, condition, models, start, end, max_rows)
            if models
            else ([], 0)
        )
        firings = threshold_firings(points, rule)
    elif isinstance(signal, StatisticSignal) and isinstance(condition, Threshold):
        models = _models(store, rule, "detector_stats", "time", start, end, warnings)
        points = (
            _statistic_points(store, rule, signal, condition, models, start, end, max_rows)
            if models
            else []
        )
        firings, evaluated = threshold_firings(points, rule), len(points)
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
    return DryRunResult(
        would_fire=bool(firings),
        firings=firings,
        evaluated=evaluated,
        start=start,
        end=end,
        warnings=warnings,
    )
