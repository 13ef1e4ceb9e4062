"""Checkpoints of partition state on a compacted changelog topic.

Partition ``p`` of the changelog holds the state of input partition ``p`` (predictions and
outcomes are co-partitioned by model). A checkpoint is a chain of records
(``PartitionState.checkpoint``): one full record, then deltas, each applied to the state the
previous ones describe. Each record (a version) is written as ``n`` chunk records
(``c:<version>:<i>``, at most ``CHUNK_BYTES`` each, so any broker's default message size fits)
followed by a manifest (``manifest``: version, chunk count, size, and the earlier versions of
its chain with the offsets of their manifests). When a full record's manifest is written, the
chunks of the previous chain get tombstones, so compaction can drop them; a crash at any point
leaves the previous complete chain readable.

Restoring reads a window at the end of the partition to find the latest manifest, then its
chain: from the first chunk of the chain's full record to that manifest (one producer writes
each version's chunks back to back before its manifest); only if that fails does it scan the
partition from its start. Restore time is proportional to the state (a chain's deltas add up to
at most its full record), not to how long the topic has existed.

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


@dataclass
class Version:
    """One record of a chain as written: its chunks, size, and its manifest's offset (known
    once the broker acknowledged it; None until then, or if it was not learned)."""

    version: int
    chunks: int
    size: int
    offset: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "chunks": self.chunks, "size": self.size, "offset": self.offset}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Version:
        return cls(data["version"], data["chunks"], data["size"], data.get("offset"))


@dataclass
class Chain:
    """A partition's chain on the changelog: the full record and deltas, oldest first."""

    versions: list[Version]

    @property
    def last(self) -> Version:
        return self.versions[-1]


@dataclass(frozen=True)
class Restored:
    chain: Chain | None  # None: nothing was checkpointed yet
    records: list[bytes] | None


def _chunk_key(version: int, i: int) -> bytes:
    return f"c:{version}:{i}".encode()


class Checkpoints:
    """Writes (through the worker's producer) and restores partition checkpoints."""

    def __init__(self, bootstrap: str, topic: str, producer: Any) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.producer = producer  # streams.effects.RecordProducer
        # partition -> the chain last written or restored
        self.last: dict[int, Chain] = {}

    def write(self, partition: int, blob: bytes, full: bool = True) -> None:
        """Queue the next record of ``partition``'s chain (``full``: a new chain starts); the
        caller flushes the producer."""
        previous = self.last.get(partition)
        if not full and previous is None:
            raise RuntimeError(f"a delta checkpoint of partition {partition} without its chain")
        version = previous.last.version + 1 if previous else 1
        written = Version(version, max(1, math.ceil(len(blob) / CHUNK_BYTES)), len(blob))
        for i in range(written.chunks):
            chunk = blob[i * CHUNK_BYTES : (i + 1) * CHUNK_BYTES]
            self.producer.produce(
                self.topic, _chunk_key(written.version, i), chunk, partition=partition
            )
        earlier = [] if full or previous is None else previous.versions
        # its own offset is the manifest's: a reader knows it from where it read it
        manifest = {
            "version": written.version,
            "chunks": written.chunks,
            "size": written.size,
            "chain": [v.to_json() for v in earlier],
        }

        def delivered(error: Any, message: Any) -> None:
            if error is None:
                written.offset = message.offset()

        self.producer.produce(
            self.topic,
            MANIFEST,
            json.dumps(manifest).encode(),
            partition=partition,
            on_delivered=delivered,
        )
        if full and previous is not None:
            for old in previous.versions:
                for i in range(old.chunks):
                    self.producer.produce(
                        self.topic, _chunk_key(old.version, i), None, partition=partition
                    )
        self.last[partition] = Chain([*earlier, written])

    def forget(self) -> None:
        self.last.clear()

    def restore(
        self,
        partition: int,
        timeout: float = 60.0,
        wait_s: float = 240.0,
        stopping: threading.Event | None = None,
    ) -> list[bytes] | None:
        """The latest complete checkpoint chain of ``partition`` (a full record, then deltas),
        or None if there is none.

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
        if restored.chain is not None:
            self.last[partition] = restored.chain
        return restored.records

    def _restore(
        self, consumer: Consumer, partition: int, timeout: float, stopping: threading.Event
    ) -> Restored:
        tp = TopicPartition(self.topic, partition)
        # short blocking calls, retried by restore(), so a stop is seen between them
        low, high = consumer.get_watermark_offsets(tp, timeout=min(timeout, WATERMARK_TIMEOUT_S))
        if high <= low:
            return Restored(None, None)
        window = 64
        while True:
            start = max(low, high - window)
            records = _read(consumer, self.topic, partition, start, high, timeout, stopping)
            manifests = [(o, v) for o, k, v in records if k == MANIFEST and v is not None]
            if manifests:
                offset, value = manifests[-1]
                chain = _chain_of(json.loads(value), offset)
                first = chain.versions[0]
                if first.offset is not None:
                    start = first.offset - first.chunks
                    latest = {
                        key: record
                        for _, key, record in _read(
                            consumer, self.topic, partition, start, offset, timeout, stopping
                        )
                    }
                    records = _assemble(chain, latest)
                    if records is not None:
                        return Restored(chain, records)
                log.warning("checkpoint of partition %d not contiguous; scanning", partition)
                return self._scan(consumer, partition, low, high, timeout, stopping)
            if start == low:
                return Restored(None, None)
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
        offsets: dict[bytes, int] = {}
        for offset, key, value in _read(
            consumer, self.topic, partition, low, high, timeout, stopping
        ):
            latest[key] = value
            offsets[key] = offset
        value = latest.get(MANIFEST)
        if value is None:
            return Restored(None, None)
        chain = _chain_of(json.loads(value), offsets[MANIFEST])
        records = _assemble(chain, latest)
        if records is None:
            raise RuntimeError(
                f"checkpoint {chain.last.version} of {self.topic}[{partition}] is incomplete"
            )
        return Restored(chain, records)


def _chain_of(manifest: dict[str, Any], offset: int) -> Chain:
    """The chain a manifest (read at ``offset``) names; written before chains existed, a
    manifest has no ``chain``: a full record alone."""
    earlier = [Version.from_json(v) for v in manifest.get("chain", [])]
    return Chain([*earlier, Version(manifest["version"], manifest["chunks"], manifest["size"], offset)])


def _assemble(chain: Chain, latest: dict[bytes, bytes | None]) -> list[bytes] | None:
    """Each version's record from its chunks, or None if one is missing or incomplete."""
    records = []
    for version in chain.versions:
        parts = [latest.get(_chunk_key(version.version, i)) for i in range(version.chunks)]
        if any(p is None for p in parts):
            return None
        record = b"".join(parts)  # type: ignore[arg-type]
        if len(record) != version.size:
            return None
        records.append(record)
    return records


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
