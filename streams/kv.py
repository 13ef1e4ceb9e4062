"""Partition-aware key/value state: the worker's view of a changelog-backed table.

Every write names the source partition it belongs to, so the changelog record lands on the
partition of the events that caused it. That keeps state and input co-partitioned when a
batch spans several partitions, and a partition that moves to another worker brings its
state along.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class PartitionedKV(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def put(self, partition: int, key: bytes, value: bytes) -> None: ...

    def delete(self, partition: int, key: bytes) -> None: ...

    def items(self) -> Iterator[tuple[bytes, bytes]]: ...


class MemoryKV:
    """A plain dict, remembering which partition each key was last written for (tests)."""

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

    def delete(self, partition: int, key: bytes) -> None:
        self.data.pop(key, None)
        self.partition_of[key] = partition
        self.writes += 1

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self.data.items()))


class FaustTableKV:
    """A faust Table used through its store, with changelog records written by us.

    ``table[key] = value`` would pick the partition of faust's *current event*, which in a
    batch is just the last one taken, and would go through faust's per-message producer
    buffer, which caps a worker at about a thousand table writes a second. We update the
    store and produce the changelog record ourselves (librdkafka, explicit partition); faust
    still owns the topic, recovery and the assignment of its partitions.
    """

    def __init__(self, table: Any, producer: Any) -> None:
        self.table = table
        self.producer = producer
        self.topic = table.changelog_topic.get_topic_name()

    def get(self, key: bytes) -> bytes | None:
        return self.table.data.get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.table.data[key] = value
        produce(self.producer, self.topic, key, value, partition=partition)

    def delete(self, partition: int, key: bytes) -> None:
        self.table.data.pop(key, None)
        produce(self.producer, self.topic, key, None, partition=partition)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self.table.data.items()))


def produce(
    producer: Any, topic: str, key: bytes | None, value: bytes | None, **kwargs: Any
) -> None:
    """confluent-kafka produce that waits for room in the local queue instead of failing."""
    while True:
        try:
            producer.produce(topic, key=key, value=value, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


class BufferedKV:
    """Holds a batch's writes until ``commit()``, reading its own writes meanwhile.

    The worker commits table writes only after the batch's rows are in ClickHouse, so a crash
    in between replays the batch against the old state instead of skipping rows that never
    landed.
    """

    _DELETED = object()

    def __init__(self, inner: PartitionedKV) -> None:
        self.inner = inner
        self._writes: dict[bytes, tuple[int, object]] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            value = self._writes[key][1]
            return None if value is self._DELETED else value  # type: ignore[return-value]
        return self.inner.get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self._writes[key] = (partition, value)

    def delete(self, partition: int, key: bytes) -> None:
        self._writes[key] = (partition, self._DELETED)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        merged = dict(self.inner.items())
        for key, (_, value) in self._writes.items():
            if value is self._DELETED:
                merged.pop(key, None)
            else:
                merged[key] = value  # type: ignore[assignment]
        return iter(list(merged.items()))

    @property
    def pending(self) -> int:
        return len(self._writes)

    def commit(self) -> int:
        for key, (partition, value) in self._writes.items():
            if value is self._DELETED:
                self.inner.delete(partition, key)
            else:
                self.inner.put(partition, key, value)  # type: ignore[arg-type]
        n = len(self._writes)
        self._writes.clear()
        return n

    def rollback(self) -> None:
        self._writes.clear()
