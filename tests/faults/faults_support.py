"""Helpers for the fault-injection suite: real processes (broker, ``driftline clickhouse serve``,
workers) that the tests kill, stall and restart, seeded schedules, and the checks that must hold
afterwards whatever happened in between.

Everything here drives real processes; nothing is mocked. Durations are generous waits, never
performance assertions: this machine has 2 shared cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from driftline.detectors.monitor import MonitorConfig
from driftline.schemas import Codec, topics
from driftline.streams.processor import BatchProcessor, ProcessorConfig, SourceMessage
from e2e_support import lag, wait_for
from support.clickhouse import StoreServer

from driftline.local_kafka import free_port
from driftline.synthetic import SyntheticStream

DEFAULT_SEED = 20240917
LAG = 20  # outcomes arrive 20 steps after their predictions

# What the tests measured (recovery times in seconds, faults survived), for the run's summary.
FIGURES: dict[str, list[float]] = {}


def record(what: str, value: float) -> float:
    FIGURES.setdefault(what, []).append(value)
    print(f"MEASURED {what}: {value:.2f}")
    return value

# Small epochs, so a fault always lands between several of them (the brief of issue 9).
FAST_WORKER = {
    "DRIFTLINE_COMMIT_INTERVAL_SECONDS": "0.5",
    "DRIFTLINE_BATCH_MAX_EVENTS": "500",
    "DRIFTLINE_BATCH_MAX_SECONDS": "0.2",
    # Feature drift comes from window tests against each model's first events (no ADWIN on
    # raw features): windows of 100 after a 100-event reference, for streams of a few hundred.
    "DRIFTLINE_MONITOR_WINDOW_SIZE": "100",
    "DRIFTLINE_MONITOR_AUTO_REFERENCE_EVENTS": "100",
}
WINDOWS = MonitorConfig(window_size=100, auto_reference_events=100)


def fault_seed() -> int:
    """The schedule's seed: DRIFTLINE_FAULT_SEED, or a fixed default; printed so a failure
    can be replayed exactly."""
    seed = int(os.environ.get("DRIFTLINE_FAULT_SEED", DEFAULT_SEED))
    print(f"\nDRIFTLINE_FAULT_SEED={seed}")
    return seed


def rng_for(seed: int, test: str) -> random.Random:
    """One generator per test, so adding a draw to one test does not reshuffle the others."""
    return random.Random(f"{seed}:{test}")


# -- workers -----------------------------------------------------------------------------------
class WorkerProcess:
    """``python -m driftline.cli worker`` with its own data dir, web port and log."""

    def __init__(
        self, name: str, root: Path, bootstrap: str, group: str, store_url: str | None,
        **extra: str,
    ) -> None:  # fmt: skip
        self.name = name
        self.data_dir = root / name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = root / f"{name}.log"
        self.web_port = free_port()
        self.env = dict(os.environ)
        self.env.pop("DRIFTLINE_CLICKHOUSE_URL", None)
        self.env.update(
            DRIFTLINE_KAFKA_BOOTSTRAP=bootstrap,
            DRIFTLINE_DATA_DIR=str(self.data_dir),
            DRIFTLINE_WORKER_ID=group,
            DRIFTLINE_WORKER_WEB_HOST="127.0.0.1",
            DRIFTLINE_WORKER_WEB_PORT=str(self.web_port),
            **FAST_WORKER,
            **extra,
        )
        if store_url is not None:
            self.env["DRIFTLINE_CLICKHOUSE_URL"] = store_url
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it until it ends
        log.write(f"\n===== start #{self.starts} =====\n".encode())
        log.flush()
        self.starts += 1
        self.process = subprocess.Popen(
            [sys.executable, "-m", "driftline.cli", "worker"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 60.0) -> int | None:
        """Signal the worker and return its exit code. One that ignores SIGTERM for
        ``timeout`` seconds is SIGKILLed (never leaked past the test) and reported."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            os.killpg(process.pid, sig)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            raise AssertionError(
                f"{self.name} did not stop within {timeout} s of signal {sig}\n"
                f"{self.log_text()[-3000:]}"
            ) from None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, Any]:
        """(status, JSON or text) of the worker's web route; (0, None) when nothing listens."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.web_port}{path}", timeout=5
            ) as response:
                body = response.read().decode()
                status = response.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read().decode(), exc.code
        except OSError:
            return 0, None
        with contextlib.suppress(ValueError):
            return status, json.loads(body)
        return status, body

    def assigned_lines(self) -> list[str]:
        return re.findall(r"assigned partitions \[[0-9, ]*\]", self.log_text())


def stop_all(workers: Iterable[WorkerProcess]) -> None:
    for worker in workers:
        with contextlib.suppress(Exception):
            worker.kill(signal.SIGTERM)


# -- producing ---------------------------------------------------------------------------------
def model_streams(n_models: int, seed: int, change_at: int, n_features: int = 4) -> list[
    SyntheticStream
]:
    """``n_models`` models; even ones drift on ``f00`` at ``change_at``, odd ones never do."""
    return [
        SyntheticStream(
            f"model-{i}", n_features=n_features, seed=seed * 100 + i,
            change_at=change_at if i % 2 == 0 else None,
        )  # fmt: skip
        for i in range(n_models)
    ]


@dataclass
class Poison:
    """Bad input in the stream and the dead-letter reasons it must (only) cause."""

    sent: list[str] = field(default_factory=list)

    def send(self, bootstrap: str, stream: SyntheticStream, step: int) -> None:
        codec = Codec()
        nan = dict(stream.step(step)[0], numeric_features={"f00": float("nan")})
        nan["event_id"] = f"poison-nan-{step}"
        producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
        key = stream.model_id.encode()
        producer.produce(topics.PREDICTIONS, key=key, value=b"\xffgarbage, not Avro")
        producer.produce(topics.PREDICTIONS, key=key, value=codec.encode("PredictionEvent", nan))
        assert producer.flush(120) == 0
        self.sent += ["not_confluent_framed", "non_finite_value"]


class PacedProducer(threading.Thread):
    """Publishes ``steps`` steps of every stream (each prediction, and the outcome ``LAG`` steps
    earlier, as ``driftline.synthetic.publish`` does) in ``chunks`` slices ``pause_s`` apart, so
    rows keep landing while faults happen; ``poison_at`` is the chunk after which the poison
    goes in. One idempotent producer for the whole run: it rides out a broker restart without
    losing or duplicating a record, and every record must be acknowledged in the end."""

    def __init__(
        self, bootstrap: str, streams: list[SyntheticStream], steps: int, chunks: int,
        pause_s: float, poison: Poison | None = None, poison_at: int = -1,
    ) -> None:  # fmt: skip
        super().__init__(name="paced-producer", daemon=True)
        self.bootstrap = bootstrap
        self.streams = streams
        self.steps = steps
        self.chunks = chunks
        self.pause_s = pause_s
        self.poison = poison
        self.poison_at = poison_at
        self.sent = 0
        self.delivered = 0
        self.failures: list[str] = []
        self.error: BaseException | None = None
        self.done = threading.Event()

    def _on_delivery(self, error: Any, _message: Any) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.failures.append(str(error))

    def run(self) -> None:
        codec = Codec()
        producer = Producer(
            {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "linger.ms": 20,
             "compression.type": "lz4", "partitioner": "murmur2_random", "log_level": 2}
        )  # fmt: skip

        def send(topic: str, schema: str, record: dict[str, Any]) -> None:
            while True:
                try:
                    producer.produce(
                        topic, key=record["model_id"].encode(),
                        value=codec.encode(schema, record), on_delivery=self._on_delivery,
                    )  # fmt: skip
                    self.sent += 1
                    return
                except BufferError:
                    producer.poll(0.05)

        try:
            size = -(-self.steps // self.chunks)
            for chunk in range(self.chunks):
                for i in range(chunk * size, min((chunk + 1) * size, self.steps)):
                    for stream in self.streams:
                        prediction, _ = stream.step(i)
                        send(topics.PREDICTIONS, "PredictionEvent", prediction)
                        if i >= LAG:
                            send(topics.OUTCOMES, "OutcomeEvent", stream.step(i - LAG)[1])
                producer.poll(0)
                if chunk == self.poison_at and self.poison is not None:
                    producer.flush(120)  # the poison goes in after this chunk, in order
                    self.poison.send(self.bootstrap, self.streams[0], self.steps + 1)
                time.sleep(self.pause_s)
            producer.flush(240)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            self.error = exc
        finally:
            self.done.set()

    def finish(self, timeout: float = 300.0) -> int:
        assert self.done.wait(timeout), "the producer did not finish"
        if self.error is not None:
            raise self.error
        assert not self.failures, self.failures[:3]
        assert self.delivered == self.sent, f"{self.delivered} of {self.sent} acknowledged"
        return self.delivered


def produced_counts(streams: list[SyntheticStream], steps: int) -> tuple[int, int]:
    """(predictions, outcomes) that the stream produced in total."""
    return len(streams) * steps, len(streams) * (steps - LAG)


# -- checks ------------------------------------------------------------------------------------
def expected_feature_drifts(streams: list[SyntheticStream], steps: int) -> list[str]:
    """FEATURE drift ids of an uninterrupted in-process run over the same events (each model's
    features depend on its own predictions only, in topic order)."""
    codec = Codec()
    out: list[str] = []
    for stream in streams:
        processor = BatchProcessor(codec, ProcessorConfig(profiles=WINDOWS))
        messages = [
            SourceMessage(topics.PREDICTIONS, 0, i, b"", codec.encode("PredictionEvent", p))
            for i, (p, _) in enumerate(stream.events(steps))
        ]
        result = processor.process(messages)
        out += [d["event_id"] for d in result.drift_events if d["stream_kind"] == "FEATURE"]
    return sorted(out)


def read_records(bootstrap: str, topic: str) -> list[tuple[int, int, bytes | None, dict]]:
    """Every record now in ``topic``: (partition, offset, value, headers)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"faults-reader-{time.monotonic_ns()}",
         "enable.auto.commit": False, "enable.partition.eof": True}
    )  # fmt: skip
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        partitions = [TopicPartition(topic, p, 0) for p in metadata.topics[topic].partitions]
        ends = {
            tp.partition: consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in partitions
        }
        remaining = {p for p, end in ends.items() if end > 0}
        consumer.assign(partitions)
        out = []
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            # short polls: the loop ends on the partitions' known ends, and each poll that
            # returns fewer than 1000 messages waits its whole timeout
            for message in consumer.consume(1000, 0.1):
                if message.error() is not None:
                    continue
                out.append(
                    (message.partition(), message.offset(), message.value(),
                     dict(message.headers() or []))
                )  # fmt: skip
                if message.offset() + 1 >= ends[message.partition()]:
                    remaining.discard(message.partition())
        assert not remaining, f"could not read {topic} to its end"
        return out
    finally:
        consumer.close()


def committed(bootstrap: str, group: str, names: Iterable[str]) -> dict[tuple[str, int], int]:
    """The group's committed offset per input partition (0 where nothing is committed)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        metadata = consumer.list_topics(timeout=30)
        partitions = [
            TopicPartition(name, p) for name in names for p in metadata.topics[name].partitions
        ]
        deadline = time.monotonic() + 60
        while True:
            try:
                found = consumer.committed(partitions, timeout=30)
                break
            except KafkaException as exc:
                # right after a broker restart the group coordinator is still loading
                # (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS): ask again
                if not exc.args[0].retriable() and exc.args[0].code() not in _COORDINATOR_MOVING:
                    raise
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in found}
    finally:
        consumer.close()


_COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


def committed_event_ids(bootstrap: str, group: str) -> dict[str, set[str]]:
    """Event ids of every message below the group's committed offsets, per input topic: what
    the group has acknowledged as processed (poison and undecodable records left out)."""
    codec = Codec()
    offsets = committed(bootstrap, group, (topics.PREDICTIONS, topics.OUTCOMES))
    out: dict[str, set[str]] = {}
    for topic in (topics.PREDICTIONS, topics.OUTCOMES):
        ids = set()
        for partition, offset, value, _ in read_records(bootstrap, topic):
            if offset < offsets[(topic, partition)]:
                with contextlib.suppress(Exception):
                    ids.add(codec.decode(value)[1]["event_id"])
        out[topic] = ids
    return out


def stored_event_ids(store: StoreServer, port: int | None = None) -> dict[str, set[str]]:
    return {
        topics.PREDICTIONS: {
            r[0] for r in store.query("SELECT DISTINCT event_id FROM predictions", port)
        },
        topics.OUTCOMES: {
            r[0] for r in store.query("SELECT DISTINCT event_id FROM outcomes", port)
        },
    }


def wait_caught_up(bootstrap: str, group: str, timeout: float, workers: list[WorkerProcess]) -> None:
    def done() -> bool:
        for worker in workers:
            if worker.process is not None and worker.process.poll() is not None:
                raise AssertionError(
                    f"{worker.name} exited with {worker.process.returncode}\n"
                    f"{worker.log_text()[-4000:]}"
                )
        return lag(bootstrap, group) == 0

    try:
        wait_for(done, timeout, f"group {group} to catch up")
    except AssertionError as exc:
        tails = "\n".join(f"--- {w.name}\n{w.log_text()[-3000:]}" for w in workers)
        raise AssertionError(f"{exc}\n{tails}") from None


def server_queries(store: StoreServer) -> Callable[[dict[str, str]], dict[str, Any]]:
    return lambda queries: {name: store.query(sql) for name, sql in queries.items()}


def assert_everything_once(
    bootstrap: str, group: str, query: Callable[[dict[str, str]], dict[str, Any]],
    streams: list[SyntheticStream], steps: int, poison: list[str],
) -> dict[str, Any]:  # fmt: skip
    """The end state every fault schedule must reach: each event stored once under FINAL, every
    outcome joined, the fault-free run's feature drifts, dead letters for the poison only,
    nothing left unconsumed. ``query`` runs named queries (one round for an embedded store,
    which is read in a subprocess)."""
    predictions, outcomes = produced_counts(streams, steps)
    assert lag(bootstrap, group) == 0
    found = query(
        {
            "predictions": "SELECT count(), uniqExact(event_id) FROM predictions FINAL",
            "outcomes": "SELECT count(), uniqExact(event_id) FROM outcomes FINAL",
            "joined": "SELECT count(), uniqExact(outcome_id) FROM joined_labels FINAL",
            "drifts": "SELECT DISTINCT event_id FROM drift_events FINAL "
            "WHERE stream_kind = 'FEATURE'",
        }
    )
    assert found["predictions"] == [[predictions, predictions]]
    assert found["outcomes"] == [[outcomes, outcomes]]
    assert found["joined"] == [[outcomes, outcomes]]
    codec = Codec()
    drifts = [codec.decode(v)[1] for _, _, v, _ in read_records(bootstrap, topics.DRIFT)]
    feature_ids = sorted({d["event_id"] for d in drifts if d["stream_kind"] == "FEATURE"})
    expected = expected_feature_drifts(streams, steps)
    assert expected, "the streams were meant to drift"
    assert feature_ids == expected
    assert sorted(r[0] for r in found["drifts"]) == expected
    # A dead letter is an output record like any other: at-least-once, so an epoch replayed
    # after a fault may send it again; its source headers identify it (what consumers dedupe on).
    letters = read_records(bootstrap, topics.DLQ)
    unique = {
        tuple(h.get(k, b"").decode() for k in (
            topics.HEADER_REASON, topics.HEADER_SOURCE_TOPIC, topics.HEADER_SOURCE_PARTITION,
            topics.HEADER_SOURCE_OFFSET,
        ))  # fmt: skip
        for _, _, _, h in letters
    }
    reasons = sorted(reason for reason, *_ in unique)
    assert reasons == sorted(poison), reasons
    return {
        "predictions": predictions, "outcomes": outcomes, "feature_drifts": len(expected),
        "dead_letters": len(letters),
    }  # fmt: skip
