"""A worker with its own embedded store (chdb in its data dir), SIGKILLed twice mid-stream at
seeded points and restarted, with poison in the stream: the store it reopens holds every event
once and the detections are a fault-free run's."""

from __future__ import annotations

import signal
import time

import pytest
from e2e_support import lag, query_store
from faults_support import (
    PacedProducer,
    Poison,
    WorkerProcess,
    assert_everything_once,
    fault_seed,
    model_streams,
    produced_counts,
    record,
    rng_for,
    stop_all,
    wait_caught_up,
)

from driftline.admin import ensure_topics

pytestmark = pytest.mark.e2e


def test_embedded_store_worker_killed_twice_ends_like_a_fault_free_run(fresh_kafka, tmp_path):
    seed = fault_seed()
    rng = rng_for(seed, "embedded")
    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 4)
    group = f"faults-{seed}-embedded"
    worker = WorkerProcess("embedded", tmp_path, bootstrap, group, store_url=None)
    steps = 500
    streams = model_streams(6, seed, change_at=250)
    predictions, outcomes = produced_counts(streams, steps)
    poison = Poison()
    producer = PacedProducer(
        bootstrap, streams, steps, chunks=8, pause_s=0.8, poison=poison,
        poison_at=rng.randrange(8),
    )  # fmt: skip
    try:
        worker.start()
        producer.start()
        for kill in range(2):
            # kill once the group has committed a seeded share of what is there, mid-stream
            target = rng.randint(300, 1200) + kill * 2000
            deadline = time.monotonic() + 180
            while predictions + outcomes - lag(bootstrap, group) < target:
                assert worker.alive(), worker.log_text()[-4000:]
                assert time.monotonic() < deadline, worker.log_text()[-4000:]
                time.sleep(0.2)
            worker.kill(signal.SIGKILL)
            print(f"SIGKILL after >= {target} committed")
            time.sleep(rng.uniform(0.5, 2.0))
            seen = len(worker.assigned_lines())
            restarted = time.monotonic()
            worker.start()
            while len(worker.assigned_lines()) <= seen:
                assert worker.alive(), worker.log_text()[-4000:]
                assert time.monotonic() - restarted < 120, worker.log_text()[-4000:]
                time.sleep(0.05)
            record("embedded store: restart -> partitions consumed again", time.monotonic() - restarted)
        producer.finish()
        wait_caught_up(bootstrap, group, 180, [worker])
        assert worker.kill(signal.SIGTERM) == 0, worker.log_text()[-3000:]
        figures = assert_everything_once(
            bootstrap, group, lambda queries: query_store(worker.data_dir, queries), streams,
            steps, poison.sent,
        )  # fmt: skip
        print(f"faults survived: 2 SIGKILLs of the embedded-store worker + poison; {figures}")
    finally:
        stop_all([worker])
