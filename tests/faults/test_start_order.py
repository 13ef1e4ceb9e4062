"""Two workers on one host, started the README's way and before their broker and store.

The README's commands: `driftline clickhouse serve --port P --user u:p` for one store that both
workers share through DRIFTLINE_CLICKHOUSE_URL, each worker with its own DRIFTLINE_DATA_DIR and
web port on loopback. Started first, a worker must wait (``/health`` 200, ``/ready`` 503 saying
what it waits for), then process everything once both dependencies are up.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Callable

import pytest
from faults_support import (
    PacedProducer,
    StoreServer,
    WorkerProcess,
    assert_everything_once,
    fault_seed,
    model_streams,
    record,
    server_queries,
    stop_all,
    wait_caught_up,
)

from driftline.admin import ensure_topics
from driftline.local_kafka import LocalKafka, free_port

pytestmark = pytest.mark.e2e


def _eventually(check: Callable[[], bool], timeout: float, what: str, workers: list) -> float:
    started = time.monotonic()
    while not check():
        for worker in workers:
            assert worker.alive(), f"{worker.name} exited\n{worker.log_text()[-4000:]}"
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}: " + str(
            [w.get("/ready") for w in workers]
        )
        time.sleep(0.2)
    return time.monotonic() - started


def _waiting_for(worker: WorkerProcess, what: str) -> bool:
    status, body = worker.get("/ready")
    return status == 503 and what in str((body or {}).get("waiting_for"))


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a route
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_workers_started_before_broker_and_store_wait_then_process_everything(tmp_path):
    seed = fault_seed()
    broker = LocalKafka(data_dir=tmp_path / "kafka", port=free_port(), controller_port=free_port())
    store = StoreServer(tmp_path / "store")
    group = f"faults-{seed}-start"
    workers = [
        WorkerProcess(f"w{i}", tmp_path, broker.bootstrap, group, store.url()) for i in (1, 2)
    ]
    steps = 300
    streams = model_streams(4, seed, change_at=150)
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            _eventually(
                lambda w=worker: _waiting_for(w, "Kafka broker"), 60, "waiting_for broker", workers
            )
            assert worker.get("/health")[0] == 200

        broker.start()
        for worker in workers:
            _eventually(
                lambda w=worker: _waiting_for(w, "ClickHouse"), 90, "waiting_for store", workers
            )
        ensure_topics(broker.bootstrap, 4)
        producer = PacedProducer(broker.bootstrap, streams, steps, chunks=1, pause_s=0)
        producer.start()
        producer.finish()

        store.start()
        back = time.monotonic()
        for worker in workers:
            _eventually(lambda w=worker: w.get("/ready")[0] == 200, 120, "ready", workers)
        record("start before dependencies: store up -> both workers ready", time.monotonic() - back)
        wait_caught_up(broker.bootstrap, group, 180, workers)
        figures = assert_everything_once(
            broker.bootstrap, group, server_queries(store), streams, steps, poison=[]
        )
        print(f"started before broker and store; {figures}")

        # the partitions are shared (range assignment over two members: two each); the topics
        # were created after the workers subscribed, so each worker's metadata refresh (5 s)
        # may trigger one more rebalance: wait for the assignment to settle
        def split_two_and_two() -> bool:
            assigned = [w.get("/ready")[1]["assigned_partitions"] for w in workers]
            return sorted(p for ps in assigned for p in ps) == [0, 1, 2, 3] and all(
                len(ps) == 2 for ps in assigned
            )

        _eventually(split_two_and_two, 60, "two partitions each", workers)
        for worker in workers:
            status, metrics = worker.get("/metrics")
            assert status == 200 and "driftline_worker_messages" in metrics
        # the web servers listen on loopback only (DRIFTLINE_WORKER_WEB_HOST's default)
        address = _non_loopback_address()
        if address is not None:
            for worker in workers:
                with contextlib.suppress(OSError), socket.create_connection(
                    (address, worker.web_port), timeout=2
                ):
                    raise AssertionError(f"{worker.name}'s web port answers on {address}")
        for worker in workers:
            assert worker.kill(signal.SIGTERM) == 0, worker.log_text()[-3000:]
    finally:
        stop_all(workers)
        store.kill(signal.SIGTERM)
        broker.stop()
