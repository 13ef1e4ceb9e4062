"""The control plane: every rule, silence, subscription, API key and acknowledgement as the
latest record per key on one compacted Kafka topic (``driftline.rules.v1``).

The record format, the reader's rule ("higher version wins") and the follower that keeps a
view current are the contract every reader shares: :mod:`driftline.schemas.control_plane`.
This module is the writer's side: versioned writes with optimistic concurrency and
read-your-writes, over that view (docs/api.md).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Final

from driftline.schemas.control_plane import (
    KINDS,
    CompactedTopicFollower,
    ControlPlaneError,
    Record,
    Unavailable,
    VersionedView,
    decode_value,
    encode_value,
    now_iso,
    record_headers,
)
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

#: ``expect`` value for creates: the key must not exist yet.
MUST_NOT_EXIST: Final = 0
DEFAULT_RULES_TOPIC: Final = RULES


class VersionConflict(ControlPlaneError):
    """The key's current version is not the one the writer expected."""

    def __init__(self, message: str, current: int | None) -> None:
        super().__init__(message)
        self.current = current


class NotFound(ControlPlaneError):
    pass


class BaseControlPlane(ABC):
    """The in-memory view and the optimistic-concurrency checks; subclasses move the bytes."""

    def __init__(self) -> None:
        self.view = VersionedView()
        # One write at a time: the version check and the write's read-back form one step.
        self._write_lock = threading.Lock()
        self.listeners: list[Callable[[str, Record | None], None]] = []

    # -- reading ----------------------------------------------------------------------------

    def get(self, kind: str, ident: str) -> Record | None:
        return self.view.get(kind, ident)

    def list(self, kind: str) -> list[Record]:
        return self.view.list(kind)

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

    # -- applying records (the shared reader's rule) ----------------------------------------

    def _apply(self, key: str, value: bytes | None, partition: int, offset: int) -> None:
        if self.view.apply(key, value, partition, offset):
            self._notify(key, self.view.by_key(key))

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
                key, encode_value(record), record_headers(kind, record.version, actor, "upsert")
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
                key, None, record_headers(kind, current.version + 1, actor, "delete")
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
                key, encode_value(fixed), record_headers(fixed.kind, fixed.version, fixed.updated_by,
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
        return self.view.by_key(key)


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
        # librdkafka reports a missing broker on every reconnect: log it once per 30 s.
        self._client_config = {
            **quiet_kafka_config(log, f"control plane ({bootstrap})"),
            **dict(client_config or {}),
        }
        self.follower = CompactedTopicFollower(
            bootstrap,
            self._apply,
            topic,
            name="api-view",
            create=create_topic,
            client_config=self._client_config,
        )
        self._producer: Any = None

    def __repr__(self) -> str:
        return f"ControlPlane({self.bootstrap!r}, {self.topic!r})"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> ControlPlane:
        """Connect, find (or create) the topic and start the reader; does not wait to catch up
        (see :meth:`wait_ready`). Raises :class:`Unavailable` when the broker does not answer
        within ``timeout``; calling it again then is safe, which is how ``driftline api``
        waits for a broker that starts after it."""
        from confluent_kafka import Producer

        if self._producer is not None:
            return self
        self.follower.start(timeout)
        # Created only once the broker answered, so a failed attempt leaves nothing behind.
        self._producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                **self._client_config,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
            }
        )
        return self

    def wait_ready(self, timeout: float = 30.0) -> bool:
        return self.follower.wait_ready(timeout)

    def close(self) -> None:
        self.follower.close()
        if self._producer is not None:
            # Short: a write still unacknowledged has already been reported to its caller as
            # Unavailable, and with the broker gone a long flush only delays shutdown.
            self._producer.flush(2)
            self._producer = None

    # -- state ------------------------------------------------------------------------------

    def ready(self) -> bool:
        return self.follower.ready()

    def lag(self) -> int:
        return self.follower.lag()

    def reachable(self) -> bool:
        """True if the reader heard from the broker within the follower's ``stale_after_s``."""
        return self.follower.reachable()

    def problem(self) -> str | None:
        if not self.follower.started:
            return f"control plane not caught up: not connected to Kafka at {self.bootstrap} yet"
        if not self.follower.alive:
            return "control plane not caught up: its reader stopped"
        if not self.reachable():
            silent = self.follower.silent_for()
            return f"Kafka at {self.bootstrap} unreachable (no answer for {silent:.0f} s)"
        if not self.ready():
            return f"control plane not caught up (lag {self.lag()})"
        return None

    @property
    def error(self) -> str | None:
        return self.follower.error

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
        if not self.follower.wait_for_offset(partition, offset, self.write_timeout):
            raise Unavailable(
                f"control-plane view did not see its own write of {key} within "
                f"{self.write_timeout}s"
            )
        return self.view.by_key(key)
