"""Regression (issue 9): a store outage longer than any retry budget while two workers share it.

Before the batch data path was rewritten, 900-1,300 events per run were acknowledged (their
offsets committed) but never stored when the store died mid-stream. The rule now: an offset is
committed only after its epoch landed. Checked directly: while the store is still down, the
events below the group's committed offsets must all be in the store's files (read by serving
the same data dir on a side port the workers do not know), and after the store returns every
event lands exactly once.
"""

from __future__ import annotations

import signal
import time

import pytest
from driftline.schemas import topics
from faults_support import (
    PacedProducer,
    StoreServer,
    WorkerProcess,
    assert_everything_once,
    committed_event_ids,
    fault_seed,
    model_streams,
    record,
    rng_for,
    server_queries,
    stop_all,
    stored_event_ids,
    wait_caught_up,
)

from driftline.admin import ensure_topics
from driftline.local_kafka import free_port

pytestmark = pytest.mark.e2e

def test_store_killed_while_rows_land_loses_no_acknowledged_batch(fresh_kafka, tmp_path):
    seed = fault_seed()
    rng = rng_for(seed, "store-outage")
    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 4)
    store = StoreServer(tmp_path / "store")
    store.start()
    group = f"faults-{seed}-store"
    workers = [
        WorkerProcess(f"w{i}", tmp_path, bootstrap, group, store.url()) for i in (1, 2)
    ]
    steps = 500
    streams = model_streams(6, seed, change_at=250)
    producer = PacedProducer(bootstrap, streams, steps, chunks=12, pause_s=0.6)
    try:
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 120
        while not all(w.get("/ready")[0] == 200 for w in workers):
            assert time.monotonic() < deadline, [w.log_text()[-2000:] for w in workers]
            time.sleep(0.3)
        producer.start()
        # kill once rows are landing, at a seeded point of the stream
        landed_before = rng.randint(300, 1500)
        deadline = time.monotonic() + 120
        while store.count("SELECT count() FROM predictions") < landed_before:
            assert time.monotonic() < deadline, "no rows landed"
            time.sleep(0.1)
        store.kill(signal.SIGKILL)
        down_s = rng.uniform(8.0, 10.0)
        killed = time.monotonic()
        print(f"store SIGKILLed after >= {landed_before} rows; down {down_s:.1f} s")

        # the workers notice (the writer waits; /ready says for what)
        waiting = []
        while time.monotonic() - killed < down_s - 1.0:
            waiting = [w.get("/ready") for w in workers]
            if any(s == 503 and "ClickHouse" in str(b.get("waiting_for")) for s, b in waiting):
                break
            time.sleep(0.3)
        assert any(s == 503 for s, _ in waiting), waiting
        time.sleep(max(0.0, down_s - (time.monotonic() - killed)))

        # Still down: whatever the group committed must already be in the store's files.
        acknowledged = committed_event_ids(bootstrap, group)
        side_port = free_port()
        store.start(port=side_port)
        landed = stored_event_ids(store, side_port)
        store.kill(signal.SIGTERM)
        for topic in (topics.PREDICTIONS, topics.OUTCOMES):
            missing = acknowledged[topic] - landed[topic]
            print(f"{topic}: {len(acknowledged[topic])} committed, {len(landed[topic])} stored")
            assert not missing, f"{len(missing)} committed {topic} events never landed"

        before = len(landed[topics.PREDICTIONS])
        store.start()
        back = time.monotonic()
        deadline = back + 120
        while store.count("SELECT uniqExact(event_id) FROM predictions") <= before:
            assert time.monotonic() < deadline, "no rows landed after the store came back"
            time.sleep(0.1)
        record("store outage: store back -> rows landing again", time.monotonic() - back)

        producer.finish()
        wait_caught_up(bootstrap, group, 180, workers)
        figures = assert_everything_once(
            bootstrap, group, server_queries(store), streams, steps, poison=[]
        )
        print(f"faults survived: store SIGKILL ({down_s:.1f} s down); {figures}")
        for worker in workers:
            assert worker.get("/ready")[0] == 200
            assert worker.kill(signal.SIGTERM) == 0, worker.log_text()[-3000:]
    finally:
        stop_all(workers)
        store.kill(signal.SIGTERM)
