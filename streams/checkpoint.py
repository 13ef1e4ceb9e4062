"""Checkpoints of partition state on a compacted changelog topic.

Partition ``p`` of the changelog holds the state of input partition ``p`` (predictions and
outcomes are co-partitioned by model). A checkpoint is written as ``n`` chunk records
(``c:<version>:<i>``, at most ``CHUNK_BYTES`` each, so any broker's default message size fits)
followed by a manifest (``manifest``: version, chunk count, size). Only after the manifest of
version ``v`` do the chunks of version ``v-1`` get tombstones, so compaction can drop them and
a crash at any point leaves the previous complete checkpoint readable.

Restoring reads a window at the end of the partition to find the latest manifest, then the
chunks just before it (one producer writes them back to back, so they are contiguous); only if
that fails does it scan the partition from its start. Restore time is proportional to the state,
not to how long the topic has existed.

This is the worker's own changelog rather than faust tables: the input topics are consumed by
librdkafka's batch consumer (faust's per-message loop capped a worker at ~5k messages/s), so
the component that owns the assignment owns the state that moves with it, as Kafka Streams
and Quix Streams do.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from driftline.sinks.resilience import backoff_delays, quiet_kafka_config

log = logging.getLogger("driftline.checkpoint")


class RestoreInterrupted(Exception):
    """The worker began to stop while a partition's state was being restored."""

CHUNK_BYTES = 512 * 1024
WATERMARK_TIMEOUT_S = 2.0
MANIFEST = b"manifest"
# Compaction soon after a segment closes, so old checkpoints do not pile up on disk.
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": "60000",
    "min.cleanable.dirty.ratio": "0.1",
    "delete.retention.ms": "60000",
}


def changelog_topic(app_id: str) -> str:
    return f"{app_id}-state-changelog"


def ensure_changelog(bootstrap: str, topic: str, partitions: int, replication: int = 1) -> None:
    """Create the changelog topic if it is missing (same partition count as the inputs)."""
    admin = AdminClient(
        {"bootstrap.servers": bootstrap, **quiet_kafka_config(log, f"admin ({bootstrap})")}
    )
    existing = admin.list_topics(timeout=10).topics
    if topic in existing:
        return
    futures = admin.create_topics(
        [NewTopic(topic, partitions, replication, config=dict(TOPIC_CONFIG))]
    )
    for future in futures.values():
        try:
            future.result(30)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


@dataclass(frozen=True)
class Restored:
    version: int  # 0: nothing was checkpointed yet
    chunks: int
    blob: bytes | None


def _chunk_key(version: int, i: int) -> bytes:
    return f"c:{version}:{i}".encode()


class Checkpoints:
    """Writes (through the worker's producer) and restores partition checkpoints."""

    def __init__(self, bootstrap: str, topic: str, producer: Any) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.producer = producer  # streams.effects.RecordProducer
        # partition -> (version, chunks) of the last checkpoint written or restored
        self.last: dict[int, tuple[int, int]] = {}

    def write(self, partition: int, blob: bytes) -> None:
        """Queue checkpoint records for ``partition``; the caller flushes the producer."""
        version, old_chunks = self.last.get(partition, (0, 0))
        version += 1
        n = max(1, math.ceil(len(blob) / CHUNK_BYTES))
        for i in range(n):
            chunk = blob[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]
            self.producer.produce(self.topic, _chunk_key(version, i), chunk, partition=partition)
        manifest = json.dumps({"version": version, "chunks": n, "size": len(blob)}).encode()
        self.producer.produce(self.topic, MANIFEST, manifest, partition=partition)
        for i in range(old_chunks):
            self.producer.produce(
                self.topic, _chunk_key(version - 1, i), None, partition=partition
            )
        self.last[partition] = (version, n)

    def forget(self) -> None:
        self.last.clear()

    def restore(
        self,
        partition: int,
        timeout: float = 60.0,
        wait_s: float = 240.0,
        stopping: threading.Event | None = None,
    ) -> bytes | None:
        """The latest complete checkpoint of ``partition``, or None if there is none.

        Right after a broker restart the group can assign partitions before the broker leads
        the changelog's partitions again (NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE,
        timeouts): such errors are retried for up to ``wait_s`` (inside the input consumer's
        ``max.poll.interval.ms``) instead of ending the input loop and the worker. Once
        ``stopping`` is set it raises RestoreInterrupted within about a second: a SIGTERM while
        the broker is gone mid-restore stopped the worker only after 60 s (seen in CI)."""
        stopping = stopping or threading.Event()
        delays = backoff_delays(0.2, 2.0)
        deadline = time.monotonic() + wait_s
        failed_at: float | None = None
        while True:
            consumer = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": f"{self.topic}-restore",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "fetch.max.bytes": 64 * 1024 * 1024,
                    # a broker going down mid-restore: errors once per interval, not per
                    # reconnect attempt (librdkafka's own stderr lines, every 50 ms)
                    **quiet_kafka_config(log, f"checkpoint restore ({self.bootstrap})"),
                }
            )
            try:
                restored = self._restore(consumer, partition, timeout, stopping)
                break
            except (KafkaException, TimeoutError) as exc:
                if stopping.is_set():
                    raise RestoreInterrupted(f"partition {partition}") from exc
                if time.monotonic() >= deadline:
                    raise
                if failed_at is None:
                    failed_at = time.monotonic()
                    log.warning("restoring partition %d: %s; retrying", partition, exc)
            finally:
                consumer.close()
            if stopping.wait(next(delays)):
                raise RestoreInterrupted(f"partition {partition}")
        if failed_at is not None:
            log.info(
                "partition %d restored after %.1f s of retries",
                partition,
                time.monotonic() - failed_at,
            )
        self.last[partition] = (restored.version, restored.chunks)
        return restored.blob

    def _restore(
        self, consumer: Consumer, partition: int, timeout: float, stopping: threading.Event
    ) -> Restored:
        tp = TopicPartition(self.topic, partition)
        # short blocking calls, retried by restore(), so a stop is seen between them
        low, high = consumer.get_watermark_offsets(tp, timeout=min(timeout, WATERMARK_TIMEOUT_S))
        if high <= low:
            return Restored(0, 0, None)
        window = 64
        while True:
            start = max(low, high - window)
            records = _read(consumer, self.topic, partition, start, high, timeout, stopping)
            manifests = [(o, v) for o, k, v in records if k == MANIFEST and v is not None]
            if manifests:
                offset, value = manifests[-1]
                meta = json.loads(value)
                chunks = _read(
                    consumer,
                    self.topic,
                    partition,
                    offset - meta["chunks"],
                    offset,
                    timeout,
                    stopping,
                )
                expected = [_chunk_key(meta["version"], i) for i in range(meta["chunks"])]
                if [k for _, k, _ in chunks] == expected:
                    blob = b"".join(v or b"" for _, _, v in chunks)
                    if len(blob) == meta["size"]:
                        return Restored(meta["version"], meta["chunks"], blob)
                log.warning("checkpoint of partition %d not contiguous; scanning", partition)
                return self._scan(consumer, partition, low, high, timeout, stopping)
            if start == low:
                return Restored(0, 0, None)
            window *= 4

    def _scan(
        self,
        consumer: Consumer,
        partition: int,
        low: int,
        high: int,
        timeout: float,
        stopping: threading.Event,
    ) -> Restored:
        latest: dict[bytes, bytes | None] = {}
        for _, key, value in _read(consumer, self.topic, partition, low, high, timeout, stopping):
            latest[key] = value
        value = latest.get(MANIFEST)
        if value is None:
            return Restored(0, 0, None)
        meta = json.loads(value)
        parts = [latest.get(_chunk_key(meta["version"], i)) for i in range(meta["chunks"])]
        if any(p is None for p in parts):
            raise RuntimeError(
                f"checkpoint {meta['version']} of {self.topic}[{partition}] is incomplete"
            )
        return Restored(meta["version"], meta["chunks"], b"".join(parts))  # type: ignore[arg-type]


def _read(
    consumer: Consumer,
    topic: str,
    partition: int,
    start: int,
    end: int,
    timeout: float,
    stopping: threading.Event,
) -> list[tuple[int, bytes, bytes | None]]:
    """Records at offsets [start, end) of one partition: (offset, key, value)."""
    if end <= start:
        return []
    consumer.assign([TopicPartition(topic, partition, start)])
    out: list[tuple[int, bytes, bytes | None]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stopping.is_set():
            raise RestoreInterrupted(f"{topic}[{partition}]")
        for message in consumer.consume(1000, 0.5):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return out
                raise KafkaException(error)
            if message.offset() >= end:
                return out
            out.append((message.offset(), message.key() or b"", message.value()))
            if message.offset() + 1 >= end:
                return out
    raise TimeoutError(f"reading {topic}[{partition}] {start}..{end} took over {timeout} s")
