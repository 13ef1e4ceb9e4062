"""Shared fixtures: the real local Kafka broker (started by the project's own manager)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.local_kafka import LocalKafka, free_port, port_open


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


# -- a ClickHouse server for the server-store tests ---------------------------------------
# No ClickHouse server can be installed on our machines, so unless DRIFTLINE_TEST_CLICKHOUSE_URL
# points at one, the suite starts driftline's own ClickHouse HTTP interface over an embedded
# store in a process of its own, and the ServerStore tests run through clickhouse-connect
# over real HTTP against it.
_clickhouse_server: subprocess.Popen | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _clickhouse_server
    if os.environ.get("DRIFTLINE_TEST_CLICKHOUSE_URL"):
        return
    data_dir = Path(tempfile.mkdtemp(prefix="driftline-ch-"))
    port = free_port()
    _clickhouse_server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "driftline.cli",
            "--data-dir",
            str(data_dir),
            "clickhouse",
            "serve",
            "--port",
            str(port),
            "--user",
            "tester:tester",
        ],
        stdout=open(data_dir / "server.log", "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not port_open("127.0.0.1", port):
        if _clickhouse_server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ClickHouse HTTP interface did not start; see {data_dir}")
        time.sleep(0.2)
    os.environ["DRIFTLINE_TEST_CLICKHOUSE_URL"] = f"http://tester:tester@127.0.0.1:{port}"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _clickhouse_server is not None and _clickhouse_server.poll() is None:
        os.killpg(_clickhouse_server.pid, signal.SIGTERM)
        _clickhouse_server.wait(timeout=30)
