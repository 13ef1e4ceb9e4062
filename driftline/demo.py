"""``driftline demo``: a model in production drifts, driftline notices and asks for retraining.

It starts the local Kafka broker (if none is running), a stream worker, and a producing
service: a river Hoeffding tree trained on river's SEA concept stream, then serving live
traffic whose concept changes (``ConceptDriftStream``) while a sensor feature shifts. Outcomes
(labels) arrive a couple of seconds after each prediction, as they do in real life. The demo
prints what the worker publishes — DriftEvents and the RetrainingRequested — as it happens, and
finishes with what ClickHouse holds.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer

from driftline.admin import ensure_topics
from driftline.client import DriftlineProducer
from driftline.local_kafka import LocalKafka, free_port, port_open
from driftline.schemas import Codec, topics
from driftline.settings import Settings

MODEL_ID = "sea-classifier"


@dataclass
class DemoOptions:
    rate: float = 500.0  # predictions per second
    drift_after_seconds: float = 20.0
    label_delay_seconds: float = 2.0
    max_seconds: float = 90.0
    linger_seconds: float = 5.0  # keep streaming this long after the retraining request
    keep: bool = False  # keep the broker, worker and dashboard up until Ctrl-C


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _start_broker(settings: Settings) -> LocalKafka:
    """A fresh broker of the demo's own, on free ports, so any other broker is left alone."""
    _say("starting a local Apache Kafka broker (KRaft) ...")
    broker = LocalKafka(
        data_dir=settings.kafka_data_dir,
        port=free_port(),
        controller_port=free_port(),
        cache_dir=settings.kafka_cache_dir,
        partitions=settings.topic_partitions,
    ).start()
    _say(f"Kafka is up at {broker.bootstrap}")
    return broker


def _start_worker(settings: Settings, log_path: Path, ch_port: int, ch_user: str
                  ) -> subprocess.Popen:  # fmt: skip
    env = dict(os.environ)
    env.update(
        # the worker serves its embedded ClickHouse to the dashboard's API
        DRIFTLINE_CLICKHOUSE_HTTP_PORT=str(ch_port),
        DRIFTLINE_CLICKHOUSE_HTTP_USERS=json.dumps(dict([ch_user.split(":", 1)])),
        DRIFTLINE_DATA_DIR=str(settings.data_dir),
        DRIFTLINE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        DRIFTLINE_WORKER_ID=settings.worker_id,
        DRIFTLINE_WORKER_WEB_PORT="0",
        DRIFTLINE_BATCH_MAX_SECONDS="0.5",
        # the demo's clock runs in seconds, not hours
        DRIFTLINE_RETRAINING_COOLDOWN_SECONDS="600",
        # and its features are watched in windows of 2 s against its first 4 s of traffic
        DRIFTLINE_MONITOR_WINDOW_SIZE="1000",
        DRIFTLINE_MONITOR_AUTO_REFERENCE_EVENTS="2000",
    )
    log = open(log_path, "ab")  # noqa: SIM115 - inherited by the worker process
    return subprocess.Popen(
        [sys.executable, "-m", "driftline.cli", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _start_dashboard(settings: Settings, ch_url: str, log_path: Path) -> tuple[subprocess.Popen, str, str]:
    """``driftline api`` on the worker's store, and a read-only key: (process, URL, key)."""
    from driftline.api import ControlPlane, crud

    port = free_port() if port_open("127.0.0.1", settings.api_port) else settings.api_port
    env = dict(os.environ, DRIFTLINE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
               DRIFTLINE_CLICKHOUSE_URL=ch_url, DRIFTLINE_DATA_DIR=str(settings.data_dir))  # fmt: skip
    log = open(log_path, "ab")  # noqa: SIM115 - inherited by the API process
    process = subprocess.Popen(
        [sys.executable, "-m", "driftline.cli", "api", "--port", str(port), "--loglevel", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        control_plane = ControlPlane(settings.kafka_bootstrap).start()
        try:
            control_plane.wait_ready(30)
            key, _ = crud.create_api_key(control_plane=control_plane, name="demo-viewer",
                                         scopes=["read"], actor="demo")  # fmt: skip
        finally:
            control_plane.close()
    except BaseException:
        os.killpg(process.pid, signal.SIGTERM)
        raise
    return process, f"http://127.0.0.1:{port}/ui", key


def _train_model(seed: int = 42):  # noqa: ANN202 - river's model type
    from river import tree
    from river.datasets import synth

    model = tree.HoeffdingTreeClassifier(grace_period=100)
    for x, y in synth.SEA(seed=seed, variant=0).take(5000):
        model.learn_one(x, y)
    return model


def _live_stream(drift_at: int, seed: int = 7):  # noqa: ANN202 - river's stream type
    from river.datasets import synth

    return synth.ConceptDriftStream(
        stream=synth.SEA(seed=seed, variant=0),
        drift_stream=synth.SEA(seed=seed + 1, variant=3),
        position=drift_at,
        # river computes exp(4 * distance / width): a narrow width overflows far from the change
        width=max(200, drift_at // 100),
        seed=seed,
    )


def _consumer(bootstrap: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"demo-watch-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "latest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topics.DRIFT, topics.RETRAINING])
    return consumer


def _describe(codec: Codec, value: bytes) -> tuple[str, str]:
    name, record = codec.decode(value)
    if name == "DriftEvent":
        return name, (
            f"DRIFT  {record['model_id']}: {record['stream_kind'].lower()} stream "
            f"'{record['stream_name']}' changed ({record['detector']}, value #"
            f"{record['position']})"
        )
    return name, (
        f"RETRAIN  {record['model_id']}: {record['reason']}; train on "
        f"{time.strftime('%H:%M:%S', time.gmtime(record['window_start'] / 1000))}–"
        f"{time.strftime('%H:%M:%S', time.gmtime(record['window_end'] / 1000))} UTC"
    )


def run_demo(settings: Settings, options: DemoOptions | None = None) -> int:
    options = options or DemoOptions()
    # Every run starts clean in a folder of its own: its own broker, worker state and store.
    demo_dir = settings.data_dir / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    broker = _start_broker(settings.model_copy(update={"data_dir": demo_dir}))
    settings = settings.model_copy(
        update={"data_dir": demo_dir, "kafka_bootstrap": broker.bootstrap}
    )
    worker: subprocess.Popen | None = None
    api: subprocess.Popen | None = None
    try:
        ensure_topics(settings.kafka_bootstrap, settings.topic_partitions)
        log_path = settings.data_dir / "worker.log"
        ch_port, ch_user = free_port(), f"demo:{uuid.uuid4().hex}"
        worker = _start_worker(settings, log_path, ch_port, ch_user)
        _say(f"stream worker started (pid {worker.pid}, log {log_path})")
        api, url, key = _start_dashboard(
            settings, f"http://{ch_user}@127.0.0.1:{ch_port}", settings.data_dir / "api.log"
        )
        _say(f"dashboard: {url}  (log in with the read-only key {key})")
        _say("training the demo model (river HoeffdingTree on the SEA concept) ...")
        model = _train_model()
        status = _stream(settings, options, model, worker)
        if options.keep:
            _say(f"keeping everything up; dashboard: {url} (key {key}); Ctrl-C to stop")
            try:
                while worker.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        return status
    finally:
        if api is not None and api.poll() is None:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(timeout=30)
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
            _say("stream worker stopped")
        broker.stop()
        _say("Kafka broker stopped")
        if worker is not None:
            _summary(settings)


def _stream(settings: Settings, options: DemoOptions, model, worker: subprocess.Popen) -> int:  # noqa: ANN001
    codec = Codec()
    drift_at = int(options.rate * options.drift_after_seconds)
    live = iter(_live_stream(drift_at))
    rng = random.Random(3)
    producer = DriftlineProducer(settings.kafka_bootstrap, codec)
    watcher = _consumer(settings.kafka_bootstrap)
    labels: deque[tuple[float, str, bool]] = deque()
    started = time.monotonic()
    sent = wrong = window = 0
    seen_retraining_at: float | None = None
    next_status = started + 2.0
    _say(
        f"serving {options.rate:.0f} predictions/s; the world changes after "
        f"{options.drift_after_seconds:.0f} s (labels arrive {options.label_delay_seconds:.0f} s "
        "late)"
    )
    try:
        while True:
            now = time.monotonic()
            elapsed = now - started
            if worker.poll() is not None:
                _say(f"the worker exited ({worker.returncode}); see its log")
                return 1
            if elapsed > options.max_seconds:
                _say("time is up without a retraining request; see the worker log")
                return 1
            if seen_retraining_at is not None and now - seen_retraining_at > options.linger_seconds:
                return 0
            due = int(elapsed * options.rate) - sent
            for _ in range(max(0, min(due, 1000))):
                x, y = next(live)
                drifted = sent >= drift_at
                features = {f"x{k + 1}": v for k, v in x.items()}
                # a sensor whose calibration shifts together with the concept
                features["sensor"] = rng.gauss(5.0 if drifted else 0.0, 1.0)
                proba = model.predict_proba_one(x)
                predicted = max(proba, key=proba.get) if proba else False
                prediction_id = producer.log_prediction(
                    MODEL_ID,
                    features,
                    str(predicted).lower(),
                    score=float(proba.get(True, 0.0)) if proba else None,
                    segments={"region": rng.choice(["eu", "us", "apac"])},
                )
                labels.append((now + options.label_delay_seconds, prediction_id, y))
                wrong += predicted != y
                window += 1
                sent += 1
            while labels and labels[0][0] <= now:
                _, prediction_id, y = labels.popleft()
                producer.log_outcome(prediction_id, MODEL_ID, label=str(y).lower())
            for message in watcher.consume(100, 0.05):
                if message.error() is None:
                    name, line = _describe(codec, message.value())
                    _say(line)
                    if name == "RetrainingRequested" and seen_retraining_at is None:
                        seen_retraining_at = time.monotonic()
            if now >= next_status:
                phase = "after the change" if sent >= drift_at else "before the change"
                _say(
                    f"sent {sent} predictions; live error rate {wrong / max(window, 1):.1%} "
                    f"({phase})"
                )
                wrong = window = 0
                next_status = now + 5.0
    finally:
        producer.close()
        watcher.close()


def _summary(settings: Settings) -> None:
    from driftline.worker import open_migrated_store

    try:
        store = open_migrated_store(settings)
    except Exception as exc:  # the summary is a courtesy; the run already said what happened
        _say(f"could not open ClickHouse for the summary: {exc}")
        return
    try:
        counts = {
            table: store.query(f"SELECT count() FROM {table} FINAL")[0][0]
            for table in ("predictions", "outcomes", "joined_labels", "drift_events")
        }
        _say("ClickHouse now holds: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        rows = store.query(
            "SELECT stream_kind, stream_name, detector, position FROM drift_events FINAL "
            "WHERE model_id = {model:String} ORDER BY detected_at",
            {"model": MODEL_ID},
        )
        for kind, name, detector, position in rows:
            _say(f"  drift_events: {kind}/{name} by {detector} at value #{position}")
        _say(
            f"query it yourself: driftline's data is in {settings.chdb_path} (embedded ClickHouse)"
        )
    finally:
        store.close()
