"""Dry-run: would a rule have fired over a past range? History is read from ClickHouse through
the store interface (``store.query(sql, parameters)``) only, and run through the alert
lifecycle the workers use (:mod:`driftline.schemas.alert_lifecycle`, the same code), so for the
same events the dry-run says what the workers said:

* drift signals read ``drift_events`` (the DriftEvents the workers evaluated);
* statistic signals read ``detector_stats`` rows;
* verdict signals read ``model_verdicts`` (the post-deploy verdicts the workers took);
* metric signals read ``model_metrics_minute`` (all traffic, segment ``''``): the workers sum
  labelled rows into buckets by outcome time, the history has them per minute by prediction
  time, so metric dry-runs are as exact as minute sums allow.

Every model's clock then advances to ``end``: what was due by then (a ``for`` elapsing, a quiet
period ending) happens. The result lists each episode that reached FIRING in ``[start, end)``
(repeat notifications are not listed), with its RESOLVED time if that came before ``end``.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from driftline.schemas.alert_lifecycle import FIRING, RESOLVED, AlertEvaluator
from driftline.schemas.control_plane import Record, encode_value
from driftline.schemas.rules import ESTIMATED_METRICS, ESTIMATOR, Rule, RuleBook, RuleError
from fastapi.exceptions import RequestValidationError

from .models import (
    DriftSignal,
    DryRunResult,
    Firing,
    MetricSignal,
    RuleBase,
    StatisticSignal,
    Threshold,
    VerdictIs,
    VerdictSignal,
    dump,
    parse_duration,
)
from .sql import hexed, text

__all__ = ["evaluate", "firings"]

#: The id the rule gets in a dry-run (fingerprints depend on it; nothing else does).
DRY_RUN_RULE_ID = "dry-run"


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
    selector.pop("model_version", None)  # the lifecycle matches it on each model's version
    if selector:
        warnings.append(
            f"model labels {sorted(selector)} are unknown to the workers (they know model_id "
            "and model_version): the rule matches no model, in the dry-run as on the workers"
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


def _drift_rows(store: Any, signal: DriftSignal, models: list[str], start: datetime,
                end: datetime, max_rows: int) -> list[dict[str, Any]]:  # fmt: skip
    """The DriftEvents of the range, as the workers' evaluator got them."""
    rows = store.query(
        "SELECT event_id, model_id, model_version, stream_kind, stream_name, detector, "
        "toUnixTimestamp64Milli(detected_at), position, segment "
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
    # segment: the evaluator matches the rule's segment glob on it (Rule.matches_drift)
    names = ("event_id", "model_id", "model_version", "stream_kind", "stream_name", "detector",
             "detected_at", "position", "segment")  # fmt: skip
    found = [dict(zip(names, row, strict=True)) for row in rows]
    return [d for d in found if _stream_matches(signal, d["stream_name"])]


# model_metrics_minute's sums in the order of the lifecycle's metric slots (predictions,
# joined, classified, correct, regression rows, sum |error|, sum error^2).
_SUMS = ("predictions", "labeled", "classified", "correct", "scored", "error_sum",
         "squared_error_sum")  # fmt: skip


def _metric_sums(store: Any, signal: MetricSignal, models: list[str], start: datetime,
                 end: datetime, max_rows: int) -> list[tuple[str, int, list[float]]]:  # fmt: skip
    """Per model and minute from ``start - window`` (the first window's history) to ``end``."""
    window_s = parse_duration(signal.window)
    rows = store.query(
        "SELECT model_id, toUnixTimestamp(minute) * 1000 AS at, "
        + ", ".join(f"sum({c})" for c in _SUMS)
        + " FROM model_metrics_minute WHERE segment = '' "
        "AND minute >= toDateTime({first:Int64}, 'UTC') "
        "AND minute < toDateTime({last:Int64}, 'UTC') "
        "AND has(JSONExtract(unhex({models:String}), 'Array(String)'), model_id) "
        "GROUP BY model_id, at ORDER BY model_id, at LIMIT {limit:UInt64}",
        {
            "first": int(start.timestamp()) - window_s,
            "last": int(end.timestamp()),
            "models": hexed(json.dumps(models)),
            "limit": max_rows + 1,
        },  # fmt: skip
    )
    if len(rows) > max_rows:
        raise _too_many(max_rows)
    return [(model, int(at), [float(v) for v in sums]) for model, at, *sums in rows]


def _statistic_rows(store: Any, signal: StatisticSignal, models: list[str], start: datetime,
                    end: datetime, max_rows: int) -> list[dict[str, Any]]:  # fmt: skip
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
    names = ("model_id", "stream_kind", "stream_name", "detector", "time", "n_values",
             "estimate", "statistic", "p_value")  # fmt: skip
    found = [dict(zip(names, row, strict=True)) for row in rows]
    return [d for d in found if _stream_matches(signal, d["stream_name"])]


_VERDICT_COLUMNS = ("event_id", "model_id", "version", "previous_version", "verdict", "metric",
                    "test", "value", "previous_value", "n_labels", "p_value",
                    "rollback_event_id", "rollback_to")  # fmt: skip


def _verdict_rows(store: Any, models: list[str], start: datetime, end: datetime,
                  max_rows: int) -> list[dict[str, Any]]:  # fmt: skip
    """The verdicts of the range, as the workers' evaluator got them (every outcome: one that
    is not the rule's resolves the group's alert)."""
    rows = store.query(
        "SELECT " + ", ".join(_VERDICT_COLUMNS) + ", toUnixTimestamp64Milli(decided_at) "
        "FROM model_verdicts FINAL "
        "WHERE decided_at >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') "
        "AND decided_at < fromUnixTimestamp64Milli({end:Int64}, 'UTC') "
        "AND has(JSONExtract(unhex({models:String}), 'Array(String)'), model_id) "
        "ORDER BY decided_at, event_id LIMIT {limit:UInt64}",
        {"start": _ms(start), "end": _ms(end), "models": hexed(json.dumps(models)),
         "limit": max_rows + 1},
    )  # fmt: skip
    if len(rows) > max_rows:
        raise _too_many(max_rows)
    return [dict(zip((*_VERDICT_COLUMNS, "decided_at"), row, strict=True)) for row in rows]


def rulebook_of(rule: RuleBase) -> tuple[Rule, RuleBook]:
    """The rule as the workers parse it from its control-plane record, alone in a rulebook
    (enabled: a dry-run of a disabled rule asks what it would do if enabled)."""
    data = {**dump(rule), "enabled": True}
    data.pop("version", None)
    try:
        parsed = Rule.from_record(DRY_RUN_RULE_ID, 1, data)
    except RuleError as exc:  # check_rule refuses these before we get here
        raise RequestValidationError(
            [{"loc": ("body",), "msg": str(exc), "type": "value_error"}]
        ) from exc
    book = RuleBook()
    record = Record("rule", DRY_RUN_RULE_ID, 1, "", "", "dry-run", data)
    book.apply(record.key, encode_value(record))
    return parsed, book


def firings(alerts: Iterable[Mapping[str, Any]], rule: Rule, start_ms: int) -> list[Firing]:
    """The episodes that reached FIRING at or after ``start_ms``, from the lifecycle's
    AlertEvent records: when and with what value it first fired, its RESOLVED time if any, and
    the episode's first trigger ids as its last record carried them."""
    found: dict[tuple[str, int], Firing] = {}
    for alert in alerts:
        key = (alert["fingerprint"], alert["starts_at"])
        if alert["status"] == FIRING and key not in found and alert["updated_at"] >= start_ms:
            labels = alert["labels"]
            found[key] = Firing(
                # the alert's labels hold the rule's labels and the episode's group
                group={g: labels.get(g, "") for g in rule.group_by},
                model_id=alert["model_id"],
                starts_at=_at(alert["starts_at"]),
                at=_at(alert["updated_at"]),
                value=alert["value"],
                event_ids=list(alert["trigger_event_ids"]),
            )
        elif key in found:  # a repeat or the resolve: the episode's triggers so far
            found[key].event_ids = list(alert["trigger_event_ids"])
            if alert["status"] == RESOLVED:
                found[key].resolved_at = _at(alert["ends_at"])
    return sorted(found.values(), key=lambda f: (f.at, f.model_id))


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def evaluate(store: Any, rule: RuleBase, start: datetime, end: datetime, *,
             max_rows: int = 200_000) -> DryRunResult:  # fmt: skip
    warnings: list[str] = []
    signal, condition = rule.signal, rule.condition
    if isinstance(signal, MetricSignal) and signal.metric in ESTIMATED_METRICS:
        # CBPE estimates are detector_stats rows, as the workers evaluate them (schemas/rules.py)
        signal = StatisticSignal(
            kind="statistic", stream_kind="METRIC", stream_name=signal.metric,
            detector=ESTIMATOR, field="estimate",
        )  # fmt: skip
    drifts: list[dict[str, Any]] = []
    stats: list[dict[str, Any]] = []
    sums: list[tuple[str, int, list[float]]] = []
    verdicts: list[dict[str, Any]] = []
    if isinstance(signal, DriftSignal):
        models = _models(store, rule, "drift_events", "detected_at", start, end, warnings)
        drifts = _drift_rows(store, signal, models, start, end, max_rows) if models else []
        evaluated = len(drifts)
    elif isinstance(signal, MetricSignal) and isinstance(condition, Threshold):
        models = _models(store, rule, "model_metrics_minute", "minute", start, end, warnings)
        sums = _metric_sums(store, signal, models, start, end, max_rows) if models else []
        evaluated = len(sums)
    elif isinstance(signal, StatisticSignal) and isinstance(condition, Threshold):
        models = _models(store, rule, "detector_stats", "time", start, end, warnings)
        stats = _statistic_rows(store, signal, models, start, end, max_rows) if models else []
        evaluated = len(stats)
    elif isinstance(signal, VerdictSignal) and isinstance(condition, VerdictIs):
        models = _models(store, rule, "model_verdicts", "decided_at", start, end, warnings)
        verdicts = _verdict_rows(store, models, start, end, max_rows) if models else []
        evaluated = len(verdicts)
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
    parsed, book = rulebook_of(rule)
    outcome = AlertEvaluator(book).replay(
        drifts=drifts,
        stats=stats,
        sums=sums,
        verdicts=verdicts,
        until=dict.fromkeys(models, _ms(end)),
    )
    found = firings(outcome.alerts, parsed, _ms(start))
    return DryRunResult(
        would_fire=bool(found),
        firings=found,
        evaluated=evaluated,
        start=start,
        end=end,
        warnings=warnings,
    )
