"""The workers' view of the control plane: alert rules, silences and acknowledgements.

The API writes every entity to the compacted topic ``driftline.rules.v1`` (format documented
in ``api/control_plane.py``; streams may not import api, so the reader's rule is restated
here): key ``<kind>:<id>`` in UTF-8, value a UTF-8 JSON object ``{"kind", "id", "version",
"created_at", "updated_at", "updated_by", "data"}`` or a tombstone. Applied in offset order per
key, a tombstone removes the key and a value replaces the current one only if its ``version``
is greater.

:class:`RuleBook` is that view in memory, parsed into what the evaluator needs
(:class:`Rule`, :class:`Silence`, :class:`Ack`); :class:`ControlPlaneFollower` keeps one up to
date from the topic on a background thread, so rule changes reach a running worker.

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

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, Final

__all__ = [
    "Ack",
    "ControlPlaneFollower",
    "Matcher",
    "RetrainAction",
    "Rule",
    "RuleBook",
    "RuleError",
    "Silence",
    "Snapshot",
    "parse_duration_ms",
    "parse_time_ms",
]

log = logging.getLogger(__name__)

RULES_TOPIC: Final = "driftline.rules.v1"  # == driftline.schemas.topics.RULES
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


def parse_time_ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 time (``Z`` or an offset; naive means UTC).

    >>> parse_time_ms("2026-01-01T00:00:01.5Z")
    1767225601500
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


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
    signal_kind: str  # drift | metric | statistic
    condition: str  # drift_detected | threshold
    enabled: bool = True
    models: tuple[str, ...] | None = None
    model_selector: tuple[tuple[str, str], ...] | None = None
    stream_kind: str | None = None
    stream_name: str = "*"
    detector: str = "*"
    metric: str | None = None
    stat_field: str | None = None  # statistic signals: estimate | statistic | p_value | n_values
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
            if kind not in ("drift", "metric", "statistic"):
                raise RuleError(f"unknown signal kind {kind!r}")
            if ctype not in ("drift_detected", "threshold"):
                raise RuleError(f"unknown condition type {ctype!r}")
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
                metric=signal.get("metric"),
                stat_field=signal.get("field", "statistic") if kind == "statistic" else None,
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
        )


@dataclass(frozen=True)
class Matcher:
    """``=`` equal, ``!=`` not equal, ``=~`` fnmatch glob, ``!~`` not glob (the API's
    matchers: globs, not Alertmanager's regular expressions). A missing label is ``""``."""

    name: str
    value: str
    op: str = "="

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        if self.op == "=~":
            return fnmatchcase(actual, self.value)
        if self.op == "!~":
            return not fnmatchcase(actual, self.value)
        raise RuleError(f"unknown matcher op {self.op!r}")


@dataclass(frozen=True)
class Silence:
    id: str
    version: int
    matchers: tuple[Matcher, ...]
    starts_ms: int
    ends_ms: int

    @classmethod
    def from_record(cls, ident: str, version: int, data: Mapping[str, Any]) -> Silence:
        try:
            matchers = tuple(
                Matcher(str(m["name"]), str(m["value"]), str(m.get("op", "=")))
                for m in data["matchers"]
            )
            for m in matchers:
                if m.op not in ("=", "!=", "=~", "!~"):
                    raise RuleError(f"silence {ident}: matcher op {m.op!r}")
            starts = data.get("starts_at")
            return cls(
                ident,
                int(version),
                matchers,
                parse_time_ms(starts) if starts else 0,
                parse_time_ms(str(data["ends_at"])),
            )
        except RuleError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise RuleError(f"silence {ident}: {exc!r}") from exc

    def mutes(self, labels: Mapping[str, str], at_ms: int) -> bool:
        """Active at ``at_ms`` (half-open ``[starts_at, ends_at)``) and every matcher matches."""
        return (
            self.starts_ms <= at_ms < self.ends_ms
            and bool(self.matchers)
            and all(m.matches(labels) for m in self.matchers)
        )


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


_PARSERS: Final = {"rule": Rule.from_record, "silence": Silence.from_record, "ack": Ack.from_record}


class RuleBook:
    """Thread-safe in-memory view of the control plane, applied record by record.

    Subscriptions and API keys are versioned like everything else but not parsed: the
    evaluator only passes a rule's ``notify`` ids through. An entity whose ``data`` cannot be
    parsed keeps its version (so ordering stays right) but is left out of snapshots.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._parsed: dict[str, Any] = {}
        self._generation = 0
        self._snapshot: Snapshot | None = Snapshot()

    def apply(self, key: bytes | str, value: bytes | None) -> bool:
        """Apply one record of the topic; True when the view changed."""
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        kind, sep, ident = text.partition(":")
        if not sep:
            log.warning("skipping control-plane record with key %r", text)
            return False
        if value is None:
            with self._lock:
                if text not in self._versions:
                    return False
                del self._versions[text]
                self._parsed.pop(text, None)
                self._changed()
            return True
        try:
            obj = json.loads(value)
            if obj.get("kind") != kind or obj.get("id") != ident:
                raise ValueError("record key does not match its value")
            version = int(obj["version"])
            data = dict(obj["data"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("skipping malformed control-plane record %s: %s", text, exc)
            return False
        parsed = None
        parser = _PARSERS.get(kind)
        if parser is not None:
            try:
                parsed = parser(ident, version, data)
            except RuleError as exc:
                log.warning("control-plane %s v%d is not usable by the workers: %s", text,
                            version, exc)  # fmt: skip
        with self._lock:
            current = self._versions.get(text)
            if current is not None and version <= current:
                return False  # a writer that lost a race, or an old record replayed
            self._versions[text] = version
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

    def version(self, kind: str, ident: str) -> int | None:
        with self._lock:
            return self._versions.get(f"{kind}:{ident}")

    def __len__(self) -> int:
        with self._lock:
            return len(self._versions)


class ControlPlaneFollower:
    """Reads the control-plane topic from the beginning into a :class:`RuleBook`, forever.

    confluent-kafka consumer with a throwaway ``group.id``, every partition assigned manually
    from the beginning and nothing committed: every worker holds the whole (small, compacted)
    control plane and applies changes within a poll interval, without a restart or a
    rebalance. ``start()`` returns at once; ``wait_caught_up(timeout)`` blocks until the
    records that were on the topic at start have been applied.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = RULES_TOPIC,
        rulebook: RuleBook | None = None,
        *,
        client_config: Mapping[str, Any] | None = None,
        poll_seconds: float = 0.2,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.rulebook = rulebook if rulebook is not None else RuleBook()
        self.poll_seconds = poll_seconds
        self._client_config = dict(client_config or {})
        self._consumer: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._positions: dict[int, int] = {}
        self._targets: dict[int, int] = {}
        self.applied = 0
        self.error: str | None = None

    def __repr__(self) -> str:
        return f"ControlPlaneFollower({self.bootstrap!r}, {self.topic!r})"

    def start(self, timeout: float = 30.0) -> ControlPlaneFollower:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                **self._client_config,
                "group.id": f"driftline-worker-rules-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            partitions = self._partitions(consumer, timeout)
            for p in partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=timeout
                )
                self._targets[p] = high
                self._positions[p] = low if low == high else 0
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        except BaseException:
            consumer.close()
            raise
        self._consumer = consumer
        self._thread = threading.Thread(target=self._run, name="driftline-rules", daemon=True)
        self._thread.start()
        return self

    def _partitions(self, consumer: Any, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            topic = consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
            if topic is not None and topic.error is None and topic.partitions:
                return sorted(topic.partitions)
            if time.monotonic() > deadline:
                raise RuntimeError(f"control-plane topic {self.topic} is not available")
            time.sleep(0.2)

    def caught_up(self) -> bool:
        with self._cond:
            return self._caught_up()

    def _caught_up(self) -> bool:
        return all(self._positions.get(p, 0) >= high for p, high in self._targets.items())

    def wait_caught_up(self, timeout: float = 30.0) -> bool:
        """True once everything on the topic when ``start()`` ran is applied (False on
        timeout)."""
        with self._cond:
            return self._cond.wait_for(self._caught_up, timeout)

    def wait_for_offset(self, partition: int, offset: int, timeout: float = 30.0) -> bool:
        """True once the record at ``offset`` of ``partition`` is applied (tests, tools)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._positions.get(partition, 0) > offset, timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def __enter__(self) -> ControlPlaneFollower:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        from confluent_kafka import KafkaError

        while not self._stop.is_set():
            try:
                msg = self._consumer.poll(self.poll_seconds)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._advance(msg.partition(), msg.offset())
                    else:
                        self.error = str(err)
                        log.warning("control-plane follower: %s", err)
                    continue
                self.rulebook.apply(msg.key() or b"", msg.value())
                self.applied += 1
                self._advance(msg.partition(), msg.offset() + 1)
                self.error = None
            except Exception as exc:  # keep following: a dead thread would freeze the rules
                self.error = str(exc)
                log.exception("control-plane follower failed; retrying")
                time.sleep(0.5)

    def _advance(self, partition: int, position: int) -> None:
        with self._cond:
            self._positions[partition] = max(self._positions.get(partition, 0), position)
            self._cond.notify_all()
