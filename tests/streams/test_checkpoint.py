"""Checkpoint chains on a real changelog topic, and a restore that gives way to a stop."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from driftline.streams.checkpoint import Checkpoints, RestoreInterrupted, ensure_changelog
from driftline.streams.effects import RecordProducer

from driftline.local_kafka import free_port


def test_a_stop_interrupts_a_restore_that_waits_for_the_broker() -> None:
    # nothing listens on this port: the restore retries until the worker stops
    checkpoints = Checkpoints(f"127.0.0.1:{free_port()}", "driftline-test-changelog", producer=None)
    stopping = threading.Event()
    threading.Timer(1.0, stopping.set).start()
    started = time.monotonic()
    with pytest.raises(RestoreInterrupted):
        checkpoints.restore(0, stopping=stopping)
    # bounded only so that a failure ends: the product's bound is the README's 15 s grace
    assert time.monotonic() - started < 14.0


# -- checkpoint chains: one full record, then deltas --------------------------------------------
def _changelog(bootstrap: str) -> tuple[Checkpoints, RecordProducer]:
    topic = f"test-changelog-{uuid.uuid4().hex[:8]}"
    ensure_changelog(bootstrap, topic, partitions=1)
    producer = RecordProducer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    return Checkpoints(bootstrap, topic, producer), producer


def _write(checkpoints: Checkpoints, producer: RecordProducer, record: bytes, full: bool) -> None:
    checkpoints.write(0, record, full)
    assert producer.flush(30) == 0 and producer.take_failures() == []


def test_a_chain_restores_in_order_and_a_full_record_starts_a_new_one(kafka_broker) -> None:
    checkpoints, producer = _changelog(kafka_broker.bootstrap)
    big = bytes(range(256)) * 5000  # several chunks (CHUNK_BYTES)
    _write(checkpoints, producer, big, full=True)
    _write(checkpoints, producer, b"delta-1", full=False)
    _write(checkpoints, producer, b"delta-2" * 100_000, full=False)
    reader = Checkpoints(kafka_broker.bootstrap, checkpoints.topic, producer)
    assert reader.restore(0) == [big, b"delta-1", b"delta-2" * 100_000]
    assert [v.version for v in reader.last[0].versions] == [1, 2, 3]

    _write(checkpoints, producer, b"full again", full=True)
    _write(checkpoints, producer, b"delta-5", full=False)
    assert Checkpoints(kafka_broker.bootstrap, checkpoints.topic, None).restore(0) == [
        b"full again",
        b"delta-5",
    ]
    # the restoring side goes on with a full record: its chain is replaced, not extended
    _write(reader, producer, b"after a restore", full=True)
    assert Checkpoints(kafka_broker.bootstrap, checkpoints.topic, None).restore(0) == [
        b"after a restore"
    ]


def test_a_chain_whose_offsets_are_unknown_is_found_by_a_scan(kafka_broker) -> None:
    checkpoints, producer = _changelog(kafka_broker.bootstrap)
    _write(checkpoints, producer, b"full", full=True)
    checkpoints.last[0].versions[0].offset = None  # as if its acknowledgement never came
    _write(checkpoints, producer, b"delta", full=False)
    assert Checkpoints(kafka_broker.bootstrap, checkpoints.topic, None).restore(0) == [
        b"full",
        b"delta",
    ]


def test_a_delta_without_a_chain_is_refused() -> None:
    checkpoints = Checkpoints("127.0.0.1:1", "unused", producer=None)
    with pytest.raises(RuntimeError, match="without its chain"):
        checkpoints.write(0, b"delta", full=False)
