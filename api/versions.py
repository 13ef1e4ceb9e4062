"""The API's side of ``driftline.models.v1``: every published model version, and publishing.

The API follows the compacted topic from its start (the shared
:class:`~driftline.schemas.control_plane.CompactedTopicFollower`) into the same
:class:`~driftline.schemas.model_versions.PublishedVersions` the workers keep, so a version
published twice with different content is refused here (409) before it reaches the topic; the
workers refuse what another writer slips past (DLQ ``version_conflict``). A publish returns
once this process's reader has applied its own record (read-your-writes).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from driftline.schemas import Codec, topics
from driftline.schemas.control_plane import CompactedTopicFollower, Unavailable
from driftline.schemas.model_versions import PublishedVersions
from driftline.sinks.resilience import quiet_kafka_config

__all__ = ["InMemoryModelRegistry", "ModelRegistry"]

log = logging.getLogger(__name__)


class ModelRegistry:
    """Published versions on the real compacted topic, and an idempotent producer."""

    def __init__(
        self,
        bootstrap: str,
        *,
        codec: Codec | None = None,
        write_timeout: float = 30.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.codec = codec or Codec()
        self.write_timeout = write_timeout
        self.published = PublishedVersions()
        self._client_config = quiet_kafka_config(log, f"model versions ({bootstrap})")
        self.follower = CompactedTopicFollower(
            bootstrap,
            self._on_record,
            topics.MODELS,
            name="api-model-versions",
            create=True,
            client_config=self._client_config,
        )
        self._applied = -1
        self._applied_changed = threading.Condition()
        self._producer: Any = None

    def _on_record(self, key: Any, value: bytes | None, partition: int, offset: int) -> None:
        if value is not None:
            try:
                _, record = self.codec.decode(value, expected=topics.MODEL_PUBLISHED)
            except Exception as exc:  # noqa: BLE001 - the workers dead-letter it
                log.warning("skipping model version record at offset %d: %s", offset, exc)
            else:
                self.published.add(record)
        with self._applied_changed:
            self._applied = max(self._applied, offset)
            self._applied_changed.notify_all()

    def start(self, timeout: float = 30.0) -> ModelRegistry:
        from confluent_kafka import Producer

        if self._producer is None:
            self.follower.start(timeout)
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

    def ready(self) -> bool:
        return self.follower.ready()

    def close(self) -> None:
        self.follower.close()
        if self._producer is not None:
            self._producer.flush(5)

    def get(self, model_id: str, version: str) -> dict[str, Any] | None:
        return self.published.get(model_id, version)

    def publish(self, record: dict[str, Any]) -> None:
        """Write ``record`` durably and wait until this process's reader applied it;
        :class:`Unavailable` on broker trouble."""
        if self._producer is None:
            raise Unavailable("the model registry is not started")
        done: dict[str, Any] = {}

        def delivered(error: Any, message: Any) -> None:
            done["error"], done["offset"] = error, message.offset()

        self._producer.produce(
            topics.MODELS,
            key=topics.model_key(record["model_id"], record["version"]),
            value=self.codec.encode(topics.MODEL_PUBLISHED, record),
            on_delivery=delivered,
        )
        if self._producer.flush(self.write_timeout) != 0 or done.get("error") is not None:
            raise Unavailable(f"the broker did not take the version: {done.get('error')}")
        deadline = time.monotonic() + self.write_timeout
        with self._applied_changed:
            while self._applied < done["offset"]:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable("published, but not read back in time")
                self._applied_changed.wait(left)


class InMemoryModelRegistry:
    """The registry without Kafka (tests, tools): publishing is taking the record."""

    def __init__(self) -> None:
        self.published = PublishedVersions()

    def start(self, timeout: float = 30.0) -> InMemoryModelRegistry:
        return self

    def wait_ready(self, timeout: float = 30.0) -> bool:
        return True

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def get(self, model_id: str, version: str) -> dict[str, Any] | None:
        return self.published.get(model_id, version)

    def publish(self, record: dict[str, Any]) -> None:
        self.published.add(record)
