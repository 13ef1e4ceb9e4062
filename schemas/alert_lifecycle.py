"""The alert lifecycle: drift events, detector statistics and labelled rows in, alert state
changes (``AlertEvent`` records) and retraining requests out. Pure code over its inputs, one
definition for the workers' evaluator (``driftline.streams.alerting``, per Kafka batch) and the
API's dry-run (``driftline.api.dryrun``, over ClickHouse history), so a dry-run says what the
workers did on the same events.

Per batch and per model the evaluator replays the batch on the model's **event-time clock**:
matching drift events in time order, with every deadline that falls between them (``for``
elapsing, a repeat notification, a quiet period ending, a metric rule's evaluation tick)
handled at its own time. Every record is stamped with the event time its transition happened
at, not the time a batch happened to end, so any split of the input into batches, a replay, or
a restart gives the same records with the same ids. The per-model :class:`AlertState` is one
value in a changelog-backed table, written once per batch like ``ModelState``.

Lifecycle (docs/alerting.md has the full story):

* drift rules: a matching DriftEvent starts an episode (PENDING, or FIRING at once with
  ``for: 0s``); it fires once ``for`` has elapsed while the condition holds, and the condition
  holds until no matching drift has occurred for ``repeat_interval`` (the quiet period; ``0s``
  means "until the next evaluation with no drift"), at which point it RESOLVES. While firing,
  a new FIRING record (new event id, same fingerprint) repeats every ``repeat_interval``.
* metric rules (``condition.type: threshold``): evaluated at ticks (multiples of
  ``window / 20``, at least 1 s) over the trailing window; PENDING -> FIRING after ``for``,
  RESOLVED at the first tick the condition stops holding.
* statistic rules (``condition.type: threshold`` on a ``detector_stats`` column): evaluated
  at the rows' times like metric rules at ticks.
* verdict rules (``condition.type: verdict_is``): a post-deploy verdict with the rule's outcome
  is an event like a matching drift (same ``for``, repeat and quiet-period lifecycle, the
  verdict's id as trigger); a later verdict of the same group with another outcome resolves
  the alert at once (the model's latest verdict no longer says it).
* after RESOLVED, a new episode of the same fingerprint waits for ``cooldown``.

>>> from driftline.schemas.rules import RuleBook
>>> book = RuleBook()
>>> _ = book.apply(b"rule:r1", json.dumps({"kind": "rule", "id": "r1", "version": 1,
...     "created_at": "", "updated_at": "", "updated_by": "", "data": {"name": "drift",
...     "models": ["m"], "signal": {"kind": "drift", "stream_kind": "FEATURE"},
...     "condition": {"type": "drift_detected"}}}).encode())
>>> drift = {"event_id": "d1", "model_id": "m", "model_version": "1", "stream_kind": "FEATURE",
...          "stream_name": "age", "detector": "ADWIN", "detected_at": 1000, "position": 99}
>>> out = AlertEvaluator(book).evaluate_drifts([drift], MemoryKV(), {"m": 0})
>>> [(a["status"], a["updated_at"], a["trigger_event_ids"]) for a in out.alerts]
[('FIRING', 1000, ['d1'])]
"""

from __future__ import annotations

import json
import logging
import math
import operator
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import numpy as np
from driftline.schemas.ids import event_id
from driftline.schemas.rules import RetrainAction, Rule, RuleBook, Snapshot, drift_segment

__all__ = [
    "FIRING",
    "PENDING",
    "RESOLVED",
    "STATUSES",
    "KV",
    "MemoryKV",
    "AlertEvaluator",
    "AlertOutcome",
    "AlertState",
    "Episode",
    "alert_row",
    "deliverable",
    "fingerprint",
    "metric_value",
    "model_partitions",
]

log = logging.getLogger(__name__)

PENDING: Final = "PENDING"
FIRING: Final = "FIRING"
RESOLVED: Final = "RESOLVED"
#: Every status an AlertEvent can carry, in lifecycle order.
STATUSES: Final = (PENDING, FIRING, RESOLVED)
DRIFT: Final = "drift"
METRIC: Final = "metric"
STATISTIC: Final = "statistic"
VERDICT: Final = "verdict"
#: Label and value that make a firing alert inhibit the drift alerts of its model.
INHIBIT_LABEL: Final = "alertclass"
INHIBIT_VALUE: Final = "data_quality"
#: Trigger ids kept per episode (the first ones: what raised the alert).
MAX_TRIGGERS: Final = 10
#: Metric ticks handled per model and batch before skipping ahead (a model silent for weeks).
MAX_TICKS: Final = 5000
_MAGIC: Final = b"DLA1"
_OPS: Final = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
# metric bucket slots
_N_PRED, _N_JOINED, _N_CLASS, _N_CORRECT, _N_REG, _SUM_ABS, _SUM_SQ = range(7)


class KV(Protocol):
    """What the evaluator needs of its table (``driftline.streams.kv.PartitionedKV``)."""

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, partition: int, key: bytes, value: bytes) -> None: ...


class MemoryKV:
    """A plain dict as the evaluator's table, remembering which partition each key was last
    written for (tests, tools, the API's dry-run)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.partition_of: dict[bytes, int] = {}
        self.writes = 0

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.data[key] = value
        self.partition_of[key] = partition
        self.writes += 1

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self.data.items()))


def fingerprint(rule_id: str, model_id: str, group: Mapping[str, str]) -> str:
    """Identity of an alert across its state changes: the rule and its group's label values.

    ``model_id`` is always part of it, even when ``group_by`` leaves it out: a model's alerts
    are evaluated on the model's partition, so an alert cannot span models.

    >>> fingerprint("r1", "churn", {"model_id": "churn", "stream_name": "age"})
    '7b961a6584bf08fac92a03185e511a8d'
    """
    parts = [f"{name}={value}" for name, value in sorted(group.items()) if name != "model_id"]
    return event_id("alert-fingerprint", rule_id, model_id, *parts)


def alert_event_id(fp: str, status: str, starts_at: int, updated_at: int) -> str:
    return event_id("alert", fp, status, str(starts_at), str(updated_at))


@dataclass
class Episode:
    """One fingerprint's alert: where it is in its lifecycle and what it last said."""

    fingerprint: str
    rule_id: str
    signal: str  # drift | metric
    status: str
    starts_at: int
    last_signal: int  # last matching drift, or last tick the threshold held
    group: dict[str, str] = field(default_factory=dict)
    fired_at: int | None = None
    last_notified: int | None = None
    ended_at: int | None = None
    triggers: list[str] = field(default_factory=list)
    count: int = 0
    value: float | None = None
    # what the last record said, so the alert can be resolved after its rule is gone
    rule_name: str = ""
    rule_version: int = 0
    severity: str = "warning"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    notify: list[str] = field(default_factory=list)
    # drift rules: the latest matching DriftEvent's facts, for the alert's annotations
    drift: dict[str, str] = field(default_factory=dict)
    first_signal: int | None = None  # drift rules: when the episode's first drift happened
    # drift rules: the first drift's stream and its detector's means before and after the
    # change; a later drift of that stream back to the "before" level clears the condition
    baseline_stream: str = ""
    baseline: float | None = None
    shifted: float | None = None
    # verdict rules: the latest matching verdict's facts, for the alert's annotations
    verdict: dict[str, str] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status in (PENDING, FIRING)


@dataclass
class AlertState:
    """Everything the evaluator remembers about one model between batches.

    >>> state = AlertState("m", clock_ms=5)
    >>> AlertState.from_bytes(state.to_bytes()) == state
    True
    """

    model_id: str
    clock_ms: int = 0
    # the latest time a record was emitted at: events before it are late (handled at it)
    emitted_ms: int = 0
    model_version: str = ""
    alerts: dict[str, Episode] = field(default_factory=dict)
    # rule id -> event time of the last retraining request it made for this model
    retrained: dict[str, int] = field(default_factory=dict)
    # metric tick width (ms) -> bucket start (ms) -> sums (see _N_PRED ...)
    buckets: dict[int, dict[int, list[float]]] = field(default_factory=dict)
    # metric tick width (ms) -> last tick evaluated (ms)
    ticks: dict[int, int] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        body = {
            "model_id": self.model_id,
            "clock_ms": self.clock_ms,
            "emitted_ms": self.emitted_ms,
            "model_version": self.model_version,
            "alerts": [asdict(a) for a in self.alerts.values()],
            "retrained": self.retrained,
            "buckets": {str(w): {str(s): v for s, v in b.items()} for w, b in self.buckets.items()},
            "ticks": {str(w): t for w, t in self.ticks.items()},
        }
        return _MAGIC + json.dumps(body, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> AlertState:
        if not data.startswith(_MAGIC):
            raise ValueError("not a serialised AlertState")
        body = json.loads(data[len(_MAGIC) :])
        alerts = [Episode(**a) for a in body["alerts"]]
        return cls(
            model_id=body["model_id"],
            clock_ms=int(body["clock_ms"]),
            # states written before emitted_ms existed: the clock, the old (stricter) bound
            emitted_ms=int(body.get("emitted_ms", body["clock_ms"])),
            model_version=body["model_version"],
            alerts={a.fingerprint: a for a in alerts},
            retrained={k: int(v) for k, v in body["retrained"].items()},
            buckets={
                int(w): {int(s): list(v) for s, v in b.items()} for w, b in body["buckets"].items()
            },
            ticks={int(w): int(t) for w, t in body["ticks"].items()},
        )


@dataclass
class AlertOutcome:
    """What one batch's evaluation produced, for the worker to apply.

    ``alerts``: AlertEvent records for ``driftline.alerts.v1`` (key = model_id);
    ``retraining``: RetrainingRequested records for ``driftline.retraining.v1``;
    ``rows``: ClickHouse rows by table (``alerts``, ``retraining_requests``).
    """

    alerts: list[dict[str, Any]] = field(default_factory=list)
    retraining: list[dict[str, Any]] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    counters: Counter = field(default_factory=Counter)


def alert_row(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The ``alerts`` table row of an AlertEvent record (the API reads ``state`` in lower case
    and the rule name as ``alertname``)."""
    return {
        "fingerprint": alert["fingerprint"],
        "rule_id": alert["rule_id"],
        "rule_version": alert["rule_version"],
        "alertname": alert["rule_name"],
        "model_id": alert["model_id"],
        "severity": alert["severity"],
        "state": alert["status"].lower(),
        "labels": alert["labels"],
        "annotations": alert["annotations"],
        "value": alert["value"],
        "starts_at": alert["starts_at"],
        "ends_at": alert["ends_at"],
        "updated_at": alert["updated_at"],
        "trigger_event_ids": alert["trigger_event_ids"],
        "event_id": alert["event_id"],
        "silenced": int(alert["silenced"]),
        "silence_ids": alert["silence_ids"],
        "acknowledged": int(alert["acknowledged"]),
        "notify": alert["notify"],
        "inhibited_by": alert["inhibited_by"],
    }


def deliverable(alert: Mapping[str, Any]) -> bool:
    """Should notifiers deliver this record? Not when silenced or inhibited, and not when it
    names no subscription (PENDING, or a RESOLVED of an alert that never fired)."""
    return bool(alert["notify"]) and not alert["silenced"] and alert["inhibited_by"] is None


def model_partitions(messages: Iterable[Any]) -> dict[str, int]:
    """model_id -> partition from a batch's source messages (every input topic is keyed by
    model_id and co-partitioned), for :meth:`AlertEvaluator.evaluate`."""
    out: dict[str, int] = {}
    for message in messages:
        if message.key:
            out[message.key.decode("utf-8", "replace")] = message.partition
    return out


def _tick_width(window_ms: int) -> int:
    return max(1000, (window_ms // 20) // 1000 * 1000)


@dataclass
class _ModelBatch:
    """One model's part of a batch (labelled activity as columns)."""

    drifts: list[dict[str, Any]] = field(default_factory=list)
    prediction_times: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    # per joined pair: outcome time, correct (-1 = none), error (NaN = none), squared error
    joined_time: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    joined_correct: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8))
    joined_error: np.ndarray = field(default_factory=lambda: np.empty(0))
    joined_squared: np.ndarray = field(default_factory=lambda: np.empty(0))
    stats: list[dict[str, Any]] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # model_verdicts rows
    # pre-aggregated metric sums (bucket time ms, the 7 slots of _N_PRED ...): stored history
    sums: list[tuple[int, list[float]]] = field(default_factory=list)
    clock: int = 0
    first: int | None = None
    model_version: str | None = None

    def saw(self, time_ms: int) -> None:
        self.clock = max(self.clock, time_ms)
        self.first = time_ms if self.first is None else min(self.first, time_ms)

    def saw_all(self, times: np.ndarray) -> None:
        if len(times):
            self.saw(int(times.max()))
            self.saw(int(times.min()))


class AlertEvaluator:
    """Evaluates the rules of a :class:`RuleBook` against each batch's results.

    ``retrain_cooldown_ms``: minimum event time between two retraining requests of one rule
    for one model (like ``ProcessorConfig.retraining_cooldown_ms``).
    """

    def __init__(self, rulebook: RuleBook, *, retrain_cooldown_ms: int = 3_600_000) -> None:
        self.rulebook = rulebook
        self.retrain_cooldown_ms = retrain_cooldown_ms

    # -- entry points -------------------------------------------------------------------------

    def evaluate(
        self, result: Any, alert_states: KV, partitions: Mapping[str, int] | None = None
    ) -> AlertOutcome:
        """Evaluate one ``BatchResult`` (its ``drift_events`` and ``rows``: predictions,
        outcomes, joined_labels); reads and writes one :class:`AlertState` per model in
        ``alert_states`` (key = model_id, written to the model's partition).

        ``partitions``: model_id -> source partition (:func:`model_partitions` of the batch's
        messages); ``None`` takes ``result.partitions`` if the processor provides it.
        """
        if partitions is None:
            partitions = getattr(result, "partitions", None) or {}
        batches: dict[str, _ModelBatch] = defaultdict(_ModelBatch)
        for model_id, activity in result.activity.items():
            b = batches[model_id]
            b.saw_all(activity.prediction_times)
            b.saw_all(activity.outcome_times)
            b.prediction_times = activity.prediction_times
            b.joined_time = activity.joined_time
            b.joined_correct = activity.joined_correct
            b.joined_error = activity.joined_error
            b.joined_squared = activity.joined_squared
            if len(activity.prediction_times):
                b.model_version = activity.model_version or None
        for d in result.drift_events:
            b = batches[d["model_id"]]
            b.saw(int(d["detected_at"]))
            b.drifts.append(d)
        for row in result.rows.get("detector_stats", ()):
            batches[row["model_id"]].stats.append(row)
        for row in result.rows.get("model_verdicts", ()):
            b = batches[row["model_id"]]
            b.saw(int(row["decided_at"]))
            b.verdicts.append(row)
        return self._run(batches, alert_states, partitions)

    def evaluate_drifts(
        self, drifts: Iterable[Mapping[str, Any]], alert_states: KV, partitions: Mapping[str, int]
    ) -> AlertOutcome:
        """Evaluate drift events alone (tools, tests): the clock is their ``detected_at``."""
        batches: dict[str, _ModelBatch] = defaultdict(_ModelBatch)
        for d in drifts:
            b = batches[d["model_id"]]
            b.saw(int(d["detected_at"]))
            b.drifts.append(dict(d))
        return self._run(batches, alert_states, partitions)

    def advance(
        self, clocks: Mapping[str, int], alert_states: KV, partitions: Mapping[str, int]
    ) -> AlertOutcome:
        """Move models' alert clocks to the given event times with no new events: every
        deadline due by then (``for`` elapsing, a repeat, a quiet period ending, a metric tick
        over an empty window) happens at its own time. A clock never moves back, so advancing
        to a time already passed does nothing. Used for idle models by the worker and for the
        end of the range by the dry-run."""
        batches: dict[str, _ModelBatch] = defaultdict(_ModelBatch)
        for model_id, at in clocks.items():
            if alert_states.get(model_id.encode()) is not None:  # nothing to advance otherwise
                batches[model_id].saw(int(at))
        return self._run(batches, alert_states, partitions)

    def advance_idle(
        self, models: Iterable[str], step_ms: int, alert_states: KV, partitions: Mapping[str, int]
    ) -> AlertOutcome:
        """The idle watermark: move each model's alert clock ``step_ms`` of event time past
        where it is (models without alert state are left alone). The worker calls it once per
        idle timeout that passes without input on a caught-up partition, so a model that stops
        sending still sees ``for`` elapse, repeats and resolves. The step is a fixed quantum
        from the checkpointed clock, so a replay after a crash takes the same steps and emits
        the same records (docs/alerting.md, "The idle watermark")."""
        clocks = {}
        for model_id in models:
            blob = alert_states.get(model_id.encode())
            if blob is not None:
                clocks[model_id] = AlertState.from_bytes(blob).clock_ms + step_ms
        return self.advance(clocks, alert_states, partitions)

    def replay(
        self,
        *,
        drifts: Iterable[Mapping[str, Any]] = (),
        stats: Iterable[Mapping[str, Any]] = (),
        sums: Iterable[tuple[str, int, list[float]]] = (),
        verdicts: Iterable[Mapping[str, Any]] = (),
        until: Mapping[str, int] | None = None,
        alert_states: KV | None = None,
    ) -> AlertOutcome:
        """Evaluate stored history in one pass, as the workers would have batch by batch
        (decisions depend on event times only, never on batch boundaries): DriftEvent dicts,
        ``detector_stats`` rows, and metric sums as ``(model_id, time_ms, [predictions,
        joined, classified, correct, regression rows, sum |error|, sum error^2])``,
        ``model_verdicts`` rows (``decided_at`` in ms); then each model's clock advances to
        ``until[model]``. The API's dry-run."""
        alert_states = alert_states if alert_states is not None else MemoryKV()
        batches: dict[str, _ModelBatch] = defaultdict(_ModelBatch)
        for d in drifts:
            b = batches[str(d["model_id"])]
            b.saw(int(d["detected_at"]))
            b.drifts.append(dict(d))
        for row in stats:
            b = batches[str(row["model_id"])]
            b.saw(int(row["time"]))
            b.stats.append(dict(row))
        for model_id, at, values in sums:
            b = batches[model_id]
            b.saw(int(at))
            b.sums.append((int(at), [float(v) for v in values]))
        for row in verdicts:
            b = batches[str(row["model_id"])]
            b.saw(int(row["decided_at"]))
            b.verdicts.append(dict(row))
        partitions = dict.fromkeys(batches, 0)
        outcome = self._run(batches, alert_states, partitions)
        if until:
            later = self.advance(until, alert_states, dict.fromkeys(until, 0))
            outcome.alerts += later.alerts
            for table, rows in later.rows.items():
                outcome.rows[table] += rows
            outcome.retraining += later.retraining
            outcome.counters.update(later.counters)
        return outcome

    def _run(
        self, batches: dict[str, _ModelBatch], alert_states: KV, partitions: Mapping[str, int]
    ) -> AlertOutcome:
        snapshot = self.rulebook.snapshot()
        outcome = AlertOutcome()
        for model_id in sorted(batches):
            key = model_id.encode()
            blob = alert_states.get(key)
            state = AlertState.from_bytes(blob) if blob is not None else AlertState(model_id)
            _ModelRun(self, snapshot, state, outcome).run(batches[model_id])
            if blob is None and not (state.alerts or state.retrained or state.ticks):
                continue  # no rule watches this model: no changelog record per batch for it
            partition = partitions.get(model_id)
            if partition is None:
                # A message keyed by something else than its model_id: writing the state to a
                # guessed partition would split it on the next rebalance. Keep the old state:
                # the next batch re-derives the same records (same ids, dropped downstream).
                log.warning("no source partition for model %r; alert state not saved", model_id)
                outcome.counters["alert_state_unsaved"] += 1
                continue
            alert_states.put(partition, key, state.to_bytes())
        return outcome


class _ModelRun:
    """One model's evaluation in one batch: a small discrete-event simulation."""

    def __init__(
        self,
        evaluator: AlertEvaluator,
        snapshot: Snapshot,
        state: AlertState,
        outcome: AlertOutcome,
    ) -> None:
        self.evaluator = evaluator
        self.snapshot = snapshot
        self.state = state
        self.outcome = outcome
        self.model_id = state.model_id
        self.rules: dict[str, Rule] = {}
        self._horizon = state.clock_ms
        self._metrics: list[Rule] = []
        self._widths: set[int] = set()

    # -- the batch ---------------------------------------------------------------------------

    def run(self, batch: _ModelBatch) -> None:
        state = self.state
        if batch.model_version:
            state.model_version = batch.model_version
        elif not state.model_version and batch.drifts:
            state.model_version = str(batch.drifts[-1].get("model_version", ""))
        labels = {"model_version": state.model_version} if state.model_version else {}
        self.rules = {r.id: r for r in self.snapshot.rules if r.applies_to(self.model_id, labels)}
        self._metrics = [
            r
            for r in self.rules.values()
            if r.signal_kind == METRIC and r.condition == "threshold" and r.metric
        ]
        self._widths = {_tick_width(r.window_ms) for r in self._metrics}
        start = state.clock_ms or (batch.first if batch.first is not None else batch.clock)
        self._add_metric_rows(batch, start)
        drift_rules = [
            r
            for r in self.rules.values()
            if r.signal_kind == DRIFT and r.condition == "drift_detected"
        ]
        stat_rules = [
            r
            for r in self.rules.values()
            if r.signal_kind == STATISTIC and r.condition == "threshold" and r.stat_field
        ]
        verdict_rules = [
            r for r in self.rules.values() if r.signal_kind == VERDICT and r.outcome is not None
        ]
        events: list[tuple[int, int, str, Any]] = []
        if verdict_rules:
            events += [(int(v["decided_at"]), 2, v["event_id"], v) for v in batch.verdicts]
        if drift_rules:
            events += [(int(d["detected_at"]), 0, d["event_id"], d) for d in batch.drifts]
        if stat_rules:
            by_time: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for row in batch.stats:
                by_time[int(row["time"])].append(row)
            events += [(t, 1, "", rows) for t, rows in by_time.items()]
        for time_ms, kind, _, item in sorted(events, key=lambda e: e[:3]):
            # An event is handled at its own time unless a record was already emitted after
            # it (then it is late and handled at that record's time): each fingerprint's
            # transitions stay in time order, and an event behind the clock that predictions
            # moved (labels arrive after their predictions) is not shifted for nothing.
            t = max(time_ms, state.emitted_ms)
            self._advance(t)
            if kind == 0:
                for rule in drift_rules:
                    if rule.matches_drift(item):
                        self._on_drift(rule, item, t)
            elif kind == 1:
                self._on_stats(stat_rules, item, t)
            else:
                for rule in verdict_rules:
                    self._on_verdict(rule, item, t)
        self._advance(max(batch.clock, state.clock_ms))
        self._retire()

    # -- time --------------------------------------------------------------------------------

    def _advance(self, t: int) -> None:
        """Handle every deadline up to and including ``t``, earliest first."""
        self._horizon = t
        while True:
            nxt = self._next_deadline(t)
            if nxt is None:
                break
            at, _, action, arg = nxt
            self.state.clock_ms = max(self.state.clock_ms, at)
            action(arg, at)
        self.state.clock_ms = max(self.state.clock_ms, t)

    def _next_deadline(self, t: int) -> tuple[int, int, Any, Any] | None:
        best: tuple[int, int, Any, Any] | None = None

        def offer(at: int, order: int, action: Any, arg: Any) -> None:
            nonlocal best
            if at <= t and (best is None or (at, order, _key(arg)) < best[:2] + (_key(best[3]),)):
                best = (at, order, action, arg)

        for ep in self.state.alerts.values():
            # verdict episodes are events like drifts: the same for/repeat/quiet deadlines
            if not ep.active or ep.signal not in (DRIFT, VERDICT):
                continue
            rule = self.rules.get(ep.rule_id)
            if rule is None or rule.signal_kind != ep.signal:
                continue  # resolved by _retire
            resolve_at = ep.last_signal + max(rule.repeat_ms, 1)
            offer(resolve_at, 0, self._resolve_drift, ep)
            if ep.status == PENDING:
                fire_at = ep.starts_at + rule.for_ms
                if fire_at < resolve_at:
                    offer(fire_at, 1, self._fire_drift, ep)
            elif rule.repeat_ms > 0 and ep.last_notified is not None:
                offer(ep.last_notified + rule.repeat_ms, 2, self._repeat_drift, ep)
        for width in sorted(self._metric_widths()):
            last = self.state.ticks.get(width)
            if last is not None:
                offer(last + width, 3, self._tick, width)
        return best

    def _group(self, rule: Rule, signal_labels: Mapping[str, str]) -> tuple[dict[str, str], str]:
        """The alert group of a signal (its labels named in ``group_by``, else the rule's label
        of that name, else "") and its fingerprint; ``model_id`` is always part of it."""
        group = {g: signal_labels.get(g, rule.labels.get(g, "")) for g in rule.group_by}
        group["model_id"] = self.model_id
        return group, fingerprint(rule.id, self.model_id, group)

    # -- drift rules -------------------------------------------------------------------------

    def _on_drift(self, rule: Rule, drift: Mapping[str, Any], t: int) -> None:
        if int(drift.get("position", 0)) + 1 < rule.min_samples:
            self.outcome.counters["alert_drift_below_min_samples"] += 1
            return
        signal_labels = {
            "model_id": self.model_id,
            "model_version": str(drift.get("model_version", "")),
            "stream_kind": str(drift.get("stream_kind", "")),
            "stream_name": str(drift.get("stream_name", "")),
            "detector": str(drift.get("detector", "")),
            # "" for all traffic: a rule may group a segment's drifts apart (group_by)
            "segment": drift_segment(drift),
        }
        group, fp = self._group(rule, signal_labels)
        ep = self.state.alerts.get(fp)
        if ep is not None and ep.active:
            ep.last_signal = max(ep.last_signal, t)
            ep.count += 1
            ep.drift = _drift_facts(drift)
            if len(ep.triggers) < MAX_TRIGGERS:
                ep.triggers.append(str(drift["event_id"]))
            if _back_to_baseline(ep, drift):
                # the stream changed back: the condition cleared, do not wait for the timer
                self.outcome.counters["alert_cleared_by_drift"] += 1
                self._resolve(rule, ep, t)
            return
        if self._cooling(ep, rule, t):
            return
        ep = Episode(fp, rule.id, DRIFT, PENDING, t, t, group, count=1)
        ep.first_signal = t
        ep.drift = _drift_facts(drift)
        ep.baseline_stream = ep.drift["stream"]
        ep.baseline, ep.shifted = _means(drift)
        ep.triggers.append(str(drift["event_id"]))
        self.state.alerts[fp] = ep
        if rule.for_ms == 0:
            self._fire(rule, ep, t)
        else:
            self._emit(rule, ep, PENDING, t)

    def _fire_drift(self, ep: Episode, at: int) -> None:
        self._fire(self.rules[ep.rule_id], ep, at)

    def _repeat_drift(self, ep: Episode, at: int) -> None:
        ep.last_notified = at
        self._emit(self.rules[ep.rule_id], ep, FIRING, at)

    def _resolve_drift(self, ep: Episode, at: int) -> None:
        self._resolve(self.rules[ep.rule_id], ep, at)

    # -- verdict rules -----------------------------------------------------------------------

    def _on_verdict(self, rule: Rule, verdict: Mapping[str, Any], t: int) -> None:
        """A post-deploy verdict: with the rule's outcome it starts (or extends) an episode like
        a matching drift; with another outcome it resolves the group's open episode, since the
        model's latest verdict no longer says what the rule watches for."""
        signal_labels = {
            "model_id": self.model_id,
            "model_version": str(verdict.get("version", "")),
            "previous_version": str(verdict.get("previous_version", "")),
            "verdict": str(verdict.get("verdict", "")),
            "metric": str(verdict.get("metric", "")),
        }
        group, fp = self._group(rule, signal_labels)
        ep = self.state.alerts.get(fp)
        if not rule.matches_verdict(verdict):
            if ep is not None and ep.active:
                self.outcome.counters["alert_cleared_by_verdict"] += 1
                self._resolve(rule, ep, t)
            return
        if int(verdict.get("n_labels") or 0) < rule.min_samples:
            self.outcome.counters["alert_verdict_below_min_samples"] += 1
            return
        if ep is not None and ep.active:
            ep.last_signal = max(ep.last_signal, t)
            ep.count += 1
            ep.value = float(verdict["value"])
            ep.verdict = _verdict_facts(verdict)
            if len(ep.triggers) < MAX_TRIGGERS:
                ep.triggers.append(str(verdict["event_id"]))
            return
        if self._cooling(ep, rule, t):
            return
        ep = Episode(fp, rule.id, VERDICT, PENDING, t, t, group, count=1)
        ep.value = float(verdict["value"])
        ep.verdict = _verdict_facts(verdict)
        ep.triggers.append(str(verdict["event_id"]))
        self.state.alerts[fp] = ep
        if rule.for_ms == 0:
            self._fire(rule, ep, t)
        else:
            self._emit(rule, ep, PENDING, t)

    # -- metric rules ------------------------------------------------------------------------

    def _metric_rules(self) -> list[Rule]:
        return self._metrics

    def _metric_widths(self) -> set[int]:
        return self._widths

    def _add_metric_rows(self, batch: _ModelBatch, start: int) -> None:
        widths = self._metric_widths()
        state = self.state
        for width in widths:
            if width not in state.ticks:
                # a new rule (or model) starts ticking now; history before it is not replayed
                state.ticks[width] = start // width * width
            buckets = state.buckets.setdefault(width, {})

            # one pass per column: sums per bucket, then added to the model's buckets
            for at, values in batch.sums:
                bucket = buckets.setdefault(at // width * width, [0.0] * 7)
                for i, value in enumerate(values):
                    bucket[i] += value
            starts = np.concatenate([batch.prediction_times, batch.joined_time]) // width * width
            if not len(starts):
                continue
            keys, where = np.unique(starts, return_inverse=True)
            sums = np.zeros((len(keys), 7))
            n_pred = len(batch.prediction_times)
            p_where, j_where = where[:n_pred], where[n_pred:]
            np.add.at(sums[:, _N_PRED], p_where, 1)
            np.add.at(sums[:, _N_JOINED], j_where, 1)
            classified = batch.joined_correct >= 0
            np.add.at(sums[:, _N_CLASS], j_where[classified], 1)
            np.add.at(sums[:, _N_CORRECT], j_where[classified], batch.joined_correct[classified])
            regression = ~classified & ~np.isnan(batch.joined_error)
            np.add.at(sums[:, _N_REG], j_where[regression], 1)
            np.add.at(sums[:, _SUM_ABS], j_where[regression], batch.joined_error[regression])
            squared = np.nan_to_num(batch.joined_squared[regression])
            np.add.at(sums[:, _SUM_SQ], j_where[regression], squared)
            for bucket_start, row in zip(keys.tolist(), sums.tolist(), strict=True):
                bucket = buckets.setdefault(bucket_start, [0.0] * 7)
                for i, value in enumerate(row):
                    bucket[i] += value
        for width in list(state.buckets):
            if width not in widths:  # no rule uses this width any more
                state.buckets.pop(width)
                state.ticks.pop(width, None)

    def _tick(self, width: int, at: int) -> None:
        state = self.state
        rules = [r for r in self._metric_rules() if _tick_width(r.window_ms) == width]
        longest = max(r.window_ms for r in rules)
        buckets = state.buckets.get(width, {})
        state.ticks[width] = at
        for rule in rules:
            self._evaluate_metric(rule, buckets, at)
        for start in [s for s in buckets if s + width + longest < at]:
            del buckets[start]
        if (self._horizon - at) // width > MAX_TICKS and not buckets:
            # Silent for ages (the first empty window resolved what was open): skip the empty
            # windows up to just before the clock instead of evaluating each of them.
            skip_to = (self._horizon - width) // width * width
            self.outcome.counters["alert_ticks_skipped"] += (skip_to - at) // width
            state.ticks[width] = skip_to

    def _evaluate_metric(self, rule: Rule, buckets: dict[int, list[float]], at: int) -> None:
        lo = at - rule.window_ms
        sums = [0.0] * 7
        for start, values in buckets.items():
            if lo <= start and start < at:
                for i, v in enumerate(values):
                    sums[i] += v
        value, samples = metric_value(rule.metric or "", sums)
        holds = (
            value is not None
            and samples >= rule.min_samples
            and _OPS[rule.op or ">"](value, rule.threshold)
        )
        group = {
            "model_id": self.model_id,
            "model_version": self.state.model_version,
            "metric": rule.metric or "",
        }
        group, fp = self._group(rule, group)
        for other in list(self.state.alerts.values()):
            # the group moved (a new model version, a changed group_by): the old one is over
            if other.rule_id == rule.id and other.fingerprint != fp and other.active:
                self._resolve(rule, other, at)
        self._threshold(rule, METRIC, fp, group, holds, value, at)

    def _threshold(
        self,
        rule: Rule,
        signal: str,
        fp: str,
        group: dict[str, str],
        holds: bool,
        value: float | None,
        at: int,
    ) -> None:
        """One evaluation of a threshold condition for one fingerprint at ``at``."""
        ep = self.state.alerts.get(fp)
        if ep is not None and ep.active:
            ep.value = value
            if not holds:
                self._resolve(rule, ep, at)
                return
            ep.last_signal = at
            if ep.status == PENDING and at - ep.starts_at >= rule.for_ms:
                self._fire(rule, ep, at)
            elif (
                ep.status == FIRING
                and rule.repeat_ms > 0
                and ep.last_notified is not None
                and at - ep.last_notified >= rule.repeat_ms
            ):
                ep.last_notified = at
                self._emit(rule, ep, FIRING, at)
            return
        if not holds or self._cooling(ep, rule, at):
            return
        ep = Episode(fp, rule.id, signal, PENDING, at, at, group, value=value)
        self.state.alerts[fp] = ep
        if rule.for_ms == 0:
            self._fire(rule, ep, at)
        else:
            self._emit(rule, ep, PENDING, at)

    # -- statistic rules ---------------------------------------------------------------------

    def _on_stats(self, rules: list[Rule], rows: list[Mapping[str, Any]], at: int) -> None:
        """Detector statistics rows of one time: per rule and group, the condition holds when
        it holds on any matching stream (the first such row gives the value)."""
        for rule in rules:
            found: dict[str, tuple[dict[str, str], bool, float | None]] = {}
            for row in rows:
                if not rule.matches_drift(row, STATISTIC):
                    continue
                raw = row.get(rule.stat_field or "statistic")
                value = None if raw is None else float(raw)
                holds = (
                    value is not None
                    and math.isfinite(value)
                    and int(row.get("n_values") or 0) >= rule.min_samples
                    and _OPS[rule.op or ">"](value, rule.threshold)
                )
                labels = {
                    "model_id": self.model_id,
                    "model_version": self.state.model_version,
                    "stream_kind": str(row.get("stream_kind", "")),
                    "stream_name": str(row.get("stream_name", "")),
                    "detector": str(row.get("detector", "")),
                }
                group, fp = self._group(rule, labels)
                seen = found.get(fp)
                if seen is None or (holds and not seen[1]):
                    found[fp] = (group, holds, value)
            for fp, (group, holds, value) in found.items():
                self._threshold(rule, STATISTIC, fp, group, holds, value, at)

    # -- shared lifecycle --------------------------------------------------------------------

    def _cooling(self, ep: Episode | None, rule: Rule, t: int) -> bool:
        if ep is not None and ep.ended_at is not None and t < ep.ended_at + rule.cooldown_ms:
            self.outcome.counters["alert_cooldown_suppressed"] += 1
            return True
        return False

    def _fire(self, rule: Rule, ep: Episode, at: int) -> None:
        ep.status = FIRING
        ep.fired_at = ep.last_notified = at
        alert = self._emit(rule, ep, FIRING, at)
        if rule.actions:
            self._retrain(rule, ep, alert, at)

    def _resolve(self, rule: Rule | None, ep: Episode, at: int) -> None:
        fired = ep.status == FIRING
        ep.status = RESOLVED
        ep.ended_at = at
        self._emit(rule, ep, RESOLVED, at, notify=fired)

    def _retire(self) -> None:
        """Resolve alerts whose rule is gone, disabled or no longer watches this model; forget
        resolved alerts once their cooldown is over."""
        clock = self.state.clock_ms
        for ep in list(self.state.alerts.values()):
            rule = self.rules.get(ep.rule_id)
            if ep.active and (rule is None or rule.signal_kind != ep.signal):
                self._resolve(None, ep, clock)
                self.outcome.counters["alert_rule_retired"] += 1
        for fp, ep in list(self.state.alerts.items()):
            rule = self.rules.get(ep.rule_id)
            if not ep.active and ep.ended_at is not None:
                cooldown = rule.cooldown_ms if rule is not None else 0
                if clock >= ep.ended_at + cooldown:
                    del self.state.alerts[fp]

    def _emit(
        self, rule: Rule | None, ep: Episode, status: str, at: int, *, notify: bool = True
    ) -> dict[str, Any]:
        if rule is not None:  # remember what the rule said, for a resolve after it is gone
            ep.rule_name, ep.rule_version, ep.severity = rule.name, rule.version, rule.severity
            ep.labels = {
                **rule.labels,
                **ep.group,
                "alertname": rule.name,
                "rule_id": rule.id,
                "severity": rule.severity,
                "model_id": self.model_id,
            }
            ep.annotations = dict(rule.annotations)
            ep.notify = list(rule.notify)
        labels = ep.labels
        self.state.emitted_ms = max(self.state.emitted_ms, at)
        silences = [s.id for s in self.snapshot.silences if s.mutes(labels, at)]
        ack = self.snapshot.acks.get(ep.fingerprint)
        eid = alert_event_id(ep.fingerprint, status, ep.starts_at, at)
        alert = {
            "event_id": eid,
            "fingerprint": ep.fingerprint,
            "rule_id": ep.rule_id,
            "rule_version": ep.rule_version,
            "rule_name": ep.rule_name,
            "status": status,
            "severity": ep.severity,
            "model_id": self.model_id,
            "labels": dict(labels),
            "annotations": self._annotations(ep, status, at),
            "starts_at": ep.starts_at,
            "ends_at": at if status == RESOLVED else None,
            "updated_at": at,
            "value": float(ep.count) if ep.signal == DRIFT else ep.value,
            "trigger_event_ids": list(ep.triggers),
            "silenced": bool(silences),
            "silence_ids": silences,
            "acknowledged": ack is not None and ack.acked_at_ms >= ep.starts_at,
            "notify": list(ep.notify) if notify and status != PENDING else [],
            "inhibited_by": self._inhibitor(ep) if ep.signal == DRIFT else None,
        }
        self.outcome.alerts.append(alert)
        self.outcome.rows["alerts"].append(alert_row(alert))
        self.outcome.counters[f"alerts_{status.lower()}"] += 1
        return alert

    def _annotations(self, ep: Episode, status: str, at: int) -> dict[str, str]:
        """What a person needs to act (docs/alerting.md, "Annotations"): ``summary`` and
        ``description`` (the rule's own, when it has them, win), ``model_version``, and for
        drift rules the latest matching drift's ``stream``, ``detector``, ``statistic``,
        ``p_value``, ``before``/``after`` (the detector's means on either side of the change),
        ``window_start``/``window_end`` (RFC 3339) and ``drift_event_id``."""
        version = self.state.model_version
        model = f"model {self.model_id}" + (f" v{version}" if version else "")
        facts: dict[str, str] = {"model_version": version} if version else {}
        if ep.signal == VERDICT and ep.verdict:
            v = ep.verdict
            facts.update(v)
            facts["model_version"] = v["version"]  # the judged version, not the serving one
            what = f"version {v['version']} {v['verdict']} than {v['previous_version']}"
            rollback = (
                f" Rollback recommended to version {v['rollback_to']}."
                if v.get("rollback_to")
                else ""
            )
            description = (
                f"Post-deploy verdict on model {self.model_id}: version {v['version']} is "
                f"{v['verdict']} than version {v['previous_version']} on {v['metric']} "
                f"({v['value']} vs {v['previous_value']}, {v['test']} p={v['p_value']}, "
                f"{v['n_labels']} labels).{rollback}"
            )
            model = f"model {self.model_id}"
        elif ep.signal == DRIFT and ep.drift:
            d = ep.drift
            facts.update(d)
            facts.setdefault("window_start", _iso(ep.first_signal or ep.starts_at))
            facts.setdefault("window_end", _iso(ep.last_signal))
            change = (
                f"; mean {d['before']} -> {d['after']}" if "before" in d and "after" in d else ""
            )
            what = f"drift in {d['stream']} ({d['detector']})"
            description = (
                f"{d['detector']} detected a change in {d['stream']} of {model}{change}; "
                f"{ep.count} matching drift event(s) between {facts['window_start']} and "
                f"{facts['window_end']}."
            )
        else:
            value = _fmt(ep.value)
            what = f"{ep.group.get('metric') or 'value'} = {value}"
            description = f"{what} for {model} at {_iso(at)}."
        if status == RESOLVED:
            description = f"Resolved at {_iso(at)}. {description}"
        return {
            "summary": f"{ep.rule_name or ep.rule_id} {status.lower()}: {what} on {model}",
            "description": description,
            **ep.annotations,
            **facts,
        }

    def _inhibitor(self, ep: Episode) -> str | None:
        """A firing data-quality alert of the same model mutes its drift alerts: drift on
        broken data is a symptom, not news."""
        sources = sorted(
            other.fingerprint
            for other in self.state.alerts.values()
            if other.status == FIRING
            and other.fingerprint != ep.fingerprint
            and other.labels.get(INHIBIT_LABEL) == INHIBIT_VALUE
        )
        return sources[0] if sources else None

    def _retrain(self, rule: Rule, ep: Episode, alert: Mapping[str, Any], at: int) -> None:
        last = self.state.retrained.get(rule.id)
        if last is not None and at - last < self.evaluator.retrain_cooldown_ms:
            self.outcome.counters["retraining_suppressed"] += 1
            return
        self.state.retrained[rule.id] = at
        for i, action in enumerate(rule.actions):
            request = self._retraining_request(rule, ep, alert, action, i, at)
            self.outcome.retraining.append(request)
            self.outcome.rows["retraining_requests"].append(request)

    def _retraining_request(
        self,
        rule: Rule,
        ep: Episode,
        alert: Mapping[str, Any],
        action: RetrainAction,
        index: int,
        at: int,
    ) -> dict[str, Any]:
        if ep.signal == DRIFT:
            what = f"{ep.count} matching drift event(s)"
        elif ep.signal == VERDICT:
            what = f"verdict {rule.outcome} of version {ep.verdict.get('version', '?')}"
        else:
            what = f"{rule.metric} = {_fmt(ep.value)} {rule.op} {rule.threshold:g}"
        return {
            "event_id": event_id("retraining", self.model_id, alert["event_id"], str(index)),
            "model_id": self.model_id,
            "model_version": self.state.model_version,
            "requested_at": at,
            "reason": f"alert {rule.name!r} (rule {rule.id}) firing: {what}",
            "trigger_event_ids": [alert["event_id"]],
            "window_start": max(0, at - action.lookback_ms),
            "window_end": at,
            "priority": action.priority,
            "policy": f"rule:{rule.id}",
        }


def metric_value(name: str, sums: list[float]) -> tuple[float | None, float]:
    """(value, samples) of a metric over summed buckets (the 7 slots: predictions, joined,
    classified, correct, regression rows, sum |error|, sum error^2); value None when
    undefined.

    >>> metric_value("error_rate", [60, 60, 60, 42, 0, 0, 0])
    (0.3, 60)
    """
    if name in ("accuracy", "error_rate"):
        n = sums[_N_CLASS]
        if not n:
            return None, 0.0
        # error_rate from the count of errors, not 1 - accuracy: 18/60 must be exactly 0.3
        hits = sums[_N_CORRECT] if name == "accuracy" else n - sums[_N_CORRECT]
        return hits / n, n
    if name in ("mae", "rmse"):
        n = sums[_N_REG]
        if not n:
            return None, 0.0
        return (sums[_SUM_ABS] / n if name == "mae" else math.sqrt(sums[_SUM_SQ] / n)), n
    if name == "prediction_count":
        return sums[_N_PRED], sums[_N_PRED]
    if name == "label_coverage":
        n = sums[_N_PRED]
        return (min(1.0, sums[_N_JOINED] / n) if n else None), n
    return None, 0.0


def _drift_facts(drift: Mapping[str, Any]) -> dict[str, str]:
    """The annotation facts of a DriftEvent (strings; absent when the detector has none)."""
    evidence = drift.get("evidence") or {}
    facts = {
        "stream": f"{drift.get('stream_kind', '')}/{drift.get('stream_name', '')}",
        "detector": str(drift.get("detector", "")),
        "drift_event_id": str(drift.get("event_id", "")),
    }
    for name in ("statistic", "p_value"):
        if drift.get(name) is not None:
            facts[name] = repr(float(drift[name]))
    for name, key in (("before", "mean_before"), ("after", "mean_after")):
        if key in evidence:
            facts[name] = str(evidence[key])
    for name in ("window_start", "window_end"):  # window tests: the tested window
        if str(evidence.get(name, "")).isdigit():
            facts[name] = _iso(int(evidence[name]))
    return facts


def _verdict_facts(verdict: Mapping[str, Any]) -> dict[str, str]:
    """The annotation facts of a ModelVerdict (strings; the rollback's only when it has one)."""
    facts = {
        "verdict_event_id": str(verdict.get("event_id", "")),
        "verdict": str(verdict.get("verdict", "")),
        "version": str(verdict.get("version", "")),
        "previous_version": str(verdict.get("previous_version", "")),
        "metric": str(verdict.get("metric", "")),
        "test": str(verdict.get("test", "")),
        "n_labels": str(verdict.get("n_labels", "")),
    }
    for name in ("value", "previous_value", "p_value"):
        value = verdict.get(name)
        facts[name] = "?" if value is None else f"{float(value):.4g}"
    for name in ("rollback_event_id", "rollback_to"):
        if verdict.get(name):
            facts[name] = str(verdict[name])
    return facts


def _means(drift: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The detector's means before and after the change, when it reports them."""
    evidence = drift.get("evidence") or {}
    out = []
    for key in ("mean_before", "mean_after"):
        try:
            value = float(evidence[key])
        except (KeyError, TypeError, ValueError):
            value = math.nan
        out.append(value if math.isfinite(value) else None)
    return out[0], out[1]


def _back_to_baseline(ep: Episode, drift: Mapping[str, Any]) -> bool:
    """Is ``drift`` a change of the episode's first stream back toward its level before the
    episode, i.e. is its new mean nearer the first drift's "before" than its "after"? (An error
    stream back to its pre-change rate, say.)"""
    if ep.baseline is None or ep.shifted is None or ep.baseline == ep.shifted:
        return False
    if f"{drift.get('stream_kind', '')}/{drift.get('stream_name', '')}" != ep.baseline_stream:
        return False
    _, after = _means(drift)
    return after is not None and abs(after - ep.baseline) < abs(after - ep.shifted)


def _iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, as the API writes times."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _key(arg: Any) -> str:
    return arg.fingerprint if isinstance(arg, Episode) else f"~{arg:020d}"


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"
