"""Real local Kafka brokers (driftline's own manager) for the tests: started, stopped and
restarted on the same data dir and ports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from driftline.local_kafka import LocalKafka, free_port


def start_broker(data_dir: Path) -> LocalKafka:
    """A single-node broker of its own (own ports and data dir), started."""
    return LocalKafka(data_dir=data_dir, port=free_port(), controller_port=free_port()).start()


@contextmanager
def running_broker(data_dir: Path) -> Iterator[LocalKafka]:
    """A broker of its own for the ``with`` block, stopped however the block ends."""
    broker = start_broker(data_dir)
    try:
        yield broker
    finally:
        broker.stop()


def restart_broker(broker: LocalKafka, down_s: float) -> float:
    """Stop the broker, keep it down ``down_s`` seconds, start it again on the same data dir
    and ports; returns when it answers again (the seconds it was unreachable)."""
    stopped = time.monotonic()
    broker.stop()
    time.sleep(max(0.0, down_s - (time.monotonic() - stopped)))
    broker.start(timeout=90)
    return time.monotonic() - stopped
