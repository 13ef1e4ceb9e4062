"""The control-plane contract every reader shares: the record format of the compacted topic
``driftline.rules.v1``, the "higher version wins" view, and the follower that keeps a view
current from the topic.

The API writes (``driftline.api.control_plane``); the workers (``driftline.streams.rulebook``),
the delivery service (``driftline.delivery.subscriptions``) and every API process read, all
through this module, so they agree on what a record means.

Record format:

* key: ``<kind>:<id>`` in UTF-8, kind one of :data:`KINDS`.
* value: UTF-8 JSON object ``{"kind", "id", "version", "created_at", "updated_at",
  "updated_by", "data"}``; ``version`` starts at 1 and grows by one per write of the key, times
  are RFC 3339 UTC, ``data`` is the entity (for a rule: the API's ``RuleCreate`` fields, ``for``
  by its alias).
* tombstone (null value) when the entity is deleted.
* headers on every record, tombstones included (who deleted what is not in a null value):
  ``driftline.kind``, ``driftline.version``, ``driftline.updated_by``, ``driftline.op``
  (``upsert`` | ``delete``).

The reader's rule (:class:`VersionedView`), applied in offset order per key: a tombstone
removes the key; a value replaces the current one only if its ``version`` is greater (so a
record from a writer that lost a race, or an old record replayed, is ignored); a value that is
not a record is skipped with a warning.

>>> view = VersionedView()
>>> r1 = Record("rule", "r1", 1, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "me", {"a": 1})
>>> view.apply("rule:r1", encode_value(r1))
True
>>> view.apply("rule:r1", encode_value(r1))  # not newer: ignored
False
>>> view.get("rule", "r1").data, view.apply(b"rule:r1", None), view.get("rule", "r1")
({'a': 1}, True, None)
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

from driftline.schemas.topics import RULES, TOPIC_SPECS, TopicSpec, topic_spec

__all__ = [
    "KINDS",
    "CompactedTopicFollower",
    "ControlPlaneError",
    "Record",
    "Unavailable",
    "VersionedView",
    "create_topic",
    "decode_value",
    "encode_value",
    "now_iso",
    "record_headers",
]

log = logging.getLogger(__name__)

# ``monitoring``: a model's own monitoring settings, id = model_id (schemas/monitoring.py)
KINDS: Final = ("rule", "silence", "subscription", "apikey", "ack", "monitoring")


class ControlPlaneError(RuntimeError):
    pass


class Unavailable(ControlPlaneError):
    """The broker did not answer, the topic is missing, or a write was not seen in time."""


@dataclass(frozen=True)
class Record:
    kind: str
    id: str
    version: int
    created_at: str
    updated_at: str
    updated_by: str
    data: dict[str, Any]
    partition: int = -1
    offset: int = -1

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"

    def value(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "version": self.version,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
            "data": self.data,
        }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def encode_value(record: Record) -> bytes:
    return json.dumps(record.value(), separators=(",", ":"), sort_keys=True).encode()


def decode_value(key: str, value: bytes, partition: int = -1, offset: int = -1) -> Record:
    """The record in ``value``; ``ValueError`` (or ``KeyError``/``TypeError``) if it is not one
    or does not match its key."""
    kind, sep, ident = key.partition(":")
    obj = json.loads(value)
    if not sep or obj.get("kind") != kind or obj.get("id") != ident:
        raise ValueError(f"record key {key!r} does not match its value")
    return Record(
        kind=kind,
        id=ident,
        version=int(obj["version"]),
        created_at=str(obj["created_at"]),
        updated_at=str(obj["updated_at"]),
        updated_by=str(obj["updated_by"]),
        data=dict(obj["data"]),
        partition=partition,
        offset=offset,
    )


def record_headers(kind: str, version: int, actor: str, op: str) -> list[tuple[str, bytes]]:
    return [
        ("driftline.kind", kind.encode()),
        ("driftline.version", str(version).encode()),
        ("driftline.updated_by", actor.encode()),
        ("driftline.op", op.encode()),
    ]


class VersionedView:
    """The latest record per key, by the reader's rule (module docstring). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}

    def apply(
        self, key: bytes | str, value: bytes | None, partition: int = -1, offset: int = -1
    ) -> bool:
        """Apply one record of the topic; True when the view changed."""
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if value is None:
            with self._lock:
                return self._records.pop(text, None) is not None
        try:
            record = decode_value(text, value, partition, offset)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("skipping malformed control-plane record %s@%d/%d: %s", text, partition,
                        offset, exc)  # fmt: skip
            return False
        with self._lock:
            current = self._records.get(text)
            if current is not None and record.version <= current.version:
                return False  # a writer that lost a race, or an old record replayed
            self._records[text] = record
        return True

    def get(self, kind: str, ident: str) -> Record | None:
        with self._lock:
            return self._records.get(f"{kind}:{ident}")

    def by_key(self, key: str) -> Record | None:
        with self._lock:
            return self._records.get(key)

    def list(self, kind: str | None = None) -> list[Record]:
        """Records of ``kind`` (every kind when None), oldest first."""
        prefix = f"{kind}:" if kind is not None else ""
        with self._lock:
            records = [r for k, r in self._records.items() if k.startswith(prefix)]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


def create_topic(
    bootstrap: str,
    spec: TopicSpec,
    *,
    partitions: int,
    replication: int = 1,
    timeout: float = 30.0,
    client_config: Mapping[str, Any] | None = None,
) -> bool:
    """Create ``spec``'s topic unless it exists; True when this call created it.
    ``partitions`` is used only when the spec leaves the count to the deployment."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, **dict(client_config or {})})
    new = NewTopic(spec.name, spec.partitions or partitions, replication, config=dict(spec.config))
    for future in admin.create_topics([new], request_timeout=timeout).values():
        try:
            future.result(timeout)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                return False
            raise Unavailable(f"cannot create {spec.name}: {exc}") from exc
    return True


#: What a follower hands each record to: (key, value or None for a tombstone, partition, offset).
OnRecord = Callable[[str, "bytes | None", int, int], None]


class CompactedTopicFollower:
    """Reads a compacted topic from the beginning, forever, handing every record to
    ``on_record`` in offset order per partition (a :meth:`VersionedView.apply` or a reader's
    own apply built on it).

    confluent-kafka consumer with a throwaway ``group.id``, every partition assigned manually
    from its first offset and nothing committed: every reader holds the whole (small,
    compacted) topic and sees changes within a poll interval, without a restart or a
    rebalance.

    * :meth:`start` returns once the partitions are assigned; it waits up to ``timeout`` for
      the topic to exist (creating it from its :class:`TopicSpec` when ``create`` is true) and
      raises :class:`Unavailable` if it does not, or if the broker does not answer.
    * :meth:`ready` / :meth:`wait_ready`: every record that was on the topic at start has been
      handed over (each partition read from its earliest offset to its end at start).
    * :meth:`wait_for_offset`: a given record has been handed over (read-your-writes).
    * :attr:`error` is the last consumer error (None after the next record); :meth:`reachable`
      says whether the broker answered within ``stale_after_s``.
    * :meth:`close` stops the thread and the consumer.
    """

    #: How often the reader asks the broker for the topic's end offsets (for :meth:`lag` and
    #: :meth:`reachable`), and how long without an answer makes :meth:`reachable` false.
    probe_interval_s: float = 1.0
    stale_after_s: float = 5.0

    def __init__(
        self,
        bootstrap: str,
        on_record: OnRecord,
        topic: str = RULES,
        *,
        name: str = "control-plane",
        create: bool = False,
        client_config: Mapping[str, Any] | None = None,
        poll_seconds: float = 0.2,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.name = name
        self.create = create
        self.poll_seconds = poll_seconds
        self._on_record = on_record
        self._client_config = dict(client_config or {})
        self._consumer: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._positions: dict[int, int] = {}  # next offset to hand over, per partition
        self._start_highs: dict[int, int] = {}  # end offsets at start: the "ready" line
        self._highs: dict[int, int] = {}  # latest known end offsets
        self._last_contact: float | None = None
        self.applied = 0
        self.error: str | None = None

    def __repr__(self) -> str:
        return f"CompactedTopicFollower({self.bootstrap!r}, {self.topic!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 30.0) -> CompactedTopicFollower:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

        if self._thread is not None:
            return self
        self._stop.clear()
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                **self._client_config,
                "group.id": f"driftline-{self.name}-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                # EOF events tell ready() where the end is even if the last offsets hold no
                # record (compaction, transaction markers)
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            partitions = self._partitions(consumer, timeout)
            for p in partitions:
                low, high = self._watermarks(consumer, p, timeout)
                # Records below the earliest offset are gone (compaction, retention): reading
                # from ``low`` to ``high`` is the whole topic as it was at start.
                self._positions[p] = low
                self._start_highs[p] = self._highs[p] = high
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        except KafkaException as exc:
            consumer.close()
            raise Unavailable(f"Kafka at {self.bootstrap} did not answer: {exc}") from exc
        except BaseException:
            consumer.close()
            raise
        self._last_contact = time.monotonic()
        self._consumer = consumer
        self._thread = threading.Thread(target=self._run, name=f"driftline-{self.name}",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def _partitions(self, consumer: Any, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        created = False
        while True:
            meta = consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
            if meta is not None and meta.error is None and meta.partitions:
                return sorted(meta.partitions)
            if self.create and not created:
                # a driftline topic as its spec says; any other name (tests, a second
                # control plane) like the control plane: one partition, compacted
                spec = TOPIC_SPECS.get(self.topic) or replace(topic_spec(RULES), name=self.topic)
                create_topic(self.bootstrap, spec, partitions=1, timeout=timeout,
                             client_config=self._client_config)  # fmt: skip
                created = True
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"control-plane topic {self.topic} is not available at {self.bootstrap} "
                    f"after {timeout:g} s (create it with `driftline topics create` or start "
                    "the API, which creates it)"
                )
            time.sleep(0.2)

    def _watermarks(self, consumer: Any, partition: int, timeout: float) -> tuple[int, int]:
        from confluent_kafka import KafkaException, TopicPartition

        # A topic created a moment ago may not have a leader yet: retry until the deadline.
        deadline = time.monotonic() + timeout
        while True:
            try:
                return consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=max(1.0, timeout / 10)
                )
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    raise Unavailable(f"no offsets for {self.topic}[{partition}]: {exc}") from exc
                time.sleep(0.2)

    def stop(self) -> None:
        """Ask the reader thread to end without waiting for it (``close`` waits): several
        followers stopped first and closed after end their polls together."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def __enter__(self) -> CompactedTopicFollower:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- progress -----------------------------------------------------------------------------

    def _ready(self) -> bool:
        return all(self._positions.get(p, 0) >= h for p, h in self._start_highs.items())

    def ready(self) -> bool:
        """True once everything on the topic when :meth:`start` ran has been handed over
        (and the reader is still running)."""
        with self._cond:
            return self.alive and self._ready()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """Block until :meth:`ready`; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.alive and self._ready(), timeout)

    def wait_for_offset(self, partition: int, offset: int, timeout: float = 30.0) -> bool:
        """True once the record at ``offset`` of ``partition`` has been handed over."""
        with self._cond:
            return self._cond.wait_for(lambda: self._positions.get(partition, 0) > offset, timeout)

    def lag(self) -> int:
        """Records on the topic not handed over yet (as of the last probe)."""
        with self._cond:
            return sum(max(0, h - self._positions.get(p, 0)) for p, h in self._highs.items())

    def reachable(self) -> bool:
        """True if the reader heard from the broker within the last ``stale_after_s``."""
        last = self._last_contact
        return last is not None and time.monotonic() - last < self.stale_after_s

    def silent_for(self) -> float:
        """Seconds since the reader last heard from the broker."""
        return time.monotonic() - (self._last_contact or 0.0)

    # -- the reader thread --------------------------------------------------------------------

    def _advance(self, partition: int, position: int) -> None:
        with self._cond:
            self._positions[partition] = max(self._positions.get(partition, 0), position)
            self._highs[partition] = max(self._highs.get(partition, 0), position)
            self._cond.notify_all()

    def _probe(self) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            for p in list(self._highs):
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=2.0, cached=False
                )
                with self._cond:
                    self._highs[p] = max(self._highs[p], high)
            self._last_contact = time.monotonic()
        except KafkaException as exc:  # broker away: the client's error_cb logs it
            self.error = str(exc)

    def _run(self) -> None:
        from confluent_kafka import KafkaError

        last_probe = 0.0
        while not self._stop.is_set():
            try:
                msg = self._consumer.poll(self.poll_seconds)
                now = time.monotonic()
                if now - last_probe > self.probe_interval_s:
                    last_probe = now
                    self._probe()  # doubles as the live round trip behind reachable()
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._last_contact = time.monotonic()
                        self._advance(msg.partition(), msg.offset())
                    else:
                        self.error = str(err)
                        log.warning("%s follower: %s", self.name, err)
                    continue
                self._last_contact = time.monotonic()
                key = (msg.key() or b"").decode("utf-8", "replace")
                self._on_record(key, msg.value(), msg.partition(), msg.offset())
                self.applied += 1
                self.error = None
                self._advance(msg.partition(), msg.offset() + 1)
            except Exception as exc:  # keep reading: a dead reader would freeze the view
                self.error = str(exc)
                log.exception("%s follower failed; retrying", self.name)
                time.sleep(0.5)
