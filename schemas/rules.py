"""Alert rules as the alert lifecycle uses them, parsed from control-plane records, and the
parsed view of the control plane (:class:`RuleBook`): one definition for the workers'
evaluator and the API's dry-run (``driftline.schemas.alert_lifecycle``).

>>> book = RuleBook()
>>> rule = {"kind": "rule", "id": "r1", "version": 1, "created_at": "2026-01-01T00:00:00Z",
...         "updated_at": "2026-01-01T00:00:00Z", "updated_by": "me",
...         "data": {"name": "drift", "models": ["churn"], "for": "5m",
...                  "signal": {"kind": "drift", "stream_kind": "FEATURE"},
...                  "condition": {"type": "drift_detected"}}}
>>> book.apply(b"rule:r1", json.dumps(rule).encode())
True
>>> [(r.id, r.for_ms, r.repeat_ms) for r in book.snapshot().rules]
[('r1', 300000, 14400000)]
>>> book.apply(b"rule:r1", None), book.snapshot().rules
(True, ())
"""

from __future__ import annotations

import json  # noqa: F401 - the docstring example uses it
import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Final

from driftline.schemas import monitoring
from driftline.schemas.control_plane import VersionedView
from driftline.schemas.monitoring import MonitoringError, MonitoringSettings
from driftline.schemas.silences import Matcher, Silence, SilenceError, parse_time_ms

__all__ = [
    "ESTIMATED_METRICS",
    "ESTIMATOR",
    "Ack",
    "Matcher",
    "RetrainAction",
    "Rule",
    "RuleBook",
    "RuleError",
    "Silence",
    "VERDICT_OUTCOMES",
    "Snapshot",
    "drift_segment",
    "parse_duration_ms",
    "parse_time_ms",
]

log = logging.getLogger(__name__)

# Performance estimated before labels arrive (CBPE, streams/estimates.py). A rule names one as
# a metric (``{"kind": "metric", "metric": "estimated_accuracy"}``); the workers write each
# window's estimate as a ``detector_stats`` row (stream kind METRIC, the metric's name as stream,
# detector ESTIMATOR, value in ``estimate``), so underneath the rule is a statistic rule on
# those rows, evaluated at each window's end, in the workers and the dry-run alike.
ESTIMATED_METRICS: Final = (
    "estimated_accuracy",
    "estimated_precision",
    "estimated_recall",
    "estimated_f1",
)
ESTIMATOR: Final = "CBPE"

# Post-deploy verdicts (ModelVerdict, streams/versions.py): a rule watches them with
# ``{"kind": "verdict"}`` and the condition ``{"type": "verdict_is", "outcome": "WORSE"}``;
# the evaluator takes each ``model_verdicts`` row as an event, like a DriftEvent
# (docs/alerting.md, "Verdict rules"). The ModelVerdict.avsc VerdictKind symbols.
VERDICT_OUTCOMES: Final = ("BETTER", "WORSE", "INCONCLUSIVE")

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_UNITS_MS = (86_400_000, 3_600_000, 60_000, 1000)


class RuleError(ValueError):
    """A control-plane entity the evaluator cannot use (logged and skipped, never fatal)."""


def parse_duration_ms(text: str) -> int:
    """Milliseconds in an API duration (``"90s"``, ``"5m"``, ``"1h30m"``, ``"7d"``).

    >>> parse_duration_ms("1h30m"), parse_duration_ms("0s")
    (5400000, 0)
    """
    match = _DURATION.match(text or "")
    if not text or not match:
        raise RuleError(f"not a duration: {text!r}")
    return sum(int(g) * unit for g, unit in zip(match.groups(), _UNITS_MS, strict=True) if g)


@dataclass(frozen=True)
class RetrainAction:
    priority: str = "NORMAL"
    lookback_ms: int = 3_600_000


@dataclass(frozen=True)
class Rule:
    """An alert rule as the evaluator uses it (durations in ms, globs kept as text)."""

    id: str
    version: int
    name: str
    signal_kind: str  # drift | metric | statistic | verdict
    condition: str  # drift_detected | threshold | verdict_is
    enabled: bool = True
    models: tuple[str, ...] | None = None
    model_selector: tuple[tuple[str, str], ...] | None = None
    stream_kind: str | None = None
    stream_name: str = "*"
    detector: str = "*"
    # drift signals: an fnmatch glob on the segment of a window's drift ("" = all traffic,
    # else "key=value"; :func:`drift_segment`); "*" takes every window, segment or not
    segment: str = "*"
    metric: str | None = None
    stat_field: str | None = None  # statistic signals: estimate | statistic | p_value | n_values
    outcome: str | None = None  # verdict signals: the VERDICT_OUTCOMES symbol that holds
    window_ms: int = 300_000
    op: str | None = None
    threshold: float | None = None
    min_samples: int = 0
    for_ms: int = 0
    severity: str = "warning"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    cooldown_ms: int = 0
    repeat_ms: int = 4 * 3_600_000
    group_by: tuple[str, ...] = ("model_id",)
    notify: tuple[str, ...] = ()
    actions: tuple[RetrainAction, ...] = ()

    @classmethod
    def from_record(cls, ident: str, version: int, data: Mapping[str, Any]) -> Rule:
        """Parse a rule record's ``data`` (the API's ``RuleCreate`` fields, ``for`` by alias)."""
        try:
            signal = dict(data["signal"])
            condition = dict(data["condition"])
            kind, ctype = str(signal["kind"]), str(condition["type"])
            if kind not in ("drift", "metric", "statistic", "verdict"):
                raise RuleError(f"unknown signal kind {kind!r}")
            if kind == "metric" and signal.get("metric") in ESTIMATED_METRICS:
                kind = "statistic"
                signal.update(stream_kind="METRIC", stream_name=signal["metric"],
                              detector=ESTIMATOR, field="estimate")  # fmt: skip
            if ctype not in ("drift_detected", "threshold", "verdict_is"):
                raise RuleError(f"unknown condition type {ctype!r}")
            if (kind == "verdict") != (ctype == "verdict_is"):
                raise RuleError(f"a {kind} signal does not take a {ctype!r} condition")
            outcome = str(condition.get("outcome", "WORSE")) if ctype == "verdict_is" else None
            if outcome is not None and outcome not in VERDICT_OUTCOMES:
                raise RuleError(f"verdict outcome {outcome!r}")
            if ctype == "threshold" and condition.get("op") not in ("<", "<=", ">", ">="):
                raise RuleError(f"threshold op {condition.get('op')!r}")
            models = data.get("models")
            selector = data.get("model_selector")
            actions = tuple(
                RetrainAction(
                    str(a.get("priority", "NORMAL")),
                    parse_duration_ms(str(a.get("lookback", "1h"))),
                )
                for a in data.get("actions") or ()
                if a.get("type") == "retrain"
            )
            return cls(
                id=ident,
                version=int(version),
                name=str(data["name"]),
                signal_kind=kind,
                condition=ctype,
                enabled=bool(data.get("enabled", True)),
                models=tuple(str(m) for m in models) if models else None,
                model_selector=tuple(sorted((str(k), str(v)) for k, v in selector.items()))
                if selector
                else None,
                stream_kind=signal.get("stream_kind"),
                stream_name=str(signal.get("stream_name", "*")),
                detector=str(signal.get("detector", "*")),
                segment=str(signal.get("segment", "*")),
                metric=signal.get("metric"),
                stat_field=signal.get("field", "statistic") if kind == "statistic" else None,
                outcome=outcome,
                window_ms=parse_duration_ms(str(signal.get("window", "5m"))),
                op=condition.get("op"),
                threshold=float(condition["value"]) if ctype == "threshold" else None,
                min_samples=int(data.get("min_samples", 0)),
                for_ms=parse_duration_ms(str(data.get("for", data.get("for_", "0s")))),
                severity=str(data.get("severity", "warning")),
                labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
                annotations={str(k): str(v) for k, v in (data.get("annotations") or {}).items()},
                cooldown_ms=parse_duration_ms(str(data.get("cooldown", "0s"))),
                repeat_ms=parse_duration_ms(str(data.get("repeat_interval", "4h"))),
                group_by=tuple(str(g) for g in data.get("group_by", ["model_id"])),
                notify=tuple(str(n) for n in data.get("notify") or ()),
                actions=actions,
            )
        except RuleError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RuleError(f"rule {ident}: {exc!r}") from exc

    def applies_to(self, model_id: str, model_labels: Mapping[str, str] | None = None) -> bool:
        """Does the rule watch this model? ``models`` by exact id; ``model_selector`` globs
        on the model's labels (``model_id`` and, when known, ``model_version``), all must
        match, and a selector on a label the worker does not know never matches."""
        if not self.enabled:
            return False
        if self.models is not None:
            return model_id in self.models
        if self.model_selector is not None:
            labels = {"model_id": model_id, **(model_labels or {})}
            return all(
                name in labels and fnmatchcase(labels[name], pattern)
                for name, pattern in self.model_selector
            )
        return False  # the API requires one of the two; a rule with neither watches nothing

    def matches_drift(self, drift: Mapping[str, Any], kind: str = "drift") -> bool:
        """Is this DriftEvent (or, with ``kind="statistic"``, this ``detector_stats`` row) one
        of the rule's signal?"""
        return (
            self.signal_kind == kind
            and drift.get("stream_kind") == self.stream_kind
            and fnmatchcase(str(drift.get("stream_name", "")), self.stream_name)
            and self.detector in ("*", drift.get("detector"))
            and (self.segment == "*" or fnmatchcase(drift_segment(drift), self.segment))
        )

    def matches_verdict(self, verdict: Mapping[str, Any]) -> bool:
        """Does this ModelVerdict (or ``model_verdicts`` row) hold the rule's condition?"""
        return self.signal_kind == "verdict" and verdict.get("verdict") == self.outcome


def drift_segment(drift: Mapping[str, Any]) -> str:
    """The segment a DriftEvent (or ``drift_events`` row) was found in: ``""`` for all traffic,
    else ``"key=value"``. DriftEvents carry it in ``evidence["segment"]`` (the Avro record has
    no field for it, so every reader decodes it); rows read back from ClickHouse may carry it
    as a ``segment`` column.

    >>> drift_segment({"evidence": {"segment": "region=eu"}}), drift_segment({"evidence": {}})
    ('region=eu', '')
    """
    segment = drift.get("segment")
    if segment is None:
        segment = (drift.get("evidence") or {}).get("segment", "")
    return str(segment)


@dataclass(frozen=True)
class Ack:
    fingerprint: str
    version: int
    acked_at_ms: int
    acked_by: str = ""
    comment: str = ""

    @classmethod
    def from_record(cls, ident: str, version: int, data: Mapping[str, Any]) -> Ack:
        try:
            return cls(
                str(data.get("fingerprint", ident)),
                int(version),
                parse_time_ms(str(data["acked_at"])),
                str(data.get("acked_by", "")),
                str(data.get("comment", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RuleError(f"ack {ident}: {exc!r}") from exc


@dataclass(frozen=True)
class Snapshot:
    """A consistent view for one evaluation (rules sorted by id, so evaluation order and
    hence output order is deterministic)."""

    rules: tuple[Rule, ...] = ()
    silences: tuple[Silence, ...] = ()
    acks: Mapping[str, Ack] = field(default_factory=dict)
    generation: int = 0

    def rule(self, rule_id: str) -> Rule | None:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        return None


_PARSERS: Final = {
    "rule": Rule.from_record,
    "silence": Silence.from_record,
    "ack": Ack.from_record,
    monitoring.KIND: MonitoringSettings.from_record,
}


class RuleBook:
    """Thread-safe in-memory view of the control plane, applied record by record.

    Subscriptions and API keys are versioned like everything else but not parsed: the
    evaluator only passes a rule's ``notify`` ids through. A model's monitoring settings are
    parsed but looked up by model (:meth:`monitoring`), not part of snapshots. An entity whose
    ``data`` cannot be parsed keeps its version (so ordering stays right) but is left out of
    snapshots and lookups.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._view = VersionedView()
        self._parsed: dict[str, Any] = {}
        self._generation = 0
        self._snapshot: Snapshot | None = Snapshot()

    def apply(self, key: bytes | str, value: bytes | None) -> bool:
        """Apply one record of the topic; True when the view changed."""
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if not self._view.apply(text, value):
            return False
        record = self._view.by_key(text)
        parsed = None
        parser = _PARSERS.get(record.kind) if record is not None else None
        if record is not None and parser is not None:
            try:
                parsed = parser(record.id, record.version, record.data)
            except (RuleError, SilenceError, MonitoringError) as exc:
                log.warning("control-plane %s v%d is not usable by the workers: %s", text,
                            record.version, exc)  # fmt: skip
        with self._lock:
            if parsed is None:
                self._parsed.pop(text, None)
            else:
                self._parsed[text] = parsed
            self._changed()
        return True

    def _changed(self) -> None:
        self._generation += 1
        self._snapshot = None

    def snapshot(self) -> Snapshot:
        """The current rules, silences and acks (cached until the next change)."""
        with self._lock:
            if self._snapshot is None:
                rules, silences, acks = [], [], {}
                for item in self._parsed.values():
                    if isinstance(item, Rule):
                        rules.append(item)
                    elif isinstance(item, Silence):
                        silences.append(item)
                    elif isinstance(item, Ack):
                        acks[item.fingerprint] = item
                self._snapshot = Snapshot(
                    tuple(sorted(rules, key=lambda r: r.id)),
                    tuple(sorted(silences, key=lambda s: s.id)),
                    acks,
                    self._generation,
                )
            return self._snapshot

    @property
    def generation(self) -> int:
        """Grows by one with every change: cheap to compare for 'did anything change?'."""
        with self._lock:
            return self._generation

    def monitoring(self, model_id: str) -> MonitoringSettings | None:
        """The model's own monitoring settings (None: it has none, or an unusable record)."""
        with self._lock:
            return self._parsed.get(f"{monitoring.KIND}:{model_id}")

    def version(self, kind: str, ident: str) -> int | None:
        record = self._view.get(kind, ident)
        return record.version if record is not None else None

    def __len__(self) -> int:
        return len(self._view)
