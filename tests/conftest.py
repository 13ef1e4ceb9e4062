"""Shared fixtures: one real local Kafka broker for the whole session (started by the project's
own manager), and driftline's ClickHouse HTTP endpoint for the server-store tests.

Every JVM start costs seconds of a 2-core machine, so one broker serves every test that can
share it; tests keep out of each other's way with their own model ids, group ids and worker
ids (``support.kafka.unique``). ``fresh_kafka`` is for the tests that truly need a broker of
their own: empty worker topics (their names are fixed, schemas/topics.py), broker restarts.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.clickhouse import StoreServer
from support.kafka import running_broker

from driftline.admin import ensure_topics
from driftline.local_kafka import LocalKafka


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """The session's shared broker, every driftline topic created up front (2 partitions),
    so each test sees the same topology whatever ran before it."""
    with running_broker(tmp_path_factory.mktemp("kafka")) as broker:
        ensure_topics(broker.bootstrap, partitions=2)
        yield broker


@pytest.fixture
def fresh_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A real Kafka broker of this test's own (for tests that need empty topics)."""
    with running_broker(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


# -- a ClickHouse server for the server-store tests ---------------------------------------
# No ClickHouse server can be installed on our machines, so unless DRIFTLINE_TEST_CLICKHOUSE_URL
# points at one, the suite starts driftline's own ClickHouse HTTP interface over an embedded
# store in a process of its own, and the ServerStore tests run through clickhouse-connect
# over real HTTP against it.
_clickhouse_server: StoreServer | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _clickhouse_server
    if os.environ.get("DRIFTLINE_TEST_CLICKHOUSE_URL"):
        return
    _clickhouse_server = StoreServer(Path(tempfile.mkdtemp(prefix="driftline-ch-")))
    _clickhouse_server.start(timeout=60)
    os.environ["DRIFTLINE_TEST_CLICKHOUSE_URL"] = _clickhouse_server.url()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _clickhouse_server is not None:
        _clickhouse_server.kill(signal.SIGTERM)
        shutil.rmtree(_clickhouse_server.data_dir, ignore_errors=True)  # ~40 MB a run
