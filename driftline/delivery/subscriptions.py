"""Who receives an alert: subscriptions and silences as the control plane has them.

The API writes every subscription and silence to the compacted topic ``driftline.rules.v1``
(key ``<kind>:<id>``, value a JSON object ``{"kind", "id", "version", ..., "data"}``, a
tombstone on delete; the format is documented at the top of ``api/control_plane.py``).
:class:`ControlPlaneFollower` reads that topic from the beginning in a thread (manual
assignment, no group, no commits) and applies the documented rule per key, in offset order:
a tombstone removes the key; a value replaces the current one only if its ``version`` is
greater.

Matching (:func:`matching_subscriptions`): a subscription receives an alert when it is
enabled, the alert's ``notify`` names it, and its filters (model id globs, severities, label
globs; empty means any) match the alert. The worker decides who is told about a state change
(``notify`` is the rule's list, and empty for changes nobody is told about, such as a PENDING
alert that resolved without firing); a subscription's filters can only narrow that, e.g. a team
that wants only its own models' alerts from a rule that watches many.

>>> sub = Subscription.from_data("sub-1", 1, {"name": "ops", "url": "http://x",
...     "secret": "0123456789abcdef", "filters": {"severities": ["critical"]}})
>>> alert = {"model_id": "churn", "severity": "critical", "notify": ["sub-1"], "labels": {}}
>>> [s.id for s in matching_subscriptions([sub], alert)]
['sub-1']
>>> [s.id for s in matching_subscriptions([sub], {**alert, "severity": "info"})]
[]
>>> [s.id for s in matching_subscriptions([sub], {**alert, "notify": []})]
[]
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from driftline.delivery.alerts import alert_label_set
from driftline.schemas import topics

__all__ = [
    "ControlPlaneFollower",
    "Silence",
    "Subscription",
    "active_silences_for",
    "matching_subscriptions",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subscription:
    id: str
    version: int
    name: str
    url: str
    secret: str
    enabled: bool = True
    models: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_data(cls, ident: str, version: int, data: Mapping[str, Any]) -> Subscription:
        filters = data.get("filters") or {}
        return cls(
            id=ident,
            version=version,
            name=str(data.get("name", ident)),
            url=str(data["url"]),
            secret=str(data.get("secret") or ""),
            enabled=bool(data.get("enabled", True)),
            models=tuple(filters.get("models") or ()),
            severities=tuple(s.lower() for s in filters.get("severities") or ()),
            labels=dict(filters.get("labels") or {}),
        )

    def filters_match(self, alert: Mapping[str, Any]) -> bool:
        """Every non-empty filter matches (model id globs, severities, label globs)."""
        model_id = str(alert.get("model_id") or "")
        if self.models and not any(fnmatchcase(model_id, g) for g in self.models):
            return False
        if self.severities and str(alert.get("severity") or "").lower() not in self.severities:
            return False
        if self.labels:
            labels = alert_label_set(alert)
            for name, glob in self.labels.items():
                if name not in labels or not fnmatchcase(labels[name], glob):
                    return False
        return True


def matching_subscriptions(
    subscriptions: Iterable[Subscription], alert: Mapping[str, Any]
) -> list[Subscription]:
    """The subscriptions that receive ``alert`` (see the module docstring), by id."""
    named = set(alert.get("notify") or ())
    out = [s for s in subscriptions if s.enabled and s.id in named and s.filters_match(alert)]
    return sorted(out, key=lambda s: s.id)


def _parse_time_ms(text: Any) -> int | None:
    if not text:
        return None
    try:
        return int(datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[tuple[str, str, str], ...]  # (name, op, value)
    starts_at_ms: int | None
    ends_at_ms: int | None

    @classmethod
    def from_data(cls, ident: str, data: Mapping[str, Any], created_at: Any = None) -> Silence:
        return cls(
            id=ident,
            matchers=tuple(
                (str(m["name"]), str(m.get("op", "=")), str(m.get("value", "")))
                for m in data.get("matchers") or ()
            ),
            starts_at_ms=_parse_time_ms(data.get("starts_at") or created_at),
            ends_at_ms=_parse_time_ms(data.get("ends_at")),
        )

    def active(self, now_ms: int) -> bool:
        if self.starts_at_ms is not None and now_ms < self.starts_at_ms:
            return False
        return self.ends_at_ms is None or now_ms < self.ends_at_ms

    def matches(self, labels: Mapping[str, str]) -> bool:
        if not self.matchers:
            return False  # the API requires one; an empty silence must not mute everything
        for name, op, value in self.matchers:
            actual = labels.get(name, "")
            if op == "=":
                ok = actual == value
            elif op == "!=":
                ok = actual != value
            elif op == "=~":
                ok = fnmatchcase(actual, value)
            elif op == "!~":
                ok = not fnmatchcase(actual, value)
            else:
                return False
            if not ok:
                return False
        return True


def active_silences_for(
    silences: Iterable[Silence], alert: Mapping[str, Any], now_ms: int | None = None
) -> list[str]:
    """Ids of the silences active now that match ``alert``'s label set."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    labels = alert_label_set(alert)
    return [s.id for s in silences if s.active(now_ms) and s.matches(labels)]


class ControlPlaneFollower:
    """Subscriptions and silences from the control-plane topic, kept current by a thread.

    ``apply`` is the whole update rule, so tests (and callers with another source) can feed
    records without a broker.
    """

    def __init__(
        self,
        bootstrap: str | None = None,
        topic: str = topics.RULES,
        *,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._client_config = dict(client_config or {})
        self._lock = threading.Condition()
        self._versions: dict[str, int] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._silences: dict[str, Silence] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._targets: dict[int, int] = {}  # partition -> high watermark at start
        self._positions: dict[int, int] = {}

    # -- the update rule --------------------------------------------------------------------

    def apply(self, key: str, value: bytes | None) -> None:
        kind, sep, ident = key.partition(":")
        if not sep or kind not in ("subscription", "silence"):
            return
        with self._lock:
            if value is None:
                self._versions.pop(key, None)
                self._subscriptions.pop(ident, None)
                self._silences.pop(ident, None)
                return
            try:
                obj = json.loads(value)
                if obj.get("kind") != kind or obj.get("id") != ident:
                    raise ValueError("key does not match value")
                version = int(obj["version"])
                data = obj["data"]
                if version <= self._versions.get(key, 0):
                    return  # a writer that lost a race, or an old record: the first wins
                if kind == "subscription":
                    self._subscriptions[ident] = Subscription.from_data(ident, version, data)
                else:
                    self._silences[ident] = Silence.from_data(ident, data, obj.get("created_at"))
                self._versions[key] = version
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("skipping malformed control-plane record %s: %s", key, exc)

    def subscriptions(self) -> list[Subscription]:
        with self._lock:
            return list(self._subscriptions.values())

    def silences(self) -> list[Silence]:
        with self._lock:
            return list(self._silences.values())

    # -- the reader thread ------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> ControlPlaneFollower:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        if self.bootstrap is None:
            raise ValueError("a follower without bootstrap servers is fed through apply()")
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                **self._client_config,
                # never joins a group (manual assignment) and never commits
                "group.id": f"driftline-delivery-view-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # EOF events tell ready() where the end is even if the last offsets hold no
                # record (compaction, control records)
                "enable.partition.eof": True,
            }
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                meta = consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
                if meta is not None and meta.error is None and meta.partitions:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"control-plane topic {self.topic} is not available")
                time.sleep(0.2)
            for p in meta.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=timeout
                )
                self._targets[p] = high
                self._positions[p] = low
            consumer.assign(
                [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in meta.partitions]
            )
        except BaseException:
            consumer.close()
            raise
        self._consumer = consumer
        self._thread = threading.Thread(target=self._run, name="driftline-delivery-view",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def ready(self) -> bool:
        """True once everything that was on the topic at start has been applied."""
        with self._lock:
            return all(self._positions.get(p, 0) >= h for p, h in self._targets.items())

    def wait_ready(self, timeout: float = 30.0) -> bool:
        with self._lock:
            return self._lock.wait_for(self.ready, timeout)

    def _run(self) -> None:
        from confluent_kafka import KafkaError

        while not self._stop.is_set():
            try:
                msg = self._consumer.poll(0.2)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        with self._lock:
                            p = msg.partition()
                            self._positions[p] = max(self._positions.get(p, 0), msg.offset())
                            self._lock.notify_all()
                    else:
                        log.warning("control-plane follower: %s", err)
                    continue
                key = (msg.key() or b"").decode("utf-8", "replace")
                self.apply(key, msg.value())
                with self._lock:
                    p = msg.partition()
                    self._positions[p] = max(self._positions.get(p, 0), msg.offset() + 1)
                    self._lock.notify_all()
            except Exception:  # a dead follower would freeze every subscription change
                log.exception("control-plane follower failed; retrying")
                time.sleep(0.5)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
