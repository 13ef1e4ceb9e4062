"""Shared fixtures: one real local Kafka broker for the whole session (started by the project's
own manager), and driftline's ClickHouse HTTP endpoint for the server-store tests.

Every JVM start costs seconds of a 2-core machine, so one broker serves every test that can
share it; tests keep out of each other's way with their own model ids, group ids and worker
ids (``support.kafka.unique``). ``fresh_kafka`` is for the tests that truly need a broker of
their own: empty worker topics (their names are fixed, schemas/topics.py), broker restarts;
it is one more broker per session process, emptied before each such test.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from support.clickhouse import StoreServer
from support.kafka import running_broker, start_broker

from driftline.admin import ensure_topics
from driftline.local_kafka import LocalKafka


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """The session's shared broker, every driftline topic created up front (2 partitions),
    so each test sees the same topology whatever ran before it."""
    with running_broker(tmp_path_factory.mktemp("kafka")) as broker:
        ensure_topics(broker.bootstrap, partitions=2)
        yield broker


class _EmptiedBroker:
    """One broker per session process for the ``fresh_kafka`` tests, emptied before each:
    every topic but Kafka's own and every consumer group deleted. Deleting takes ~0.1 s where
    a JVM start takes ~3 s, and a test then sees what a new broker shows it: no topic, no
    group, offsets from 0 (a recreated topic is a new topic under the old name). A broker
    that cannot be emptied (down after a test that stopped it, a group with a live member),
    or that a failed test may still be writing to, is replaced by a new one."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.broker: LocalKafka | None = None

    def take(self) -> LocalKafka:
        if self.broker is not None and not self._emptied(self.broker):
            self.close()
        if self.broker is None:
            self.broker = start_broker(self.tmp_path_factory.mktemp("kafka"))
        return self.broker

    def close(self) -> None:
        if self.broker is not None:
            self.broker.stop()
            self.broker = None

    @staticmethod
    def _emptied(broker: LocalKafka) -> bool:
        if not broker.running():
            return False
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})

        def ours() -> list[str]:
            return [t for t in admin.list_topics(timeout=10).topics if not t.startswith("__")]

        def groups() -> list[str]:
            return [g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid]

        def partitions_on_disk() -> list[str]:
            # the broker applies a deletion after the controller acknowledged it (it renames
            # each partition's dir to *-delete then): until it has, a topic recreated under
            # the same name can answer NOT_LEADER, which a new broker never does
            return [
                d.name
                for d in (broker.data_dir / "logs").iterdir()
                if d.is_dir() and not d.name.startswith("__") and not d.name.endswith("-delete")
            ]

        try:
            if names := ours():
                for future in admin.delete_topics(names, operation_timeout=30).values():
                    future.result()
            if found := groups():
                for future in admin.delete_consumer_groups(found).values():
                    future.result()
            deadline = time.monotonic() + 30
            while ours() or groups() or partitions_on_disk():
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
        except Exception:  # noqa: BLE001 - whatever went wrong, a new broker is the answer
            return False
        return True


@pytest.fixture(scope="session")
def _emptied_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_EmptiedBroker]:
    holder = _EmptiedBroker(tmp_path_factory)
    try:
        yield holder
    finally:
        holder.close()


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    if report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture
def fresh_kafka(
    request: pytest.FixtureRequest, _emptied_broker: _EmptiedBroker
) -> Iterator[LocalKafka]:
    """A real Kafka broker for this test alone, with no topic and no consumer group (for tests
    that need empty topics, or stop and restart their broker)."""
    threads = set(threading.enumerate())
    yield _emptied_broker.take()
    # A failed test may have left a producer thread behind: it must not write into the next
    # test's topics, so that broker goes (as every test's own broker did).
    leftover = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
    if leftover or request.node.stash.get(_FAILED, False):
        _emptied_broker.close()


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
