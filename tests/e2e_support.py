"""Helpers for end-to-end tests: a real worker process, offsets, topics and the store it wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from driftline.schemas import Codec, topics

INPUTS = (topics.PREDICTIONS, topics.OUTCOMES)


def worker_env(bootstrap: str, data_dir: Path, app_id: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DRIFTLINE_KAFKA_BOOTSTRAP=bootstrap,
        DRIFTLINE_DATA_DIR=str(data_dir),
        DRIFTLINE_WORKER_ID=app_id,
        DRIFTLINE_WORKER_WEB_PORT="0",
        DRIFTLINE_BATCH_MAX_SECONDS="0.2",
    )
    env.update(extra)
    return env


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - the child writes to it until it ends
    return subprocess.Popen(
        [sys.executable, "-m", "driftline.cli", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(process: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    return process.wait(timeout=60)


def lag(bootstrap: str, group: str, names: tuple[str, ...] = INPUTS) -> int:
    """Messages in ``names`` not yet committed by consumer group ``group``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        metadata = consumer.list_topics(timeout=10)
        partitions = [
            TopicPartition(name, p) for name in names for p in metadata.topics[name].partitions
        ]
        try:
            committed = consumer.committed(partitions, timeout=10)
        except KafkaException:  # coordinator still loading or moving: ask again later
            return sys.maxsize
        total = 0
        for tp in committed:
            try:
                _, high = consumer.get_watermark_offsets(tp, timeout=10)
            except KafkaException:  # a partition just created or moving has no leader yet
                return sys.maxsize
            total += high - max(tp.offset, 0)
        return total
    finally:
        consumer.close()


def wait_for(
    predicate: Any,
    timeout: float,
    what: str,
    worker: subprocess.Popen | None = None,
    log_path: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if worker is not None and worker.poll() is not None:
            tail = log_path.read_text()[-3000:] if log_path else ""
            raise AssertionError(
                f"worker exited with {worker.returncode} while waiting for {what}\n{tail}"
            )
        time.sleep(0.2)  # polled briskly: every wait here ends on an event, not a timer
    tail = log_path.read_text()[-3000:] if log_path else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes | None, dict[str, bytes]]]:
    """Every message now in ``topic``: (value, headers)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
        ends = {
            tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions
        }
        remaining = {p for p, end in ends.items() if end > 0}
        for tp in partitions:
            tp.offset = 0
        consumer.assign(partitions)
        out = []
        deadline = time.monotonic() + 60
        while remaining and time.monotonic() < deadline:
            # short polls: the loop ends on the partitions' known ends, and each poll that
            # returns fewer than 1000 messages waits its whole timeout
            for message in consumer.consume(1000, 0.1):
                if message.error() is not None:
                    continue
                out.append((message.value(), dict(message.headers() or [])))
                if message.offset() + 1 >= ends[message.partition()]:
                    remaining.discard(message.partition())
        return out
    finally:
        consumer.close()


def decode_all(values: list[tuple[bytes | None, dict[str, bytes]]]) -> list[dict[str, Any]]:
    codec = Codec()
    return [codec.decode(value)[1] for value, _ in values]


def query_store(data_dir: Path, queries: dict[str, str]) -> dict[str, Any]:
    """Run queries on the embedded store a stopped worker left in ``data_dir``.

    In a subprocess: chdb binds one data path per process, and this test process may hold
    another."""
    script = (
        "import json, sys, pathlib\n"
        "from driftline.sinks.store import open_store\n"
        "queries = json.loads(sys.argv[2])\n"
        "store = open_store(None, 'driftline', pathlib.Path(sys.argv[1]) / 'clickhouse')\n"
        "out = {k: store.query(q) for k, q in queries.items()}\n"
        "store.close()\n"
        "print(json.dumps(out, default=str))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(data_dir), json.dumps(queries)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
