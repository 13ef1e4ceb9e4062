"""The whole pipeline on one machine: a real Kafka broker, ONE worker process, embedded ClickHouse.

    .venv/bin/python benchmarks/pipeline.py [--events 100000] [--features 20] [--partitions 4]

What it measures, all against the same pre-produced topics:

* driftline: one ``driftline worker`` process, from its first committed offset until the
  consumer group's lag on both input topics is 0 (decode, join, detect, ClickHouse, changelogs,
  output topics; all of it) -> messages/s and prediction events/s.
* ceilings in the same run: raw confluent-kafka consumption of the same topics, the same plus
  ``Codec.decode`` of each message, and an empty faust agent (``take_events``, does nothing)
  which is the most a faust-based worker could do on this machine.
* latency: with the worker caught up, a rate-limited producer at half the measured sustained
  rate, with a feature that jumps by several sigmas at known points for every model; each
  DriftEvent's ``source_event_id`` names the prediction that triggered it, whose produce time
  was recorded -> produce->DriftEvent latency p50/p99.

Prints one markdown table (also written to ``benchmarks/results/pipeline.md``). The broker, the
worker and this process share the machine's cores, so absolute numbers move with the load; the
ratios against the ceilings measured in the same run move much less.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from driftline.schemas import Codec, topics

from driftline.admin import ensure_topics
from driftline.local_kafka import LocalKafka, free_port, kafka_version
from driftline.synthetic import yesterday_ms

INPUTS = (topics.PREDICTIONS, topics.OUTCOMES)
TARGET_PREDICTIONS_PER_S = 50_000
TARGET_P99_S = 2.0
RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.md"
WORKER_REPORT = re.compile(r"processed \d+ messages in \d+ batches \(.*?\)")
WORKER_COUNTERS = re.compile(
    r"^\[(?P<time>[\d-]+ [\d:,]+)\].*processed (?P<messages>\d+) messages in "
    r"(?P<batches>\d+) batches \(.*?; (?P<processing>[\d.]+)s processing, "
    r"(?P<writing>[\d.]+)s writing\)",
    re.MULTILINE,
)


# -- events ----------------------------------------------------------------------------------


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's default partitioner, librdkafka ``murmur2_random``)."""
    m, length = 0x5BD1E995, len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = length - length % 4
    extra = length % 4
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_of(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def model_ids(models: int, partitions: int) -> list[str]:
    """``models`` model ids spread evenly over the partitions (as even as the counts allow),
    so every partition, and so every fetch of the consumer, gets traffic."""
    per = -(-models // partitions)
    taken: dict[int, int] = {}
    out: list[str] = []
    i = 0
    while len(out) < models:
        name = f"model-{i:03d}"
        p = partition_of(name.encode(), partitions)
        if taken.get(p, 0) < per:
            taken[p] = taken.get(p, 0) + 1
            out.append(name)
        i += 1
    return out


@dataclass
class Events:
    """Encoded messages in produce order, with the event id of each (for latency)."""

    topics: list[str] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    predictions: int = 0
    outcomes: int = 0
    drift_points: int = 0  # prediction indices where a model's f00 changes level

    def __len__(self) -> int:
        return len(self.values)


def make_events(
    n: int,
    *,
    models: list[str],
    features: int = 20,
    start: int = 0,
    outcome_lag: int = 50,
    seed: int = 0,
    prefix: str = "bench",
    flip_every: int = 0,
    shift: float = 5.0,
    codec: Codec | None = None,
) -> Events:
    """Predictions ``start .. start+n-1`` (model ``i % len(models)``) and, after prediction i,
    the outcome of prediction ``i - outcome_lag`` of this block.

    Numbers come from numpy in one go; only the Avro encoding is per record (the project's own
    Codec, so the bytes are exactly what producing services send). With ``flip_every`` > 0,
    feature ``f00`` of every model moves between mean 0 and mean ``shift`` (in sigmas) every
    ``flip_every`` of that model's predictions: a known change the detectors must find, over
    and over, so a short run yields many latency samples.
    """
    codec = codec or Codec()
    rng = np.random.default_rng([seed, start])
    index = np.arange(start, start + n)
    x = rng.normal(size=(n, features))
    n_models = len(models)
    drift_points = 0
    if flip_every > 0:
        # each model flips on its own schedule (staggered), so changes spread over time
        model_index = index % n_models
        offset = model_index * flip_every // n_models
        level = ((index // n_models + offset) // flip_every) % 2
        x[:, 0] += shift * level
        for m in range(n_models):
            drift_points += int(np.count_nonzero(np.diff(level[model_index == m])))
    score = rng.random(n)
    wrong = rng.random(n) < 0.1
    predicted = np.where(score >= 0.5, "yes", "no")
    actual = np.where(wrong, np.where(predicted == "yes", "no", "yes"), predicted)
    base_ms = yesterday_ms()
    names = [f"f{j:02d}" for j in range(features)]
    model_of = [models[i % n_models] for i in index.tolist()]
    pred_ids = [f"{prefix}-p{i:010d}" for i in index.tolist()]
    regions = ("eu", "us", "apac")
    out = Events(drift_points=drift_points)
    encode = codec.encode
    for j, (i, row) in enumerate(zip(index.tolist(), x.tolist(), strict=True)):
        model = model_of[j]
        # 1 ms apart: 100k events span 100 s of event time, inside the orphan-outcome TTL
        # (300 s of model clock). A faust worker catching up reads whole partitions at a time,
        # e.g. every outcome before the first prediction, so wider spacing would turn
        # outcomes into orphans and measure the DLQ instead of the join.
        time_ms = base_ms + i
        prediction = {
            "event_id": pred_ids[j],
            "model_id": model,
            "model_version": "1",
            "event_time": time_ms,
            "numeric_features": dict(zip(names, row, strict=True)),
            "categorical_features": {},
            "segments": {"region": regions[i % 3]},
            "prediction_label": str(predicted[j]),
            "prediction_score": float(score[j]),
            "prediction_value": None,
            "probabilities": None,
        }
        out.topics.append(topics.PREDICTIONS)
        out.keys.append(model.encode())
        out.values.append(encode("PredictionEvent", prediction))
        out.ids.append(pred_ids[j])
        out.predictions += 1
        k = j - outcome_lag
        if k >= 0:
            outcome_id = f"{prefix}-o{index[k]:010d}"
            outcome = {
                "event_id": outcome_id,
                "prediction_id": pred_ids[k],
                "model_id": model_of[k],
                "event_time": time_ms,
                "label": str(actual[k]),
                "value": None,
            }
            out.topics.append(topics.OUTCOMES)
            out.keys.append(model_of[k].encode())
            out.values.append(encode("OutcomeEvent", outcome))
            out.ids.append(outcome_id)
            out.outcomes += 1
    return out


# -- producing -------------------------------------------------------------------------------


def producer(bootstrap: str, linger_ms: int, compression: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": linger_ms,
            "compression.type": compression,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            # the Java clients' partitioner: a model's predictions and outcomes co-partitioned
            "partitioner": "murmur2_random",
        }
    )


@dataclass
class Produced:
    delivered: int
    seconds: float
    per_partition: dict[tuple[str, int], int]

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0


def produce_all(bootstrap: str, events: Events, compression: str = "lz4") -> Produced:
    """Everything as fast as librdkafka takes it; returns what the broker acknowledged."""
    p = producer(bootstrap, 50, compression)
    per_partition: dict[tuple[str, int], int] = {}
    errors: list[Any] = []

    def on_delivery(error: Any, message: Any) -> None:
        if error is not None:
            errors.append(error)
            return
        key = (message.topic(), message.partition())
        per_partition[key] = per_partition.get(key, 0) + 1

    started = time.perf_counter()
    for i, (topic, key, value) in enumerate(
        zip(events.topics, events.keys, events.values, strict=True)
    ):
        while True:
            try:
                p.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
        if i % 2000 == 0:
            p.poll(0)
    remaining = p.flush(120)
    seconds = time.perf_counter() - started
    if remaining or errors:
        raise RuntimeError(f"{remaining} undelivered, {len(errors)} errors: {errors[:3]}")
    return Produced(sum(per_partition.values()), seconds, per_partition)


# -- offsets ---------------------------------------------------------------------------------


def end_offsets(bootstrap: str, names: tuple[str, ...] = INPUTS) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{uuid.uuid4()}"})
    try:
        metadata = consumer.list_topics(timeout=10)
        out = {}
        for name in names:
            for p in metadata.topics[name].partitions:
                out[(name, p)] = consumer.get_watermark_offsets(
                    TopicPartition(name, p), timeout=10
                )[1]
        return out
    finally:
        consumer.close()


class GroupOffsets:
    """Committed offsets of a consumer group, read by a client that never joins the group
    (the approach of tests/e2e_support.lag, with one client kept open so polling is cheap)."""

    def __init__(self, bootstrap: str, group: str, partitions: list[tuple[str, int]]) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        self.partitions = [TopicPartition(t, p) for t, p in partitions]

    def committed(self) -> dict[tuple[str, int], int] | None:
        try:
            result = self.consumer.committed(self.partitions, timeout=10)
        except KafkaException:  # coordinator loading or moving: ask again later
            return None
        return {(tp.topic, tp.partition): max(tp.offset, 0) for tp in result}

    def close(self) -> None:
        self.consumer.close()


@dataclass
class GroupRun:
    """Progress of a consumer group between its first and its last observed commit."""

    messages: int  # committed between the two
    by_topic: dict[str, int]
    seconds: float
    startup_seconds: float  # process start -> first commit (startup and the first batch)
    caught_up: bool  # lag reached 0 (else the run was capped)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def topic_rate(self, topic: str) -> float:
        return self.by_topic.get(topic, 0) / self.seconds if self.seconds else 0.0


def measure_group(
    bootstrap: str,
    group: str,
    ends: dict[tuple[str, int], int],
    *,
    started_at: float,
    cap_seconds: float | None = None,
    timeout: float = 600.0,
    process: subprocess.Popen | None = None,
    log_path: Path | None = None,
    poll: float = 0.1,
) -> GroupRun:
    """Watch ``group``'s commits until its lag on ``ends`` is 0 (or ``cap_seconds`` after its
    first commit). Both ends of the window are commit instants: faust commits every few
    seconds, so timing from a commit to a commit keeps that period out of the rate."""
    offsets = GroupOffsets(bootstrap, group, list(ends))
    total = sum(ends.values())
    first: tuple[float, dict[tuple[str, int], int]] | None = None
    last: tuple[float, dict[tuple[str, int], int]] | None = None
    deadline = time.monotonic() + timeout
    try:
        while True:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"group {group} not caught up in {timeout}s{_tail(log_path)}")
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{group} exited with {process.returncode}{_tail(log_path)}")
            committed = offsets.committed()
            if committed is not None and sum(committed.values()) > 0:
                if first is None:
                    first = (now, committed)
                if last is None or committed != last[1]:
                    last = (now, committed)
                done = sum(committed.values()) >= total
                if done or (cap_seconds is not None and now - first[0] >= cap_seconds):
                    break
            time.sleep(poll)
    finally:
        offsets.close()
    assert first is not None and last is not None
    by_topic: dict[str, int] = {}
    for key, offset in last[1].items():
        by_topic[key[0]] = by_topic.get(key[0], 0) + offset - first[1][key]
    return GroupRun(
        messages=sum(by_topic.values()),
        by_topic=by_topic,
        seconds=last[0] - first[0],
        startup_seconds=first[0] - started_at,
        caught_up=sum(last[1].values()) >= total,
    )


def _tail(log_path: Path | None) -> str:
    if log_path is None or not log_path.exists():
        return ""
    return "\n" + log_path.read_text(errors="replace")[-3000:]


# -- ceilings --------------------------------------------------------------------------------


@dataclass
class RawRun:
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def consume_raw(
    bootstrap: str, expected: int, decode: bool = False, codec: Codec | None = None
) -> RawRun:
    """confluent-kafka in a fresh group reading both input topics from the start until
    ``expected`` messages arrived (optionally ``Codec.decode`` of each)."""
    codec = codec or Codec()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        # assign, not subscribe: no group join inside the timed window
        consumer.assign([TopicPartition(t, p, 0) for t, p in end_offsets(bootstrap)])
        count = 0
        started = time.perf_counter()
        deadline = time.monotonic() + 300
        while count < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"raw consumer read {count} of {expected}")
            batch = consumer.consume(num_messages=10_000, timeout=1.0)
            if decode:
                for message in batch:
                    if message.error() is None:
                        codec.decode(
                            message.value(), expected=topics.TOPIC_SCHEMAS[message.topic()]
                        )
            count += len(batch)
        return RawRun(count, time.perf_counter() - started)
    finally:
        consumer.close()


def run_empty_faust_agent(
    bootstrap: str,
    group: str,
    datadir: str,
    partitions: int,
    batch_events: int,
    batch_seconds: float,
) -> None:
    """A faust app with the worker's consumer settings and one agent over the input topics that
    takes batches and does nothing: what faust itself costs per message."""
    import faust

    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=partitions,
        datadir=datadir,
        autodiscover=False,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        broker_max_poll_records=batch_events,
        stream_buffer_maxsize=batch_events * 4,
    )
    inputs = app.topic(
        *INPUTS, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    async def empty(stream: Any) -> None:
        async for _events in stream.take_events(batch_events, within=batch_seconds):
            pass

    app.agent(inputs, name="empty")(empty)
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


# -- processes -------------------------------------------------------------------------------


def spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def worker_env(
    bootstrap: str, data_dir: Path, app_id: str, partitions: int, batch: tuple[int, float]
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DRIFTLINE_KAFKA_BOOTSTRAP=bootstrap,
        DRIFTLINE_DATA_DIR=str(data_dir),
        DRIFTLINE_WORKER_ID=app_id,
        DRIFTLINE_WORKER_WEB_PORT="0",
        DRIFTLINE_TOPIC_PARTITIONS=str(partitions),
        DRIFTLINE_BATCH_MAX_EVENTS=str(batch[0]),
        DRIFTLINE_BATCH_MAX_SECONDS=str(batch[1]),
    )
    return env


def start_worker(
    bootstrap: str, workdir: Path, partitions: int, batch: tuple[int, float]
) -> tuple[str, subprocess.Popen, Path, float]:
    app_id = f"bench-worker-{uuid.uuid4().hex[:8]}"
    log_path = workdir / f"{app_id}.log"
    env = worker_env(bootstrap, workdir / app_id, app_id, partitions, batch)
    started = time.monotonic()
    process = spawn([sys.executable, "-m", "driftline.cli", "worker"], env, log_path)
    return app_id, process, log_path, started


@dataclass(frozen=True)
class WorkerCounters:
    """The worker's cumulative counters from its last report line."""

    at: float  # epoch seconds of the log line
    messages: int
    batches: int
    busy: float  # seconds processing + writing

    @classmethod
    def within(cls, log_path: Path, start: float, end: float) -> list[WorkerCounters]:
        """Report lines logged between epoch seconds ``start`` and ``end``."""
        out = []
        for m in WORKER_COUNTERS.finditer(log_path.read_text(errors="replace")):
            day, _, millis = m["time"].partition(",")
            at = time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
            if start <= at <= end:
                out.append(
                    cls(
                        at=at,
                        messages=int(m["messages"]),
                        batches=int(m["batches"]),
                        busy=float(m["processing"]) + float(m["writing"]),
                    )
                )
        return out


def busy_between(lines: list[WorkerCounters]) -> str:
    """Batches, batch size and the worker's busy share of wall time between its first and
    last report line of a window (it logs every 10 s while busy)."""
    if len(lines) < 2 or lines[-1].batches == lines[0].batches:
        return "n/a (fewer than two of its 10-second report lines fell in the window)"
    before, after = lines[0], lines[-1]
    batches = after.batches - before.batches
    messages = after.messages - before.messages
    wall = after.at - before.at
    busy = after.busy - before.busy
    return (
        f"{batches} batches of {messages / batches:,.0f} messages on average, "
        f"{busy / batches * 1000:,.0f} ms processing+writing each, busy {busy / wall:.0%} of "
        f"{wall:.0f} s wall time (the rest: faust's consumer loop, batch waits, idle)"
    )


def worker_report(log_path: Path) -> str:
    """The worker's own last throughput line (it logs one every 10 s while busy)."""
    found = WORKER_REPORT.findall(log_path.read_text(errors="replace"))
    return found[-1] if found else "(no report line: the run was shorter than 10 s)"


# -- latency ---------------------------------------------------------------------------------


@dataclass
class Latency:
    samples: list[float]  # seconds, one per DriftEvent whose trigger this run produced
    emitted: list[float]  # of which: produce -> the worker produced the DriftEvent (CreateTime)
    produced: int
    seconds: float
    drift_points: int
    drift_events: int  # every DriftEvent seen, matched or not

    def percentile(self, q: float, emitted: bool = False) -> float:
        values = self.emitted if emitted else self.samples
        return float(np.percentile(values, q)) if values else float("nan")


def measure_latency(
    bootstrap: str,
    events: Events,
    rate: float,
    *,
    settle_seconds: float = 5.0,
    compression: str = "lz4",
    codec: Codec | None = None,
) -> Latency:
    """Produce ``events`` at ``rate`` messages/s, recording each one's produce time, while
    reading DriftEvents; latency = time read - produce time of its ``source_event_id``."""
    codec = codec or Codec()
    p = producer(bootstrap, 5, compression)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"latency-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    metadata = consumer.list_topics(topics.DRIFT, timeout=10)
    assignment = []
    for p_id in metadata.topics[topics.DRIFT].partitions:
        tp = TopicPartition(topics.DRIFT, p_id)
        tp.offset = consumer.get_watermark_offsets(tp, timeout=10)[1]  # only new DriftEvents
        assignment.append(tp)
    consumer.assign(assignment)
    produced_at: dict[str, tuple[float, float]] = {}  # event id -> (monotonic, wall clock)
    samples: list[float] = []
    emitted: list[float] = []
    seen = 0

    def read(timeout: float) -> None:
        nonlocal seen
        for message in consumer.consume(num_messages=500, timeout=timeout):
            if message.error() is not None:
                continue
            now = time.monotonic()
            seen += 1
            drift = codec.decode(message.value(), expected=topics.DRIFT_EVENT)[1]
            sent = produced_at.get(drift["source_event_id"])
            if sent is not None:
                samples.append(now - sent[0])
                kind, created_ms = message.timestamp()
                if kind != 0:  # the worker's produce() time, by librdkafka's wall clock
                    emitted.append(created_ms / 1000 - sent[1])

    try:
        started = time.monotonic()
        n = len(events)
        i = 0
        while i < n:
            due = min(n, int((time.monotonic() - started) * rate) + 1)
            while i < due:
                try:
                    p.produce(events.topics[i], events.values[i], events.keys[i])
                except BufferError:
                    p.poll(0.01)
                    continue
                produced_at[events.ids[i]] = (time.monotonic(), time.time())
                i += 1
            p.poll(0)
            read(0.005)
        seconds = time.monotonic() - started
        p.flush(30)
        quiet_until = time.monotonic() + settle_seconds
        while time.monotonic() < quiet_until:
            read(0.1)
    finally:
        consumer.close()
    return Latency(samples, emitted, n, seconds, events.drift_points, seen)


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Config:
    events: int = 100_000
    features: int = 20
    partitions: int = 4
    models: int = 8
    outcome_lag: int = 50
    batch: tuple[int, float] = (5000, 0.5)  # the worker's defaults (settings.py)
    variants: list[tuple[int, float]] = field(default_factory=list)
    variant_seconds: float = 20.0
    faust_seconds: float = 15.0
    latency_seconds: float = 20.0
    settle_seconds: float = 3.0  # reading DriftEvents after the last paced message
    flip_every: int = 60  # per-model predictions between level changes of f00
    shift: float = 5.0
    compression: str = "lz4"
    workdir: Path | None = None
    out: Path | None = RESULTS


@dataclass
class Results:
    config: Config
    produced: Produced
    n_predictions: int
    n_outcomes: int
    raw: RawRun
    raw_decode: RawRun
    faust_empty: GroupRun | None
    worker: GroupRun
    worker_log: str
    variants: list[tuple[tuple[int, float], GroupRun, str]]
    latency: Latency
    latency_rate: float
    latency_busy: str
    latency_predictions: int
    latency_outcomes: int
    stored: dict[str, int]
    phases: dict[str, float]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    @property
    def total(self) -> int:
        return self.n_predictions + self.n_outcomes


@contextlib.contextmanager
def local_broker(workdir: Path, partitions: int) -> Iterator[LocalKafka]:
    kafka = LocalKafka(
        data_dir=workdir / "kafka",
        port=free_port(),
        controller_port=free_port(),
        partitions=partitions,
    ).start()
    try:
        yield kafka
    finally:
        kafka.stop()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(config: Config) -> Results:
    """The whole benchmark; returns every figure (``render`` turns them into the table)."""
    load_before = os.getloadavg()
    phases: dict[str, float] = {}
    tick = time.monotonic()

    def phase(name: str) -> None:
        nonlocal tick
        now = time.monotonic()
        phases[name] = now - tick
        tick = now

    owned = config.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="driftline-bench-")) if owned else config.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with local_broker(workdir, config.partitions) as kafka:
            bootstrap = kafka.bootstrap
            ensure_topics(bootstrap, config.partitions)
            phase("broker start")
            log(f"broker at {bootstrap}; encoding {config.events} predictions")

            models = model_ids(config.models, config.partitions)
            codec = Codec()
            events = make_events(
                config.events,
                models=models,
                features=config.features,
                outcome_lag=config.outcome_lag,
                codec=codec,
            )
            phase("encode")
            produced = produce_all(bootstrap, events, config.compression)
            ends = end_offsets(bootstrap)
            if sum(ends.values()) != len(events) or produced.delivered != len(events):
                raise RuntimeError(f"produced {produced.delivered}, topics hold {ends}")
            phase("produce")
            log(f"produced {produced.delivered} messages at {produced.rate:,.0f}/s")

            raw = consume_raw(bootstrap, len(events))
            raw_decode = consume_raw(bootstrap, len(events), decode=True, codec=codec)
            phase("raw consumers")
            log(f"raw {raw.rate:,.0f}/s, raw+decode {raw_decode.rate:,.0f}/s")

            faust_empty = None
            if config.faust_seconds > 0:
                group = f"bench-faust-{uuid.uuid4().hex[:8]}"
                faust_log = workdir / f"{group}.log"
                started = time.monotonic()
                process = spawn(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--faust-empty-agent",
                        bootstrap,
                        group,
                        str(workdir / group),
                        str(config.partitions),
                        str(config.batch[0]),
                        str(config.batch[1]),
                    ],
                    dict(os.environ),
                    faust_log,
                )
                try:
                    faust_empty = measure_group(
                        bootstrap,
                        group,
                        ends,
                        started_at=started,
                        cap_seconds=config.faust_seconds,
                        process=process,
                        log_path=faust_log,
                    )
                finally:
                    stop(process)
                phase("empty faust agent")
                log(f"empty faust agent {faust_empty.rate:,.0f}/s")

            app_id, worker, worker_log, started = start_worker(
                bootstrap, workdir, config.partitions, config.batch
            )
            try:
                run_ = measure_group(
                    bootstrap, app_id, ends, started_at=started, process=worker, log_path=worker_log
                )
                phase("worker to lag 0")
                report = worker_report(worker_log)
                log(f"worker {run_.rate:,.0f} messages/s; {report}")

                # Half the sustained rate, with f00 changing level at known points per model
                # (a floor for tiny runs, whose whole input fits between two commits)
                latency_rate = max(run_.rate / 2, 100.0)
                n_latency = max(200, int(latency_rate * config.latency_seconds / 2))
                flips = make_events(
                    n_latency,
                    models=models,
                    features=config.features,
                    start=config.events,
                    outcome_lag=config.outcome_lag,
                    seed=1,
                    prefix="lat",
                    flip_every=config.flip_every,
                    shift=config.shift,
                    codec=codec,
                )
                latency_start = time.time()
                latency = measure_latency(
                    bootstrap,
                    flips,
                    latency_rate,
                    settle_seconds=config.settle_seconds,
                    compression=config.compression,
                    codec=codec,
                )
                phase("latency")
                # everything produced is in ClickHouse before the worker stops
                measure_group(
                    bootstrap,
                    app_id,
                    end_offsets(bootstrap),
                    started_at=started,
                    process=worker,
                    log_path=worker_log,
                    timeout=300,
                )
                latency_busy = busy_between(
                    WorkerCounters.within(worker_log, latency_start, time.time())
                )
                log(
                    f"latency: {len(latency.samples)} samples, "
                    f"p50 {latency.percentile(50):.3f}s p99 {latency.percentile(99):.3f}s"
                )
            finally:
                stop(worker)
            stored = stored_counts(workdir / app_id)
            phase("store check")

            variants = []
            for batch in config.variants:
                v_id, v_worker, v_log, v_started = start_worker(
                    bootstrap, workdir, config.partitions, batch
                )
                try:
                    v_run = measure_group(
                        bootstrap,
                        v_id,
                        end_offsets(bootstrap),
                        started_at=v_started,
                        cap_seconds=config.variant_seconds,
                        process=v_worker,
                        log_path=v_log,
                    )
                finally:
                    stop(v_worker)
                variants.append((batch, v_run, worker_report(v_log)))
                log(f"worker batch={batch}: {v_run.rate:,.0f} messages/s")
            phase("batch variants")
    finally:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)
    return Results(
        config=config,
        produced=produced,
        n_predictions=events.predictions,
        n_outcomes=events.outcomes,
        raw=raw,
        raw_decode=raw_decode,
        faust_empty=faust_empty,
        worker=run_,
        worker_log=report,
        variants=variants,
        latency=latency,
        latency_rate=latency_rate,
        latency_busy=latency_busy,
        latency_predictions=flips.predictions,
        latency_outcomes=flips.outcomes,
        stored=stored,
        phases=phases,
        load_before=load_before,
        load_after=os.getloadavg(),
    )


def stored_counts(data_dir: Path) -> dict[str, int]:
    """Rows the (stopped) worker left in embedded ClickHouse; in a subprocess, as chdb binds
    one data path per process."""
    script = (
        "import json, sys, pathlib\n"
        "from driftline.sinks.store import open_store\n"
        "store = open_store(None, 'driftline', pathlib.Path(sys.argv[1]) / 'clickhouse')\n"
        "q = lambda t: store.query(f'SELECT count() FROM {t} FINAL')[0][0]\n"
        "out = {t: int(q(t)) for t in ('predictions', 'outcomes', 'joined_labels')}\n"
        "store.close()\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(data_dir)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


# -- the table -------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def render(r: Results) -> str:
    c = r.config
    w = r.worker
    pred_share = r.n_predictions / r.total
    rows = [
        "| measurement | driftline | ceiling | ratio | target |",
        "|---|---:|---:|---:|---|",
        f"| input messages/s, topic → ClickHouse, one worker vs raw confluent-kafka consume "
        f"| {w.rate:,.0f} | {r.raw.rate:,.0f} | {_ratio(w.rate, r.raw.rate)} | |",
        f"| … vs raw consume + `Codec.decode` | {w.rate:,.0f} | {r.raw_decode.rate:,.0f} "
        f"| {_ratio(w.rate, r.raw_decode.rate)} | |",
    ]
    if r.faust_empty is not None:
        f = r.faust_empty
        rows.append(
            f"| … vs an empty faust agent (`take_events`, does nothing) "
            f"| {w.rate:,.0f} | {f.rate:,.0f} | {_ratio(w.rate, f.rate)} | |"
        )
    pred_rate = w.topic_rate(topics.PREDICTIONS)
    rows.append(
        f"| prediction events/s, one worker (ceiling: raw consume × prediction share) "
        f"| {pred_rate:,.0f} | {r.raw.rate * pred_share:,.0f} "
        f"| {_ratio(pred_rate, r.raw.rate * pred_share)} "
        f"| ≥ {TARGET_PREDICTIONS_PER_S:,} ({'met' if pred_rate >= TARGET_PREDICTIONS_PER_S else 'NOT met'}) |"
    )
    for batch, v, _ in r.variants:
        rows.append(
            f"| input messages/s, worker with batch {batch[0]} events / {batch[1]} s "
            f"({v.seconds:.0f} s window{'' if v.caught_up else ', capped'}) "
            f"| {v.rate:,.0f} | {r.raw.rate:,.0f} | {_ratio(v.rate, r.raw.rate)} | |"
        )
    lat = r.latency
    p99 = lat.percentile(99)
    rows.append(
        f"| produce → DriftEvent p50 / p99 at half load ({r.latency_rate:,.0f} msg/s) "
        f"| {lat.percentile(50):.3f} s / {p99:.3f} s | | "
        f"| p99 < {TARGET_P99_S:g} s ({'met' if p99 < TARGET_P99_S else 'NOT met'}) |"
    )
    lines = [
        f"## driftline pipeline benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"{r.n_predictions:,} predictions ({c.features} numeric features, {c.models} models) + "
        f"{r.n_outcomes:,} outcomes (outcome of prediction i after prediction i+{c.outcome_lag}) "
        f"= {r.total:,} messages on {c.partitions} partitions per topic, {c.compression}; "
        f"produced at {r.produced.rate:,.0f} messages/s. Worker batch {c.batch[0]} events / "
        f"{c.batch[1]} s; window = first → last commit of its group "
        f"({w.seconds:.1f} s, {w.messages:,} messages, started {w.startup_seconds:.1f} s after "
        f"spawn).",
        "",
        *rows,
        "",
        f"Latency: {len(lat.samples)} DriftEvents matched to their triggering prediction "
        f"({lat.drift_events} read, {lat.drift_points} injected level changes of f00 across "
        f"{c.models} models, {lat.produced:,} messages produced over {lat.seconds:.1f} s); "
        f"p50 {lat.percentile(50) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {max(lat.samples, default=float('nan')) * 1000:.0f} ms; of which produce → the "
        f"worker's produce() of the DriftEvent (its CreateTime): p50 "
        f"{lat.percentile(50, emitted=True) * 1000:.0f} ms, p99 "
        f"{lat.percentile(99, emitted=True) * 1000:.0f} ms. The worker's batch wait "
        f"(`take_events` within {c.batch[1]} s, timed from the end of the previous batch) is "
        f"part of it. The worker meanwhile (its own counters): {r.latency_busy}.",
        "",
        f"Worker's own report: `{r.worker_log}`",
    ]
    for batch, _, report in r.variants:
        lines.append(f"Worker with batch {batch[0]} / {batch[1]} s: `{report}`")
    lines += [
        "",
        f"ClickHouse after the run (FINAL): {r.stored}.",
        "",
        f"Environment: {os.cpu_count()} cores shared by the broker (JVM), the worker, the "
        f"producer/consumers of this script and anything else on the machine; load average "
        f"{_load(r.load_before)} before, {_load(r.load_after)} after; Python "
        f"{platform.python_version()}, Kafka {kafka_version()} (KRaft, single node), "
        f"{platform.platform()}.",
        "Phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r.phases.items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def _load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def _batch(text: str) -> tuple[int, float]:
    events, _, seconds = text.partition(":")
    return int(events), float(seconds or 0.5)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--faust-empty-agent"]:  # the child process of the faust ceiling
        bootstrap, group, datadir, partitions, batch_events, batch_seconds = argv[1:7]
        run_empty_faust_agent(
            bootstrap, group, datadir, int(partitions), int(batch_events), float(batch_seconds)
        )
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="prediction events")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--batch", type=_batch, default=(5000, 0.5), help="EVENTS:SECONDS")
    parser.add_argument(
        "--variants",
        default="",
        help="comma-separated EVENTS:SECONDS worker batch settings, each measured for "
        "--variant-seconds after the main run (default none: the run must fit in ~4 min)",
    )
    parser.add_argument("--variant-seconds", type=float, default=20.0)
    parser.add_argument("--faust-seconds", type=float, default=15.0, help="0 skips it")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--compression", default="lz4")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--workdir", type=Path, help="keep logs and data here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    config = Config(
        events=args.events,
        features=args.features,
        partitions=args.partitions,
        models=args.models,
        batch=args.batch,
        variants=[_batch(v) for v in args.variants.split(",") if v.strip()],
        variant_seconds=args.variant_seconds,
        faust_seconds=args.faust_seconds,
        latency_seconds=args.latency_seconds,
        compression=args.compression,
        out=args.out,
        workdir=args.workdir,
    )
    results = run(config)
    table = render(results)
    print(table)
    if config.out is not None:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        config.out.write_text(table)


if __name__ == "__main__":
    main()
