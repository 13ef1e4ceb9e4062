"""A seeded random schedule of every fault at once, against two workers sharing one server store.

The faults, in an order and with durations drawn from DRIFTLINE_FAULT_SEED: a worker SIGKILLed
and restarted, the store SIGKILLed for longer than any retry budget and restarted on the same
data dir and port, the broker stopped and started again, the store slowed down (one worker
reaches it through a proxy that delays every chunk), and poison (garbage bytes, a NaN feature)
in the stream. Events keep flowing throughout. Afterwards the end state must be exactly that of
a fault-free run: every event once, every outcome joined, the same feature drifts, dead letters
for the poison only, no lag. Recovery times are measured and printed.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable

import pytest
from driftline.schemas import topics
from faults_support import (
    PacedProducer,
    Poison,
    StoreServer,
    WorkerProcess,
    assert_everything_once,
    committed,
    fault_seed,
    model_streams,
    produced_counts,
    record,
    rng_for,
    server_queries,
    stop_all,
    wait_caught_up,
)
from support.kafka import restart_broker
from support.proxy import FaultyProxy

from driftline.admin import ensure_topics

pytestmark = pytest.mark.e2e

ALL_PARTITIONS = "assigned partitions [0, 1, 2, 3]"


def _wait(
    predicate: Callable[[], bool], timeout: float, what: str, workers: list[WorkerProcess]
) -> float:
    """Seconds until ``predicate`` holds (polled every 50 ms); fails at once if a worker the
    test did not kill has exited (a worker must survive every fault by itself)."""
    started = time.monotonic()
    while not predicate():
        for worker in workers:
            if worker.process is not None and worker.process.poll() is not None:
                raise AssertionError(
                    f"{worker.name} exited with {worker.process.returncode} while waiting for "
                    f"{what}\n{worker.log_text()[-4000:]}"
                )
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_seeded_fault_schedule_ends_like_a_fault_free_run(fresh_kafka, tmp_path):
    seed = fault_seed()
    rng = rng_for(seed, "schedule")
    broker = fresh_kafka
    bootstrap = broker.bootstrap
    ensure_topics(bootstrap, 4)
    store = StoreServer(tmp_path / "store")
    store.start()
    proxy = FaultyProxy(store.port)  # slows the store down for w2 only
    group = f"faults-{seed}-schedule"
    workers = [
        WorkerProcess("w1", tmp_path, bootstrap, group, store.url()),
        WorkerProcess("w2", tmp_path, bootstrap, group, store.url(proxy.port)),
    ]
    steps = 400
    streams = model_streams(8, seed, change_at=200)
    total_predictions = produced_counts(streams, steps)[0]
    chunks = 24
    poison = Poison()
    producer = PacedProducer(
        bootstrap, streams, steps, chunks=chunks, pause_s=1.7, poison=poison,
        poison_at=rng.randrange(chunks - 2),
    )  # fmt: skip
    faults = ["worker_kill", "store_outage", "broker_restart", "slow_store"]
    rng.shuffle(faults)
    print(f"schedule: {faults}; poison after chunk {producer.poison_at}")

    def landed() -> int:
        return store.count("SELECT uniqExact(event_id) FROM predictions")

    def committed_total() -> int:
        return sum(committed(bootstrap, group, (topics.PREDICTIONS, topics.OUTCOMES)).values())

    def worker_kill() -> None:
        victim, survivor = rng.sample(workers, 2)
        _wait(lambda: bool(survivor.assigned_lines()), 120, f"{survivor.name} to join", workers)
        seen = len(survivor.assigned_lines())
        victim.kill(signal.SIGKILL)
        print(f"SIGKILL {victim.name}")
        taken = _wait(
            lambda: ALL_PARTITIONS in survivor.assigned_lines()[seen:], 90,
            f"{survivor.name} to take every partition over", workers,
        )  # fmt: skip
        record("worker SIGKILL: other worker consuming its partitions", taken)
        time.sleep(rng.uniform(0.5, 2.0))
        victim.start()

    def store_outage() -> None:
        down_s = rng.uniform(8.0, 10.0)
        store.kill(signal.SIGKILL)
        print(f"store SIGKILL, down {down_s:.1f} s")
        time.sleep(down_s)
        store.start()
        back = time.monotonic()
        before = landed()
        if before < total_predictions and not producer.done.is_set():
            _wait(lambda: landed() > before, 120, "rows after the store came back", workers)
            record("store outage: store back -> rows landing again", time.monotonic() - back)

    def broker_restart() -> None:
        down_s = rng.uniform(5.0, 10.0)
        print(f"broker stop, down {down_s:.1f} s")
        restart = restart_broker(broker, down_s)
        back = time.monotonic()
        # rows may land while the broker is down (inserts come first in an epoch); the commit
        # of an epoch cannot, so recovery is measured by the group's committed offsets
        before = committed_total()
        if not producer.done.is_set():
            _wait(lambda: committed_total() > before, 120, "commits after the broker", workers)
            record("broker restart: broker back -> offsets committed again", time.monotonic() - back)
        print(f"broker unreachable {restart:.1f} s")

    def slow_store() -> None:
        proxy.delay_s = rng.uniform(0.05, 0.2)
        slow_s = rng.uniform(4.0, 6.0)
        print(f"store slowed for w2: {proxy.delay_s * 1000:.0f} ms per chunk for {slow_s:.1f} s")
        time.sleep(slow_s)
        proxy.delay_s = 0.0

    actions = {
        "worker_kill": worker_kill,
        "store_outage": store_outage,
        "broker_restart": broker_restart,
        "slow_store": slow_store,
    }
    try:
        for worker in workers:
            worker.start()
        _wait(lambda: all(w.get("/ready")[0] == 200 for w in workers), 120, "ready", workers)
        producer.start()
        _wait(lambda: landed() > 0, 120, "the first rows", workers)
        for fault in faults:
            time.sleep(rng.uniform(0.5, 2.0))
            actions[fault]()
        print(f"faults done; producer finished: {producer.done.is_set()}")
        producer.finish()
        wait_caught_up(bootstrap, group, 180, workers)
        figures = assert_everything_once(
            bootstrap, group, server_queries(store), streams, steps, poison.sent
        )
        print(f"faults survived: {faults} + poison; {figures}")
        # the restarted worker is back in the group before the clean stop (a SIGTERM while
        # Python is still importing ends it with -15, which says nothing about the worker)
        _wait(lambda: all(w.get("/ready")[0] == 200 for w in workers), 120, "ready", workers)
        for worker in workers:
            assert worker.kill(signal.SIGTERM) == 0, worker.log_text()[-3000:]
            assert not re.search(r"Traceback|the data path stopped", worker.log_text()), (
                worker.log_text()[-3000:]
            )
    finally:
        stop_all(workers)
        proxy.close()
        store.kill(signal.SIGTERM)
