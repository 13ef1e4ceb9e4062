"""Shared fixtures: the real local Kafka broker (started by the project's own manager)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.local_kafka import LocalKafka, free_port


def start_local_kafka(data_dir: Path) -> LocalKafka:
    return LocalKafka(data_dir=data_dir, port=free_port(), controller_port=free_port()).start()


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real single-node Kafka broker for one test module (its own ports and data dir)."""
    broker = start_local_kafka(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def fresh_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real Kafka broker of this test's own (for tests that need empty topics)."""
    broker = start_local_kafka(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker
    finally:
        broker.stop()
