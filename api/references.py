"""The API's side of ``driftline.references.v1``: the latest reference per model, and uploads.

Workers and the API read the topic into the same
:class:`driftline.detectors.reference.ReferenceBook` (through the shared
:class:`~driftline.schemas.control_plane.CompactedTopicFollower`), and every uploader — SDK,
CLI, this API — checks and builds a profile with the same
:func:`driftline.detectors.reference.prepare_reference` and publishes the same
``ReferenceProfile`` record (key = model). A write returns once this process's reader has
applied its own record (read-your-writes), so a GET right after a PUT answers with it.

``driftline.detectors.reference`` (numpy/numba) is imported on first use, not at import: the
API's other routes do not pay for it.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from typing import Any

from driftline.schemas import Codec
from driftline.schemas.control_plane import CompactedTopicFollower, Unavailable
from driftline.schemas.topics import REFERENCE_PROFILE, REFERENCES
from driftline.sinks.resilience import quiet_kafka_config

__all__ = ["InMemoryReferences", "ReferenceTopic", "References"]

log = logging.getLogger(__name__)


class References(ABC):
    """The reference book and the publishing steps; subclasses move the bytes."""

    def __init__(self, codec: Codec | None = None) -> None:
        from driftline.detectors.reference import ReferenceBook

        self.codec = codec or Codec()
        self.book = ReferenceBook(self._decode)

    def _decode(self, value: bytes) -> dict[str, Any]:
        return self.codec.decode(value, expected=REFERENCE_PROFILE)[1]

    def get(self, model_id: str) -> Any:
        """The model's latest ``ReferenceEntry`` on the topic, or None."""
        return self.book.entry(model_id)

    def publish(self, profile: Any, *, uploaded_by: str) -> Any:
        """Publish ``profile`` (a built ``ReferenceProfile``) as its model's reference; returns
        the ``ReferenceEntry`` once this process's reader has it. Raises
        :class:`~driftline.schemas.control_plane.Unavailable` on broker trouble."""
        from driftline.detectors.reference import ReferenceEntry

        uploaded_at = int(time.time() * 1000)
        record = profile.to_record(uploaded_at, uploaded_by)
        value = self.codec.encode(REFERENCE_PROFILE, record)
        partition, offset = self._send(profile.model_id, value)
        self._read_back(partition, offset)
        # Ours, even if another upload for the model landed right after it (then that one is
        # the reference now, and a GET says so).
        return ReferenceEntry(profile, uploaded_at, uploaded_by, partition, offset)

    @abstractmethod
    def ready(self) -> bool:
        """True once every reference on the topic at start has been read."""

    @abstractmethod
    def close(self) -> None:
        """Stop reading and release the clients."""

    @abstractmethod
    def _send(self, model_id: str, value: bytes) -> tuple[int, int]:
        """Write one record durably; its (partition, offset)."""

    @abstractmethod
    def _read_back(self, partition: int, offset: int) -> None:
        """Wait until the reader has applied ``offset`` of ``partition``."""


class InMemoryReferences(References):
    """No broker: records go straight to the book (through the same decoding), for tests."""

    def __init__(self, codec: Codec | None = None) -> None:
        super().__init__(codec)
        self._offset = 0

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        """Nothing to release."""
        return None

    def _send(self, model_id: str, value: bytes) -> tuple[int, int]:
        offset, self._offset = self._offset, self._offset + 1
        self.book.on_record(model_id, value, 0, offset)
        return 0, offset

    def _read_back(self, partition: int, offset: int) -> None:
        return None


class ReferenceTopic(References):
    """References on the real compacted topic: a follower from its start into the book and an
    idempotent ``acks=all`` producer (the same client settings as the control plane's)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = REFERENCES,
        *,
        codec: Codec | None = None,
        write_timeout: float = 30.0,
        create_topic: bool = True,
    ) -> None:
        super().__init__(codec)
        self.bootstrap = bootstrap
        self.topic = topic
        self.write_timeout = write_timeout
        self._client_config = quiet_kafka_config(log, f"references ({bootstrap})")
        self.follower = CompactedTopicFollower(
            bootstrap,
            self.book.on_record,
            topic,
            name="api-references",
            create=create_topic,
            client_config=self._client_config,
        )
        self._producer: Any = None

    def __repr__(self) -> str:
        return f"ReferenceTopic({self.bootstrap!r}, {self.topic!r})"

    def start(self, timeout: float = 30.0) -> ReferenceTopic:
        """Connect and start reading (does not wait to catch up); :class:`Unavailable` when
        the broker does not answer in ``timeout``. Safe to call again after a failure."""
        from confluent_kafka import Producer

        if self._producer is not None:
            return self
        self.follower.start(timeout)
        self._producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                **self._client_config,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
                # a profile is up to ~900 kB (detectors.reference.MAX_PROFILE_BYTES)
                "message.max.bytes": 1_000_000,
            }
        )
        return self

    def wait_ready(self, timeout: float = 30.0) -> bool:
        return self.follower.wait_ready(timeout)

    def ready(self) -> bool:
        return self.follower.ready()

    def close(self) -> None:
        self.follower.close()
        if self._producer is not None:
            self._producer.flush(2)
            self._producer = None

    def _send(self, model_id: str, value: bytes) -> tuple[int, int]:
        if self._producer is None:
            raise Unavailable("the references topic is not connected yet")
        delivered: dict[str, Any] = {}

        def on_delivery(err: Any, msg: Any) -> None:
            delivered["err"], delivered["msg"] = err, msg

        try:
            self._producer.produce(
                self.topic, key=model_id.encode(), value=value, on_delivery=on_delivery
            )
        except Exception as exc:  # BufferError, KafkaException
            raise Unavailable(f"reference upload failed: {exc}") from exc
        self._producer.flush(self.write_timeout)
        if "msg" not in delivered:
            raise Unavailable(
                f"reference of {model_id} not acknowledged within {self.write_timeout}s; "
                "it may still apply: read it before retrying"
            )
        if delivered["err"] is not None:
            raise Unavailable(f"reference of {model_id} was not stored: {delivered['err']}")
        return delivered["msg"].partition(), delivered["msg"].offset()

    def _read_back(self, partition: int, offset: int) -> None:
        if not self.follower.wait_for_offset(partition, offset, self.write_timeout):
            raise Unavailable(
                f"the API's reader did not see its own reference within {self.write_timeout}s"
            )
