"""Checks beyond one field's type: they raise ``RequestValidationError`` with the offending
field's location, so the client sees the same 422 shape as for a type error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.exceptions import RequestValidationError

from .catalog import METRIC_RANGES, STATISTIC_RANGES
from .control_plane import BaseControlPlane
from .models import (
    DriftSignal,
    MetricSignal,
    RuleBase,
    SilenceBase,
    StatisticSignal,
    Threshold,
    VerdictSignal,
    parse_duration,
)

__all__ = ["rule_errors", "check_rule", "check_silence", "check_range", "as_utc", "fail"]


def _err(loc: tuple[Any, ...], msg: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": ("body", *loc), "msg": msg, "type": kind}


def fail(errors: list[dict[str, Any]]) -> None:
    if errors:
        raise RequestValidationError(errors)


def rule_errors(rule: RuleBase, *, control_plane: BaseControlPlane | None = None) -> list[dict]:
    """Every cross-field problem of ``rule`` (empty when it is valid)."""
    errors = []
    if (rule.models is None) == (rule.model_selector is None):
        errors.append(_err(("models",), "give exactly one of 'models' or 'model_selector'"))
    if rule.models is not None and len(set(rule.models)) != len(rule.models):
        errors.append(_err(("models",), "model ids must be unique"))

    signal, condition = rule.signal, rule.condition
    if isinstance(signal, DriftSignal):
        if condition.type != "drift_detected":
            errors.append(
                _err(("condition", "type"), "a drift signal takes the 'drift_detected' condition")
            )
    elif isinstance(signal, VerdictSignal):
        if condition.type != "verdict_is":
            errors.append(
                _err(("condition", "type"), "a verdict signal takes the 'verdict_is' condition")
            )
    elif condition.type != "threshold":
        errors.append(
            _err(("condition", "type"), f"a {signal.kind} signal takes a 'threshold' condition")
        )
    if isinstance(signal, MetricSignal):
        window = parse_duration(signal.window)
        if window < 60 or window % 60:
            errors.append(
                _err(("signal", "window"), "metric windows are whole minutes, at least '1m'")
            )
    if isinstance(condition, Threshold) and isinstance(signal, MetricSignal | StatisticSignal):
        if isinstance(signal, MetricSignal):
            what, (low, high) = signal.metric, METRIC_RANGES[signal.metric]
        else:
            what, (low, high) = signal.field, STATISTIC_RANGES[signal.field]
        msg = _impossible(what, condition.op, condition.value, low, high)
        if msg:
            errors.append(_err(("condition", "value"), msg))

    if len(set(rule.group_by)) != len(rule.group_by):
        errors.append(_err(("group_by",), "group_by keys must be unique"))
    if parse_duration(rule.repeat_interval) < 60:
        errors.append(_err(("repeat_interval",), "repeat_interval must be at least '1m'"))
    if control_plane is not None:
        for i, sub in enumerate(rule.notify):
            if control_plane.get("subscription", sub) is None:
                errors.append(_err(("notify", i), f"no subscription {sub!r}"))
    return errors


def _impossible(what: str, op: str, value: float, low: float, high: float) -> str | None:
    if not low <= value <= high:
        return f"{what} lies in [{low}, {high}]; {value} is out of range"
    if (op == ">" and value >= high) or (op == "<" and value <= low):
        return f"{what} {op} {value} can never hold ({what} lies in [{low}, {high}])"
    return None


def check_rule(rule: RuleBase, *, control_plane: BaseControlPlane | None = None) -> None:
    fail(rule_errors(rule, control_plane=control_plane))


def as_utc(moment: datetime) -> datetime:
    """Naive datetimes are UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def check_silence(silence: SilenceBase, *, now: datetime) -> tuple[datetime, datetime]:
    """(starts_at, ends_at) in UTC, or a 422."""
    starts = as_utc(silence.starts_at) if silence.starts_at else now
    ends = as_utc(silence.ends_at)
    errors = []
    if ends <= starts:
        errors.append(_err(("ends_at",), "ends_at must be after starts_at"))
    elif ends <= now:
        errors.append(_err(("ends_at",), "ends_at is in the past"))
    elif ends - starts > timedelta(days=366):
        errors.append(_err(("ends_at",), "a silence lasts at most 366 days"))
    fail(errors)
    return starts, ends


def check_range(start: datetime, end: datetime, *, max_days: int) -> tuple[datetime, datetime]:
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        fail([_err(("end",), "end must be after start")])
    if end - start > timedelta(days=max_days):
        fail([_err(("end",), f"a dry-run covers at most {max_days} days")])
    return start, end
