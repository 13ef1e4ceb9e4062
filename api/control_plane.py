"""The control plane: every rule, silence, subscription, API key and acknowledgement as the
latest record per key on one compacted Kafka topic (``driftline.rules.v1``).

Record format (the rule evaluator in the workers reads the same topic; docs/api.md has it too):

* key: ``<kind>:<id>`` in UTF-8, kind one of ``rule``, ``silence``, ``subscription``,
  ``apikey``, ``ack``.
* value: UTF-8 JSON object ``{"kind", "id", "version", "created_at", "updated_at",
  "updated_by", "data"}``; ``version`` starts at 1 and grows by one per write of the key, times
  are RFC 3339 UTC, ``data`` is the entity (for a rule: the ``RuleCreate`` fields, ``for`` by
  its alias).
* tombstone (null value) when the entity is deleted.
* headers on every record, tombstones included (who deleted what is not in a null value):
  ``driftline.kind``, ``driftline.version``, ``driftline.updated_by``, ``driftline.op``
  (``upsert`` | ``delete``).

A reader builds its view by reading every partition from the beginning and applying, in
offset order per key: a tombstone removes the key; a value replaces the current one only if its
``version`` is greater (so a record from a writer that lost a race is ignored, see
:meth:`ControlPlane.put`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from driftline.schemas.topics import RULES
from driftline.sinks.resilience import quiet_kafka_config

__all__ = [
    "KINDS",
    "Record",
    "ControlPlane",
    "InMemoryControlPlane",
    "BaseControlPlane",
    "ControlPlaneError",
    "VersionConflict",
    "NotFound",
    "Unavailable",
    "MUST_NOT_EXIST",
    "encode_value",
    "decode_value",
]

log = logging.getLogger(__name__)

KINDS: Final = ("rule", "silence", "subscription", "apikey", "ack")
#: ``expect`` value for creates: the key must not exist yet.
MUST_NOT_EXIST: Final = 0
DEFAULT_RULES_TOPIC: Final = RULES


class ControlPlaneError(RuntimeError):
    pass


class VersionConflict(ControlPlaneError):
    """The key's current version is not the one the writer expected."""

    def __init__(self, message: str, current: int | None) -> None:
        super().__init__(message)
        self.current = current


class NotFound(ControlPlaneError):
    pass


class Unavailable(ControlPlaneError):
    """The broker did not take the write, or the view did not see it, in time."""


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


def _headers(kind: str, version: int, actor: str, op: str) -> list[tuple[str, bytes]]:
    return [
        ("driftline.kind", kind.encode()),
        ("driftline.version", str(version).encode()),
        ("driftline.updated_by", actor.encode()),
        ("driftline.op", op.encode()),
    ]


class BaseControlPlane(ABC):
    """The in-memory view and the optimistic-concurrency checks; subclasses move the bytes."""

    def __init__(self) -> None:
        self._view: dict[str, Record] = {}
        self._cond = threading.Condition()
        # One write at a time: the version check and the write's read-back form one step.
        self._write_lock = threading.Lock()
        self.listeners: list[Callable[[str, Record | None], None]] = []

    # -- reading ----------------------------------------------------------------------------

    def get(self, kind: str, ident: str) -> Record | None:
        with self._cond:
            return self._view.get(f"{kind}:{ident}")

    def list(self, kind: str) -> list[Record]:
        prefix = f"{kind}:"
        with self._cond:
            records = [r for k, r in self._view.items() if k.startswith(prefix)]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    def count(self, kind: str) -> int:
        return len(self.list(kind))

    @abstractmethod
    def ready(self) -> bool:
        """True once the view has caught up with the topic as it was at start."""

    def lag(self) -> int:
        """Records on the topic the view has not applied yet (0 when unknown)."""
        return 0

    def problem(self) -> str | None:
        """Why the control plane is not ready now, for ``/ready``; None when it is."""
        return None if self.ready() else f"control plane not caught up (lag {self.lag()})"

    @abstractmethod
    def close(self) -> None:
        """Stop reading and release the clients."""

    # -- applying records (the reader's rule, shared with the workers) ----------------------

    def _apply(self, key: str, value: bytes | None, partition: int, offset: int) -> None:
        if value is None:
            with self._cond:
                self._view.pop(key, None)
            self._notify(key, None)
            return
        try:
            record = decode_value(key, value, partition, offset)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping malformed control-plane record %s@%d/%d: %s", key, partition,
                        offset, exc)  # fmt: skip
            return
        with self._cond:
            current = self._view.get(key)
            if current is not None and record.version <= current.version:
                # A writer that lost a race (or a replayed old record): the first wins.
                return
            self._view[key] = record
        self._notify(key, record)

    def _notify(self, key: str, record: Record | None) -> None:
        for listener in self.listeners:
            try:
                listener(key, record)
            except Exception:  # a listener (metrics) must never stop the view
                log.exception("control-plane listener failed")

    # -- writing ----------------------------------------------------------------------------

    def put(
        self,
        kind: str,
        ident: str,
        data: dict[str, Any],
        *,
        actor: str,
        expect: int | None = None,
    ) -> Record:
        """Write a new version of ``kind:ident`` and return it once the view has it.

        ``expect``: ``MUST_NOT_EXIST`` (0) for a create, the current version for an update,
        ``None`` for an unconditional write. Raises :class:`VersionConflict` or
        :class:`NotFound` when the view disagrees, :class:`Unavailable` on broker trouble.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown control-plane kind {kind!r}")
        key = f"{kind}:{ident}"
        with self._write_lock:
            current = self.get(kind, ident)
            self._check(key, current, expect)
            now = now_iso()
            record = Record(
                kind=kind,
                id=ident,
                version=(current.version if current else 0) + 1,
                created_at=current.created_at if current else now,
                updated_at=now,
                updated_by=actor,
                data=data,
            )
            partition, offset = self._send(
                key, encode_value(record), _headers(kind, record.version, actor, "upsert")
            )
            seen = self._read_back(key, partition, offset)
            if seen is None or (seen.partition, seen.offset) != (partition, offset):
                self._repair(key, seen, record.version)
                raise VersionConflict(
                    f"{key} was changed concurrently by another writer; read it and retry",
                    seen.version if seen else None,
                )
            return seen

    def delete(self, kind: str, ident: str, *, actor: str, expect: int | None = None) -> Record:
        """Tombstone ``kind:ident``; returns the record that was deleted."""
        key = f"{kind}:{ident}"
        with self._write_lock:
            current = self.get(kind, ident)
            if current is None:
                raise NotFound(f"{key} does not exist")
            self._check(key, current, expect)
            partition, offset = self._send(
                key, None, _headers(kind, current.version + 1, actor, "delete")
            )
            self._read_back(key, partition, offset)
            return current

    @staticmethod
    def _check(key: str, current: Record | None, expect: int | None) -> None:
        if expect is None:
            return
        if expect == MUST_NOT_EXIST:
            if current is not None:
                raise VersionConflict(f"{key} already exists", current.version)
            return
        if current is None:
            raise NotFound(f"{key} does not exist")
        if current.version != expect:
            raise VersionConflict(
                f"{key} is at version {current.version}, not {expect}", current.version
            )

    def _repair(self, key: str, winner: Record | None, lost_version: int) -> None:
        """After losing a race, re-publish the winner above our version: compaction keeps the
        *last* record per key, which would otherwise be ours, the one every view ignored."""
        if winner is None:
            return
        fixed = Record(
            kind=winner.kind,
            id=winner.id,
            version=max(winner.version, lost_version) + 1,
            created_at=winner.created_at,
            updated_at=winner.updated_at,
            updated_by=winner.updated_by,
            data=winner.data,
        )
        try:
            p, o = self._send(
                key, encode_value(fixed), _headers(fixed.kind, fixed.version, fixed.updated_by,
                                                   "upsert")
            )  # fmt: skip
            self._read_back(key, p, o)
        except ControlPlaneError:
            log.exception("could not repair %s after a lost race", key)

    @abstractmethod
    def _send(
        self, key: str, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> tuple[int, int]:
        """Write one record durably; return its (partition, offset)."""

    @abstractmethod
    def _read_back(self, key: str, partition: int, offset: int) -> Record | None:
        """Wait until the view has applied ``offset`` of ``partition``; the key's record."""


class InMemoryControlPlane(BaseControlPlane):
    """The same view and checks with no broker: for fast unit tests of validation logic."""

    def __init__(self) -> None:
        super().__init__()
        self._offset = 0

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to release."""
        return None

    def _send(
        self, key: str, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> tuple[int, int]:
        offset, self._offset = self._offset, self._offset + 1
        self._apply(key, value, 0, offset)
        return 0, offset

    def _read_back(self, key: str, partition: int, offset: int) -> Record | None:
        with self._cond:
            return self._view.get(key)


class ControlPlane(BaseControlPlane):
    """The control plane on a real Kafka topic.

    A confluent-kafka producer (idempotent, ``acks=all``) writes; a background thread reads the
    topic from the beginning (a fresh ``group.id``, manual assignment, no commits) into the
    view. A write returns only once the view has applied the write's own offset
    (read-your-writes), or raises :class:`Unavailable` after ``write_timeout`` seconds.

    Single writer per key: one API process checks versions against its view under a lock, so
    its writes cannot race each other. With several API replicas two of them can both see
    version N and both write N+1; every reader keeps the first of the two (offset order), and
    the replica whose record was dropped notices on read-back (the view's record for the key is
    not the one at its offset), answers 409 and re-publishes the winner as N+2 so compaction
    cannot resurrect the loser. Run one API replica, or route writes for a key to one replica,
    to avoid the 409s altogether.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str = DEFAULT_RULES_TOPIC,
        *,
        write_timeout: float = 10.0,
        create_topic: bool = True,
        client_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.bootstrap = bootstrap
        self.topic = topic
        self.write_timeout = write_timeout
        self.create_topic = create_topic
        self._client_config = dict(client_config or {})
        self._producer: Any = None
        self._consumer: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._positions: dict[int, int] = {}
        self._start_highs: dict[int, int] = {}
        self._highs: dict[int, int] = {}
        self._error: str | None = None
        # When the reader last heard from the broker (monotonic); None before the first time.
        self._last_contact: float | None = None
        # librdkafka reports a missing broker on every reconnect: log it once per 30 s.
        self._client_config = {
            **quiet_kafka_config(log, f"control plane ({bootstrap})"),
            **self._client_config,
        }

    #: How often the reader asks the broker for the topic's end offsets, and how long without
    #: an answer makes :meth:`reachable` false (``/ready`` then answers 503).
    probe_interval_s: float = 1.0
    stale_after_s: float = 5.0

    def __repr__(self) -> str:
        return f"ControlPlane({self.bootstrap!r}, {self.topic!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> ControlPlane:
        """Connect, find the topic's partitions and start the reader; does not wait to catch up
        (see :meth:`wait_ready`). Raises :class:`Unavailable` (or a ``KafkaException``) when
        the broker does not answer within ``timeout``; calling it again then is safe, which is
        how ``driftline api`` waits for a broker that starts after it."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

        if self._thread is not None:
            return self
        base = {"bootstrap.servers": self.bootstrap, **self._client_config}
        consumer = Consumer(
            {
                **base,
                "group.id": f"driftline-api-view-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
        try:
            partitions = self._partitions(consumer, timeout)
            marks = {p: self._watermarks(consumer, p, timeout) for p in partitions}
        except BaseException:
            consumer.close()
            raise
        # Created only once the broker answered, so a failed attempt leaves nothing behind.
        self._producer = Producer(
            {**base, "enable.idempotence": True, "acks": "all", "linger.ms": 0}
        )
        self._last_contact = time.monotonic()
        for p, (low, high) in marks.items():
            self._start_highs[p] = high
            self._highs[p] = high
            self._positions[p] = low if low == high else 0
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        self._consumer = consumer
        self._thread = threading.Thread(target=self._run, name="driftline-control-plane",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def _partitions(self, consumer: Any, timeout: float) -> list[int]:
        metadata = consumer.list_topics(self.topic, timeout=timeout)
        topic = metadata.topics.get(self.topic)
        if (topic is None or topic.error is not None or not topic.partitions) and (
            self.create_topic
        ):
            self._create_topic(timeout)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                topic = consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
                if topic is not None and topic.error is None and topic.partitions:
                    break
                time.sleep(0.1)
        if topic is None or topic.error is not None or not topic.partitions:
            raise Unavailable(f"control-plane topic {self.topic} is not available")
        return sorted(topic.partitions)

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

    def _create_topic(self, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap, **self._client_config})
        # One partition: the control plane is small, and a single log keeps its order total.
        new = NewTopic(self.topic, 1, 1, config={"cleanup.policy": "compact"})
        for future in admin.create_topics([new], request_timeout=timeout).values():
            try:
                future.result(timeout)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise Unavailable(f"cannot create {self.topic}: {exc}") from exc

    def wait_ready(self, timeout: float = 30.0) -> bool:
        with self._cond:
            return self._cond.wait_for(self.ready, timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self._producer is not None:
            # Short: a write still unacknowledged has already been reported to its caller as
            # Unavailable, and with the broker gone a long flush only delays shutdown.
            self._producer.flush(2)
            self._producer = None

    # -- state ------------------------------------------------------------------------------

    def ready(self) -> bool:
        return (
            self._thread is not None
            and self._thread.is_alive()
            and all(self._positions.get(p, 0) >= h for p, h in self._start_highs.items())
        )

    def lag(self) -> int:
        return sum(max(0, h - self._positions.get(p, 0)) for p, h in self._highs.items())

    def reachable(self) -> bool:
        """True if the reader heard from the broker within the last ``stale_after_s``."""
        last = self._last_contact
        return last is not None and time.monotonic() - last < self.stale_after_s

    def problem(self) -> str | None:
        if self._thread is None:
            return f"control plane not caught up: not connected to Kafka at {self.bootstrap} yet"
        if not self._thread.is_alive():
            return "control plane not caught up: its reader stopped"
        if not self.reachable():
            age = time.monotonic() - (self._last_contact or 0.0)
            return f"Kafka at {self.bootstrap} unreachable (no answer for {age:.0f} s)"
        if not self.ready():
            return f"control plane not caught up (lag {self.lag()})"
        return None

    @property
    def error(self) -> str | None:
        return self._error

    # -- the reader thread --------------------------------------------------------------------

    def _run(self) -> None:
        from confluent_kafka import KafkaError, KafkaException, TopicPartition

        last_probe = 0.0
        while not self._stop.is_set():
            try:
                msg = self._consumer.poll(0.2)
                now = time.monotonic()
                if now - last_probe > self.probe_interval_s:
                    last_probe = now
                    # Doubles as the broker probe behind reachable(): a live round trip.
                    try:
                        for p in list(self._highs):
                            _, high = self._consumer.get_watermark_offsets(
                                TopicPartition(self.topic, p), timeout=2.0, cached=False
                            )
                            self._highs[p] = max(self._highs[p], high)
                        self._last_contact = time.monotonic()
                    except KafkaException as exc:  # broker away: the error_cb logs it, throttled
                        self._error = str(exc)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._last_contact = time.monotonic()
                        with self._cond:
                            p = msg.partition()
                            self._positions[p] = max(self._positions.get(p, 0), msg.offset())
                            self._cond.notify_all()
                    else:
                        self._error = str(err)
                        log.warning("control-plane reader: %s", err)
                    continue
                self._last_contact = time.monotonic()
                key = (msg.key() or b"").decode("utf-8", "replace")
                self._apply(key, msg.value(), msg.partition(), msg.offset())
                with self._cond:
                    p = msg.partition()
                    self._positions[p] = max(self._positions.get(p, 0), msg.offset() + 1)
                    self._highs[p] = max(self._highs.get(p, 0), msg.offset() + 1)
                    self._error = None
                    self._cond.notify_all()
            except Exception as exc:  # keep reading: a dead reader would freeze every write
                self._error = str(exc)
                log.exception("control-plane reader failed; retrying")
                time.sleep(0.5)

    # -- writing ----------------------------------------------------------------------------

    def _send(
        self, key: str, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> tuple[int, int]:
        if self._producer is None:
            raise Unavailable("control plane is not started")
        delivered: dict[str, Any] = {}

        def on_delivery(err: Any, msg: Any) -> None:
            delivered["err"], delivered["msg"] = err, msg

        try:
            self._producer.produce(
                self.topic, key=key.encode(), value=value, headers=headers, on_delivery=on_delivery
            )
        except Exception as exc:  # BufferError, KafkaException
            raise Unavailable(f"control-plane write failed: {exc}") from exc
        self._producer.flush(self.write_timeout)
        if "msg" not in delivered:
            # Drop it if it has not left yet; one already in flight may still land, so the
            # outcome is unknown to the caller (docs/api.md: re-read before retrying).
            try:
                self._producer.purge(in_queue=True, in_flight=False)
                self._producer.poll(0)
            except Exception:  # purging is best effort
                log.exception("purging the control-plane producer failed")
            raise Unavailable(
                f"control-plane write of {key} not acknowledged within {self.write_timeout}s; "
                "it may still apply: read the entity before retrying"
            )
        if delivered["err"] is not None:
            raise Unavailable(f"control-plane write of {key} failed: {delivered['err']}")
        msg = delivered["msg"]
        return msg.partition(), msg.offset()

    def _read_back(self, key: str, partition: int, offset: int) -> Record | None:
        with self._cond:
            seen = self._cond.wait_for(
                lambda: self._positions.get(partition, 0) > offset, self.write_timeout
            )
            if not seen:
                raise Unavailable(
                    f"control-plane view did not see its own write of {key} within "
                    f"{self.write_timeout}s"
                )
            return self._view.get(key)
