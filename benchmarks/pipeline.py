"""The whole pipeline on one machine: a real Kafka broker, ONE worker process, embedded ClickHouse.

    flock /tmp/driftline-broker.lock .venv/bin/python benchmarks/pipeline.py [--predictions 200000]

A backlog of predictions (20 numeric features, 4 models, one outcome each) on a co-located
broker, in two layouts on the same topics, one after the other:

(a) PredictionBatch/OutcomeBatch records of ~1000 rows (what the SDK sends; built with
    ``client.prediction_columns`` and ``Codec.encode_columns_split``);
(b) one PredictionEvent/OutcomeEvent per message (what producers in other languages send).

Each backlog is produced while the worker is stopped; the worker (same group, same data dir,
restarted: state from its changelog, Numba kernels from the on-disk cache, warmed once on a
small input of both layouts) is then timed from its "assigned partitions" log line (its state
restored, right before its first fetch) until its consumer group's committed offsets reach the
backlog's end; ClickHouse's counts are checked right after (the worker serves its embedded
store over HTTP). The worker commits only after every effect landed, so lag 0 means the rows
are in ClickHouse.

Peers and ceilings on the same topic ranges, in the same run:

* raw confluent-kafka ``consume(num_messages=...)`` of each layout;
* the I/O floor: consume + ``Codec.decode_columns`` + insert into ``predictions`` and
  ``outcomes`` (driftline.sinks.columns helpers, embedded store); no join, no detection;
* the plain consumer a user would write in an afternoon, on layout (b): consume(5000),
  fastavro, a dict join, river's ADWIN item by item on the 20 feature streams and the error
  stream of each model, insert into chdb via Arrow, commit;
* an empty faust agent (why faust is not on the hot path);
* produce -> DriftEvent latency p50/p99 with the SDK's ``log_prediction`` at half of the
  worker's layout-(a) rate, with a feature that jumps by several sigmas at known points;
* the SDK's cost per ``log_prediction`` call and its bulk rate;
* where the worker's time goes: its own counters (input thread processing, writer thread
  writing) and ``BatchProcessor.process`` under cProfile in this process, on the same
  messages, split into decode / join / detect / insert columns.

Prints one markdown table (also written to ``benchmarks/results/pipeline.md``). The broker, the
worker and this script share the machine's cores, so absolute numbers move with the load;
ratios against peers measured in the same run move much less.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import platform
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from driftline.schemas import Codec, topics

from driftline.admin import ensure_topics
from driftline.client import DriftlineProducer, outcome_columns, prediction_columns
from driftline.local_kafka import LocalKafka, free_port, kafka_version
from driftline.synthetic import yesterday_ms

INPUTS = (topics.PREDICTIONS, topics.OUTCOMES)
RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.md"
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
TARGET_PER_S = 100_000  # predictions/s, layout (a), one worker
TARGET_FLOOR = 0.5  # worker (a) / I/O floor
TARGET_PEER_A = 10.0  # worker (a) / plain consumer
TARGET_PEER_B = 2.0  # worker (b) / plain consumer
TARGET_P99_S = 1.0
REGIONS = ("eu", "us", "apac")
ASSIGNED = re.compile(r"^\[(?P<time>[\d-]+ [\d:,]+)\].*assigned partitions", re.MULTILINE)
# the worker's status line, every 10 s while busy (streams/app.py)
WORKER_LINE = re.compile(
    r"^\[(?P<time>[\d-]+ [\d:,]+)\].*processed (?P<messages>\d+) messages \(.*?; "
    r"(?P<processing>[\d.]+) s processing, (?P<writing>[\d.]+) s writing in total\)",
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
class Data:
    """Predictions ``start .. start+n-1`` as arrays: prediction i belongs to model
    ``i % len(models)``, happened at ``base + i`` ms, and its outcome ``lag`` ms later."""

    models: list[str]
    index: np.ndarray
    x: np.ndarray  # (n, features)
    score: np.ndarray
    predicted: np.ndarray  # "yes"/"no"
    actual: np.ndarray
    time_ms: np.ndarray
    lag: int
    names: list[str]
    drift_points: int = 0

    def __len__(self) -> int:
        return len(self.index)

    def model_of(self, i: int) -> str:
        return self.models[int(self.index[i]) % len(self.models)]

    def prediction_id(self, i: int) -> str:
        return f"bench-p{int(self.index[i]):010d}"

    def outcome_id(self, i: int) -> str:
        return f"bench-o{int(self.index[i]):010d}"


def make_data(
    start: int,
    n: int,
    models: list[str],
    features: int,
    *,
    base_ms: int,
    lag: int = 50,
    flip_every: int = 0,
    shift: float = 5.0,
) -> Data:
    """With ``flip_every`` > 0, feature ``f00`` of every model moves between mean 0 and mean
    ``shift`` (sigmas) every ``flip_every`` of that model's predictions (staggered per model):
    known changes the detectors must find, over and over, for latency samples."""
    rng = np.random.default_rng([7, start])
    index = np.arange(start, start + n)
    x = rng.normal(size=(n, features))
    drift_points = 0
    if flip_every > 0:
        model_index = index % len(models)
        offset = model_index * flip_every // len(models)
        level = ((index // len(models) + offset) // flip_every) % 2
        x[:, 0] += shift * level
        for m in range(len(models)):
            drift_points += int(np.count_nonzero(np.diff(level[model_index == m])))
    score = rng.random(n)
    wrong = rng.random(n) < 0.1
    predicted = np.where(score >= 0.5, "yes", "no")
    actual = np.where(wrong, np.where(predicted == "yes", "no", "yes"), predicted)
    return Data(
        models=models,
        index=index,
        x=x,
        score=score,
        predicted=predicted,
        actual=actual,
        time_ms=base_ms + index,
        lag=lag,
        names=[f"f{j:02d}" for j in range(features)],
        drift_points=drift_points,
    )


@dataclass
class Records:
    """Encoded messages in produce order."""

    topics: list[str] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    predictions: int = 0
    outcomes: int = 0
    encode_seconds: float = 0.0

    def add(self, topic: str, key: bytes, value: bytes) -> None:
        self.topics.append(topic)
        self.keys.append(key)
        self.values.append(value)

    def __len__(self) -> int:
        return len(self.values)

    def __add__(self, other: Records) -> Records:
        return Records(
            self.topics + other.topics,
            self.keys + other.keys,
            self.values + other.values,
            self.predictions + other.predictions,
            self.outcomes + other.outcomes,
        )


def batch_records(data: Data, codec: Codec, rows: int) -> Records:
    """Layout (a): per model, PredictionBatch records of ``rows`` rows, each followed by the
    OutcomeBatch of the same predictions; models interleaved record by record."""
    out = Records()
    per_model: list[list[tuple[bytes, bytes]]] = []
    model_index = data.index % len(data.models)
    for m, model in enumerate(data.models):
        idx = np.flatnonzero(model_index == m)
        pred_ids = [data.prediction_id(i) for i in idx.tolist()]
        started = time.perf_counter()
        cols = prediction_columns(
            model,
            {name: data.x[idx, j] for j, name in enumerate(data.names)},
            event_time=data.time_ms[idx],
            event_ids=pred_ids,
            labels=data.predicted[idx],
            scores=data.score[idx],
            segments={"region": np.array(REGIONS)[data.index[idx] % 3]},
        )
        outs = outcome_columns(
            model,
            pred_ids,
            labels=data.actual[idx],
            event_time=data.time_ms[idx] + data.lag,
            event_ids=[data.outcome_id(i) for i in idx.tolist()],
        )
        preds = codec.encode_columns_split(cols, max_rows=rows)
        outcomes = codec.encode_columns_split(outs, max_rows=rows)
        out.encode_seconds += time.perf_counter() - started
        per_model.append(list(zip(preds, outcomes, strict=True)))
    for k in range(max(len(p) for p in per_model)):
        for model, pairs in zip(data.models, per_model, strict=True):
            if k < len(pairs):
                out.add(topics.PREDICTIONS, model.encode(), pairs[k][0])
                out.add(topics.OUTCOMES, model.encode(), pairs[k][1])
    out.predictions = out.outcomes = len(data)
    return out


def single_records(data: Data, codec: Codec, outcomes: bool = True) -> Records:
    """Layout (b): one PredictionEvent per message; after prediction i, the OutcomeEvent of
    prediction i - lag (the rest after the last prediction)."""
    out = Records()
    encode = codec.encode
    rows = data.x.tolist()
    n = len(data)
    for i in range(n + data.lag):
        if i < n:
            model = data.model_of(i)
            prediction = {
                "event_id": data.prediction_id(i),
                "model_id": model,
                "model_version": "1",
                "event_time": int(data.time_ms[i]),
                "numeric_features": dict(zip(data.names, rows[i], strict=True)),
                "categorical_features": {},
                "segments": {"region": REGIONS[int(data.index[i]) % 3]},
                "prediction_label": str(data.predicted[i]),
                "prediction_score": float(data.score[i]),
                "prediction_value": None,
                "probabilities": None,
            }
            out.add(topics.PREDICTIONS, model.encode(), encode("PredictionEvent", prediction))
        k = i - data.lag
        if outcomes and 0 <= k < n:
            model = data.model_of(k)
            outcome = {
                "event_id": data.outcome_id(k),
                "prediction_id": data.prediction_id(k),
                "model_id": model,
                "event_time": int(data.time_ms[k]) + data.lag,
                "label": str(data.actual[k]),
                "value": None,
            }
            out.add(topics.OUTCOMES, model.encode(), encode("OutcomeEvent", outcome))
    out.predictions = n
    out.outcomes = n if outcomes else 0
    return out


# -- producing -------------------------------------------------------------------------------


@dataclass
class Region:
    """Where a backlog sits: per (topic, partition), its first offset and the offset after its
    last message."""

    start: dict[tuple[str, int], int]
    end: dict[tuple[str, int], int]
    messages: int
    predictions: int
    outcomes: int
    produce_seconds: float

    def contains(self, topic: str, partition: int, offset: int) -> bool:
        key = (topic, partition)
        return key in self.end and self.start[key] <= offset < self.end[key]

    def to_json(self) -> str:
        return json.dumps(
            {
                "start": [[t, p, o] for (t, p), o in self.start.items()],
                "end": [[t, p, o] for (t, p), o in self.end.items()],
                "messages": self.messages,
                "predictions": self.predictions,
                "outcomes": self.outcomes,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Region:
        d = json.loads(text)
        return cls(
            start={(t, p): o for t, p, o in d["start"]},
            end={(t, p): o for t, p, o in d["end"]},
            messages=d["messages"],
            predictions=d["predictions"],
            outcomes=d["outcomes"],
            produce_seconds=0.0,
        )


def produce(bootstrap: str, records: Records, compression: str) -> Region:
    """Everything, as fast as librdkafka takes it; the region from the delivery reports."""
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "compression.type": compression,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            # the Java clients' partitioner: a model's predictions and outcomes co-partitioned
            "partitioner": "murmur2_random",
        }
    )
    first: dict[tuple[str, int], int] = {}
    last: dict[tuple[str, int], int] = {}
    errors: list[Any] = []

    def on_delivery(error: Any, message: Any) -> None:
        if error is not None:
            errors.append(error)
            return
        key = (message.topic(), message.partition())
        first[key] = min(first.get(key, message.offset()), message.offset())
        last[key] = max(last.get(key, -1), message.offset())

    started = time.perf_counter()
    for i, (topic, key, value) in enumerate(
        zip(records.topics, records.keys, records.values, strict=True)
    ):
        while True:
            try:
                p.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
        if i % 2000 == 0:
            p.poll(0)
    if p.flush(120):
        raise RuntimeError("undelivered messages")
    p.poll(0)
    if errors:
        raise RuntimeError(f"{len(errors)} delivery errors: {errors[:3]}")
    start = dict(first)
    end = {key: offset + 1 for key, offset in last.items()}
    messages = sum(end[k] - start[k] for k in start)
    if messages != len(records):
        raise RuntimeError(f"produced {len(records)} messages, the region holds {messages}")
    return Region(
        start=start,
        end=end,
        messages=messages,
        predictions=records.predictions,
        outcomes=records.outcomes,
        produce_seconds=time.perf_counter() - started,
    )


def end_offsets(bootstrap: str, names: tuple[str, ...] = INPUTS) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{uuid.uuid4()}"})
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                metadata = consumer.list_topics(timeout=10)
                return {
                    (name, p): consumer.get_watermark_offsets(TopicPartition(name, p), 10)[1]
                    for name in names
                    for p in metadata.topics[name].partitions
                }
            except KafkaException:  # topics just created: leaders not elected yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()


# -- consumer groups -------------------------------------------------------------------------


class GroupOffsets:
    """Committed offsets of a consumer group, read by a client that never joins the group."""

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


def wait_caught_up(
    offsets: GroupOffsets,
    end: dict[tuple[str, int], int],
    process: subprocess.Popen,
    log_path: Path,
    timeout: float = 600.0,
) -> float:
    """time.monotonic() when the group's committed offsets first reached ``end``."""
    deadline = time.monotonic() + timeout
    while True:
        committed = offsets.committed()
        now = time.monotonic()
        if committed is not None and all(committed[k] >= o for k, o in end.items()):
            return now
        if now > deadline:
            raise TimeoutError(f"worker not caught up in {timeout}s: {committed}{_tail(log_path)}")
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}{_tail(log_path)}")
        time.sleep(0.02)


@dataclass
class GroupRun:
    """Progress of a consumer group between its first and its last observed commit."""

    messages: int
    seconds: float
    committed: int  # offsets committed in all at the end (the agent did consume)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def measure_group(
    bootstrap: str,
    group: str,
    partitions: list[tuple[str, int]],
    *,
    cap_seconds: float,
    process: subprocess.Popen,
    log_path: Path,
    timeout: float = 120.0,
) -> GroupRun:
    """Messages/s of a group from its first commit to its last within ``cap_seconds`` (for the
    faust agent, which commits every few seconds: timing commit to commit keeps that period
    out of the rate)."""
    offsets = GroupOffsets(bootstrap, group, partitions)
    first = last = None
    deadline = time.monotonic() + timeout
    try:
        while True:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"group {group} never committed{_tail(log_path)}")
            if process.poll() is not None:
                raise RuntimeError(f"{group} exited with {process.returncode}{_tail(log_path)}")
            committed = offsets.committed()
            if committed is not None and sum(committed.values()) > 0:
                total = sum(committed.values())
                if first is None:
                    first = (now, total)
                if last is None or total != last[1]:
                    last = (now, total)
                if now - first[0] >= cap_seconds:
                    break
            time.sleep(0.1)
    finally:
        offsets.close()
    return GroupRun(last[1] - first[1], last[0] - first[0], last[1])


def _tail(log_path: Path | None) -> str:
    if log_path is None or not log_path.exists():
        return ""
    return "\n" + log_path.read_text(errors="replace")[-3000:]


# -- raw consumption, the I/O floor and the plain consumer (children) -------------------------


def region_consumer(bootstrap: str, region: Region, **extra: Any) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            **extra,
        }
    )
    # assign, not subscribe: no group join inside the timed window
    consumer.assign([TopicPartition(t, p, o) for (t, p), o in region.start.items()])
    return consumer


def consume_region(consumer: Consumer, region: Region, batch: int) -> Iterator[list[Any]]:
    """Batches of the region's messages (later messages, read ahead, are dropped)."""
    seen = 0
    deadline = time.monotonic() + 600
    while seen < region.messages:
        if time.monotonic() > deadline:
            raise TimeoutError(f"read {seen} of {region.messages} messages")
        messages = [
            m
            for m in consumer.consume(num_messages=min(batch, region.messages - seen), timeout=1.0)
            if m.error() is None and region.contains(m.topic(), m.partition(), m.offset())
        ]
        seen += len(messages)
        if messages:
            yield messages


@dataclass
class Run:
    """One consumer's pass over a region."""

    messages: int
    predictions: int
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """predictions/s"""
        return self.predictions / self.seconds if self.seconds else 0.0

    @property
    def message_rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


def consume_raw(bootstrap: str, region: Region) -> Run:
    consumer = region_consumer(bootstrap, region)
    try:
        started = time.perf_counter()
        n = sum(len(batch) for batch in consume_region(consumer, region, 10_000))
        return Run(n, region.predictions, time.perf_counter() - started)
    finally:
        consumer.close()


def io_floor(bootstrap: str, region: Region, data_dir: str) -> dict[str, Any]:
    """(child) consume + decode_columns + insert predictions and outcomes, commit."""
    from driftline.sinks.columns import outcome_insert_columns, prediction_insert_columns
    from driftline.sinks.store import open_store
    from driftline.sinks.writer import concat_chunks

    codec = Codec()
    store = open_store(None, "driftline", Path(data_dir) / "clickhouse")
    store.migrate()
    consumer = region_consumer(bootstrap, region)
    rows = {"predictions": 0, "outcomes": 0}
    try:
        started = time.perf_counter()
        for batch in consume_region(consumer, region, 5000):
            parts: dict[str, list[dict[str, Any]]] = {"predictions": [], "outcomes": []}
            for message in batch:
                _, cols, _ = codec.decode_columns(message.value(), message.topic())
                if message.topic() == topics.PREDICTIONS:
                    parts["predictions"].append(prediction_insert_columns(cols))
                else:
                    parts["outcomes"].append(outcome_insert_columns(cols))
            for table, chunks in parts.items():
                if chunks:
                    columns = {name: concat_chunks([c[name] for c in chunks]) for name in chunks[0]}
                    rows[table] += store.insert(table, columns)
            consumer.commit(asynchronous=False)
        seconds = time.perf_counter() - started
        stored = {t: int(store.query(f"SELECT count() FROM {t}")[0][0]) for t in rows}
    finally:
        consumer.close()
        store.close()
    return {"messages": region.messages, "seconds": seconds, "rows": rows, "stored": stored}


PEER_DDL = (
    "CREATE TABLE IF NOT EXISTS predictions (event_id String, model_id String, "
    "event_time DateTime64(3), label String, score Float64, {features}) "
    "ENGINE = MergeTree ORDER BY (model_id, event_time)",
    "CREATE TABLE IF NOT EXISTS labels (prediction_id String, model_id String, "
    "label String, predicted String, correct UInt8) ENGINE = MergeTree ORDER BY model_id",
)


def plain_consumer(bootstrap: str, region: Region, data_dir: str, cap_seconds: float) -> dict:
    """(child) The consumer a user writes in an afternoon, on single-event records."""
    import io

    import fastavro
    import pyarrow as pa
    from chdb import session as chs
    from river.drift import ADWIN

    codec = Codec()
    schemas = {
        codec.schema_id(name): fastavro.parse_schema(
            json.loads((SCHEMAS / f"{name}.avsc").read_text())
        )
        for name in ("PredictionEvent", "OutcomeEvent")
    }
    names = [f"f{j:02d}" for j in range(20)]
    db = chs.Session(str(Path(data_dir) / "peer-chdb"))
    features = ", ".join(f"{n} Float64" for n in names)
    for ddl in PEER_DDL:
        db.query(ddl.format(features=features))
    detectors: dict[str, list[ADWIN]] = {}
    predicted: dict[str, str] = {}  # prediction id -> label, until its outcome arrives
    waiting: dict[str, dict] = {}  # outcomes that arrived before their prediction
    counts = {"predictions": 0, "outcomes": 0, "joined": 0, "drifts": 0}
    consumer = region_consumer(bootstrap, region)

    def detect(model: str, j: int, value: float) -> None:
        bank = detectors.get(model)
        if bank is None:
            bank = detectors[model] = [ADWIN() for _ in range(len(names) + 1)]
        bank[j].update(value)
        if bank[j].drift_detected:
            counts["drifts"] += 1

    try:
        started = time.perf_counter()
        for batch in consume_region(consumer, region, 5000):
            preds: list[dict] = []
            joined: list[tuple[str, str, str, str]] = []

            def join(outcome: dict, label: str, joined: list = joined) -> None:
                correct = label == outcome["label"]
                joined.append(
                    (outcome["prediction_id"], outcome["model_id"], outcome["label"], label)
                )
                detect(outcome["model_id"], len(names), 0.0 if correct else 1.0)

            for message in batch:
                data = message.value()
                schema = schemas[int.from_bytes(data[1:5], "big")]
                record = fastavro.schemaless_reader(io.BytesIO(data[5:]), schema, None)
                if message.topic() == topics.PREDICTIONS:
                    counts["predictions"] += 1
                    model = record["model_id"]
                    numeric = record["numeric_features"]
                    for j, name in enumerate(names):
                        detect(model, j, numeric[name])
                    preds.append(record)
                    outcome = waiting.pop(record["event_id"], None)
                    if outcome is not None:
                        join(outcome, record["prediction_label"])
                    else:
                        predicted[record["event_id"]] = record["prediction_label"]
                else:
                    counts["outcomes"] += 1
                    label = predicted.pop(record["prediction_id"], None)
                    if label is None:
                        waiting[record["prediction_id"]] = record
                    else:
                        join(record, label)
            if preds:
                arrow_batch = pa.table(  # noqa: F841 - read by name by Python(arrow_batch)
                    {
                        "event_id": [r["event_id"] for r in preds],
                        "model_id": [r["model_id"] for r in preds],
                        "event_time": pa.array(
                            [r["event_time"] for r in preds], pa.timestamp("ms")
                        ),
                        "label": [r["prediction_label"] for r in preds],
                        "score": [r["prediction_score"] for r in preds],
                        **{n: [r["numeric_features"][n] for r in preds] for n in names},
                    }
                )
                db.query("INSERT INTO predictions SELECT * FROM Python(arrow_batch)")
            if joined:
                ids, models, labels, predicted_labels = zip(*joined, strict=True)
                arrow_batch = pa.table(  # noqa: F841 - read by name by Python(arrow_batch)
                    {
                        "prediction_id": ids,
                        "model_id": models,
                        "label": labels,
                        "predicted": predicted_labels,
                        "correct": [
                            int(a == b) for a, b in zip(labels, predicted_labels, strict=True)
                        ],
                    }
                )
                db.query("INSERT INTO labels SELECT * FROM Python(arrow_batch)")
            consumer.commit(asynchronous=False)
            counts["joined"] += len(joined)
            if time.perf_counter() - started > cap_seconds:
                break
        seconds = time.perf_counter() - started
        stored = {
            t: int(str(db.query(f"SELECT count() FROM {t}", "CSV")).strip())
            for t in ("predictions", "labels")
        }
    finally:
        consumer.close()
        db.close()
    return {"seconds": seconds, **counts, "stored": stored}


def run_child(kind: str, bootstrap: str, region: Region, workdir: Path, *args: str) -> dict:
    """A measured consumer in its own process (like the worker; chdb binds one data path per
    process); its JSON result is the last line of its stdout."""
    data_dir = workdir / f"{kind}-{uuid.uuid4().hex[:6]}"
    data_dir.mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", kind, bootstrap,
         region.to_json(), str(data_dir), *args],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_empty_faust_agent(
    bootstrap: str, group: str, datadir: str, partitions: int, batch: int, seconds: float
) -> None:
    """A faust app with one agent over the input topics that takes batches and does nothing:
    what faust itself costs per message."""
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
        broker_max_poll_records=batch,
        stream_buffer_maxsize=batch * 4,
    )
    inputs = app.topic(
        *INPUTS, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    async def empty(stream: Any) -> None:
        async for _events in stream.take_events(batch, within=seconds):
            pass

    app.agent(inputs, name="empty")(empty)
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


# -- processes -------------------------------------------------------------------------------


def spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
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


@dataclass
class WorkerProcess:
    group: str
    process: subprocess.Popen
    log_path: Path
    http_port: int

    def count(self, table: str) -> int:
        """Rows in the worker's embedded ClickHouse, through its HTTP interface."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/?database=driftline",
            data=f"SELECT count() FROM {table}".encode(),
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.read().decode().strip())

    def counts(self) -> dict[str, int]:
        return {t: self.count(t) for t in ("predictions", "outcomes", "joined_labels")}


def start_worker(
    bootstrap: str, workdir: Path, group: str, partitions: int, batch: tuple[int, float]
) -> WorkerProcess:
    """A ``driftline worker`` process in group ``group`` on its data dir (kept across
    restarts: the state comes back from its changelog, the offsets from the group)."""
    runs = len(list(workdir.glob(f"{group}-*.log")))
    log_path = workdir / f"{group}-{runs}.log"
    port = free_port()
    env = dict(os.environ)
    env.update(
        DRIFTLINE_KAFKA_BOOTSTRAP=bootstrap,
        DRIFTLINE_DATA_DIR=str(workdir / group),
        DRIFTLINE_WORKER_ID=group,
        DRIFTLINE_WORKER_WEB_PORT="0",
        DRIFTLINE_TOPIC_PARTITIONS=str(partitions),
        DRIFTLINE_BATCH_MAX_EVENTS=str(batch[0]),
        DRIFTLINE_BATCH_MAX_SECONDS=str(batch[1]),
        DRIFTLINE_CLICKHOUSE_HTTP_PORT=str(port),
        # the phases read the worker's counters from its status line: at once, not ~5 s on
        DRIFTLINE_WORKER_STATUS_INTERVAL_SECONDS="1",
    )
    process = spawn([sys.executable, "-m", "driftline.cli", "worker"], env, log_path)
    return WorkerProcess(group, process, log_path, port)


def wait_assigned(worker: WorkerProcess, timeout: float = 120.0) -> float:
    """time.monotonic() of the worker's "assigned partitions" line (after its state was
    restored, right before its first fetch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = ASSIGNED.search(worker.log_path.read_text(errors="replace"))
        if m is not None:
            day, _, millis = m["time"].partition(",")
            at = time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
            return at - time.time() + time.monotonic()
        if worker.process.poll() is not None:
            break
        time.sleep(0.05)
    raise TimeoutError(f"the worker was not assigned its partitions{_tail(worker.log_path)}")


@dataclass(frozen=True)
class Counters:
    """The worker's cumulative counters from one of its status lines."""

    messages: int
    processing: float  # input thread: decode, join, detect, alert rules
    writing: float  # writer thread: inserts, output records, checkpoints, commits


def wait_counters(worker: WorkerProcess, messages: int, timeout: float = 30.0) -> Counters:
    """The counters once everything is written: called at lag 0, the last status line
    (logged every second while busy, see start_worker) counting ``messages`` or more after
    the next one is due. A line logged as processing ends can precede the writer's last
    epochs, and would understate the writing time."""
    time.sleep(1.5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = WORKER_LINE.finditer(worker.log_path.read_text(errors="replace"))
        done = [m for m in lines if int(m["messages"]) >= messages]
        if done:
            m = done[-1]
            return Counters(int(m["messages"]), float(m["processing"]), float(m["writing"]))
        time.sleep(0.2)
    raise TimeoutError(f"no status line with {messages} messages{_tail(worker.log_path)}")


# -- the worker's phases -----------------------------------------------------------------------


@dataclass
class WorkerRun:
    predictions: int
    messages: int
    seconds: float  # partitions assigned -> committed offsets at the backlog's end
    processing: float  # seconds of the input thread, from the worker's counters
    writing: float  # seconds of the writer thread
    stored: dict[str, int]  # ClickHouse counts at lag 0 (cumulative)

    @property
    def rate(self) -> float:
        return self.predictions / self.seconds if self.seconds else 0.0


def worker_backlog(
    bootstrap: str,
    workdir: Path,
    group: str,
    config: Config,
    records: Records,
    expected: dict[str, int],
) -> tuple[WorkerRun, Region, WorkerProcess]:
    """Produce ``records`` while the worker is stopped, start it, and time its partition
    assignment -> its committed offsets at the backlog's end; check ClickHouse's counts.
    Returns the worker still running."""
    region = produce(bootstrap, records, config.compression)
    worker = start_worker(bootstrap, workdir, group, config.partitions, config.batch)
    offsets = GroupOffsets(bootstrap, group, list(region.end))
    try:
        started = wait_assigned(worker)
        done = wait_caught_up(offsets, region.end, worker.process, worker.log_path)
        stored = worker.counts()
        if stored != expected:
            raise RuntimeError(f"ClickHouse holds {stored}, expected {expected}")
        counters = wait_counters(worker, region.messages)
    except BaseException:
        stop(worker.process)
        raise
    finally:
        offsets.close()
    run = WorkerRun(
        predictions=region.predictions,
        messages=region.messages,
        seconds=done - started,
        processing=counters.processing,
        writing=counters.writing,
        stored=stored,
    )
    return run, region, worker


def wait_counts(worker: WorkerProcess, expected: dict[str, int], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while (stored := worker.counts()) != expected:
        if time.monotonic() > deadline or worker.process.poll() is not None:
            raise RuntimeError(
                f"ClickHouse holds {stored}, expected {expected}{_tail(worker.log_path)}"
            )
        time.sleep(0.5)


# -- latency -----------------------------------------------------------------------------------


@dataclass
class Latency:
    samples: list[float]  # seconds, log_prediction call -> DriftEvent read
    # seconds, log_prediction call -> the worker's produce() of the DriftEvent (the record's
    # CreateTime): the rest of a sample is the record's way to this script
    to_produce: list[float]
    predictions: int
    outcomes: int
    seconds: float
    drift_points: int
    drift_events: int  # every DriftEvent seen, matched or not
    # cores each process used on average while this phase ran (set by ``run``): with the
    # producer in this script, the worker and the broker on 2 cores, a sum near 2 means the
    # worker cannot keep up and the latency is queueing
    cores: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.predictions / self.seconds if self.seconds else 0.0

    def percentile(self, q: float, of: str = "samples") -> float:
        values = getattr(self, of)
        return float(np.percentile(values, q)) if values else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and all its threads so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_latency_with_cores(
    bootstrap: str, data: Data, rate: float, settle_seconds: float, codec: Codec,
    pids: dict[str, int],
) -> Latency:  # fmt: skip
    """:func:`measure_latency`, plus the cores this script (the producer), the worker and the
    broker used meanwhile."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    mine, started = time.process_time(), time.monotonic()
    latency = measure_latency(bootstrap, data, rate, settle_seconds, codec)
    wall = time.monotonic() - started
    latency.cores = {"producer (this script)": (time.process_time() - mine) / wall}
    for name, pid in pids.items():
        latency.cores[name] = (cpu_seconds(pid) - before[name]) / wall
    return latency


def measure_latency(
    bootstrap: str, data: Data, rate: float, settle_seconds: float, codec: Codec
) -> Latency:
    """``log_prediction`` (and ``log_outcome`` ``lag`` predictions later) at ``rate``
    predictions/s through the SDK's default batching, while reading DriftEvents; latency =
    time read - time of the ``log_prediction`` call that made its ``source_event_id``."""
    producer = DriftlineProducer(bootstrap, codec)
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
    for p in metadata.topics[topics.DRIFT].partitions:
        tp = TopicPartition(topics.DRIFT, p)
        tp.offset = consumer.get_watermark_offsets(tp, timeout=10)[1]  # only new DriftEvents
        assignment.append(tp)
    consumer.assign(assignment)
    called_at: dict[str, float] = {}
    called_wall: dict[str, float] = {}  # the same calls on the wall clock (record timestamps)
    samples: list[float] = []
    to_produce: list[float] = []
    seen = 0

    def read(timeout: float) -> None:
        nonlocal seen
        for message in consumer.consume(num_messages=500, timeout=timeout):
            if message.error() is not None:
                continue
            now = time.monotonic()
            seen += 1
            drift = codec.decode(message.value(), expected=topics.DRIFT_EVENT)[1]
            sent = called_at.get(drift["source_event_id"])
            if sent is not None:
                samples.append(now - sent)
                produced_ms = message.timestamp()[1]
                to_produce.append(produced_ms / 1000 - called_wall[drift["source_event_id"]])

    n, lag, names = len(data), data.lag, data.names
    rows = data.x.tolist()
    outcomes = 0
    try:
        started = time.monotonic()
        i = 0
        while i < n + lag:
            due = min(n + lag, int((time.monotonic() - started) * rate) + 1)
            while i < due:
                if i < n:
                    pid = data.prediction_id(i)
                    producer.log_prediction(
                        data.model_of(i),
                        dict(zip(names, rows[i], strict=True)),
                        str(data.predicted[i]),
                        score=float(data.score[i]),
                        event_id=pid,
                        event_time=int(data.time_ms[i]),
                    )
                    called_at[pid] = time.monotonic()
                    called_wall[pid] = time.time()
                k = i - lag
                if 0 <= k < n:
                    producer.log_outcome(
                        data.prediction_id(k),
                        data.model_of(k),
                        label=str(data.actual[k]),
                        event_time=int(data.time_ms[k]) + lag,
                        event_id=data.outcome_id(k),
                    )
                    outcomes += 1
                i += 1
            read(0.002)
        seconds = time.monotonic() - started
        producer.close(30)
        quiet_until = time.monotonic() + settle_seconds
        while time.monotonic() < quiet_until:
            read(0.1)
    finally:
        consumer.close()
    return Latency(samples, to_produce, n, outcomes, seconds, data.drift_points, seen)


# -- SDK cost ----------------------------------------------------------------------------------


@dataclass
class SdkCost:
    call_us: float  # log_prediction, batch records (the default)
    single_call_us: float  # log_prediction, batch_records=False (one record per event)
    bulk_rate: float  # log_predictions, predictions/s
    encode_rate: float  # client.prediction_columns + Codec.encode_columns_split, rows/s


def sdk_cost(data: Data, encode_rate: float, calls: int) -> SdkCost:
    """Against an unreachable broker, so librdkafka only queues: the caller's cost alone."""

    def producer(**options: Any) -> DriftlineProducer:
        return DriftlineProducer("127.0.0.1:1", log_level=0, message_timeout_ms=600_000, **options)

    def best(fn: Any, repeat: int = 3) -> float:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        return min(times)

    events = [dict(zip(data.names, row, strict=True)) for row in data.x[:2000].tolist()]
    batched, single = producer(), producer(batch_records=False)

    def calls_of(p: DriftlineProducer, k: int) -> None:
        for i in range(k):
            p.log_prediction("churn", events[i % len(events)], "yes", score=0.5)

    calls_of(batched, len(events))  # warm: layouts, id pool
    calls_of(single, len(events))
    call_us = best(lambda: calls_of(batched, calls)) / calls * 1e6
    single_calls = max(1, calls // 4)
    single_us = best(lambda: calls_of(single, single_calls)) / single_calls * 1e6
    bulk = producer()
    columns = {name: data.x[:, j] for j, name in enumerate(data.names)}
    labels, scores = data.predicted, data.score
    bulk.log_predictions("churn", {k: v[:1000] for k, v in columns.items()})
    bulk_rate = len(data) / best(lambda: bulk.log_predictions("churn", columns, labels=labels, scores=scores))  # fmt: skip
    for p in (batched, single, bulk):
        p._producer.purge()  # nothing will ever be delivered; do not wait for it
        p._closed = True
    return SdkCost(call_us, single_us, bulk_rate, encode_rate)


# -- the worker's time, in process -------------------------------------------------------------

PROFILE_GROUPS = {
    "decode": ("processor.py", ("_parse", "_add", "seal")),
    "join": (
        "processor.py",
        ("_concat", "_prediction_part", "_outcome_part", "_pair_metrics", "_joined_columns"),
    ),
    "join state": ("join.py", ("apply", "expire")),
    "detect": ("processor.py", ("_detect_features", "_detect_predictions", "_detect_errors")),
    "insert columns": ("columns.py", ("prediction_insert_columns", "outcome_insert_columns")),
}


@dataclass
class Profile:
    layout: str
    predictions: int
    seconds: float  # BatchProcessor.process without the profiler
    shares: dict[str, float]  # group -> share of process() under cProfile

    @property
    def us_per_prediction(self) -> float:
        return self.seconds / self.predictions * 1e6


def head(records: Records, share: float) -> Records:
    """The first ``share`` of the messages (the same messages the worker read first)."""
    k = round(len(records) * share)
    out = Records(records.topics[:k], records.keys[:k], records.values[:k])
    # rows per message of each topic are constant within a layout
    for topic, attr in ((topics.PREDICTIONS, "predictions"), (topics.OUTCOMES, "outcomes")):
        per_message = getattr(records, attr) / max(records.topics.count(topic), 1)
        setattr(out, attr, round(out.topics.count(topic) * per_message))
    return out


def source_messages(records: Records, partitions: int, next_offsets: dict) -> list[Any]:
    from driftline.streams.processor import SourceMessage

    out = []
    for topic, key, value in zip(records.topics, records.keys, records.values, strict=True):
        p = partition_of(key, partitions)
        offset = next_offsets.get((topic, p), 0)
        next_offsets[(topic, p)] = offset + 1
        out.append(SourceMessage(topic, p, offset, key, value))
    return out


def profile_processor(
    layouts: dict[str, tuple[Records, Records]], partitions: int, batch: int
) -> list[Profile]:
    """``BatchProcessor.process`` over the same messages as the worker, in batches of the
    worker's size, timed plainly and then under cProfile (on a fresh processor each time);
    shares of decode / join / detect / insert columns from the call graph: a function's time
    counts only when called from ``process``, ``_release`` or ``_model`` (the batch's stages)."""
    from driftline.streams.processor import BatchProcessor, ProcessorConfig

    out = []
    for layout, (warm, records) in layouts.items():
        timings = []
        for profiled in (False, True):
            processor = BatchProcessor(Codec(), ProcessorConfig())
            offsets: dict = {}
            processor.process(source_messages(warm, partitions, offsets))  # Numba cache, state
            messages = source_messages(records, partitions, offsets)
            batches = [messages[i : i + batch] for i in range(0, len(messages), batch)]
            profiler = cProfile.Profile() if profiled else None
            started = time.perf_counter()
            for b in batches:
                if profiler is None:
                    processor.process(b)
                else:
                    profiler.runcall(processor.process, b)
            timings.append(time.perf_counter() - started)
        stats = pstats.Stats(profiler).stats  # type: ignore[arg-type]
        total = sum(
            ct
            for (path, _, name), (_, _, _, ct, _) in stats.items()
            if path.endswith("processor.py") and name == "process"
        )
        shares = {}
        for group, (file, functions) in PROFILE_GROUPS.items():
            seconds = 0.0
            for (path, _, name), (_, _, _, _, callers) in stats.items():
                if path.endswith(file) and name in functions:
                    seconds += sum(
                        edge[3]
                        for (_, _, caller), edge in callers.items()
                        if caller in ("process", "_model", "_release")
                    )
            shares[group] = seconds / total if total else 0.0
        shares["other"] = 1.0 - sum(shares.values())
        out.append(Profile(layout, records.predictions, timings[0], shares))
    return out


# -- the run -------------------------------------------------------------------------------------


@dataclass
class Config:
    predictions: int = 200_000
    features: int = 20
    partitions: int = 4
    models: int = 4
    outcome_lag: int = 50
    rows_per_record: int = 1000
    warmup: int = 4000  # predictions per layout before the measured backlogs
    batch: tuple[int, float] = (5000, 0.1)  # the worker's defaults (settings.py)
    profile_predictions: int = 40_000  # per layout, for the in-process profile
    peer_seconds: float = 120.0  # the plain consumer stops after this long
    faust_seconds: float = 15.0
    latency_seconds: float = 10.0
    settle_seconds: float = 3.0  # reading DriftEvents after the last paced call
    flip_seconds: float = 0.5  # f00 changes level about this often per model
    shift: float = 5.0
    sdk_calls: int = 20_000
    compression: str = "lz4"
    workdir: Path | None = None
    out: Path | None = RESULTS


@dataclass
class Results:
    config: Config
    worker_a: WorkerRun
    worker_b: WorkerRun
    warmup: WorkerRun
    produced: dict[str, float]  # layout -> seconds to produce its backlog
    raw_a: Run
    raw_b: Run
    floor: Run
    peer: Run
    faust: GroupRun
    latency: Latency
    latency_quarter: Latency  # the same at a quarter of the sustained rate
    latency_target_rate: float
    stored: dict[str, int]
    expected: dict[str, int]
    sdk: SdkCost
    profiles: list[Profile]
    phases: dict[str, float]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


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

    c = config
    owned = c.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="driftline-bench-")) if owned else c.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    codec = Codec()
    models = model_ids(c.models, c.partitions)
    base_ms = yesterday_ms()
    n, w = c.predictions, c.warmup

    def data(start: int, count: int, **kw: Any) -> Data:
        return make_data(start, count, models, c.features, base_ms=base_ms, lag=c.outcome_lag, **kw)

    # prediction indices (and event times): warm-up (a), (b) | backlog (a) | (b) | latency
    warm_a = batch_records(data(0, w), codec, c.rows_per_record)
    warm_b = single_records(data(w, w), codec)
    data_a = data(2 * w, n)
    backlog_a = batch_records(data_a, codec, c.rows_per_record)
    backlog_b = single_records(data(2 * w + n, n), codec)
    encode_rate = n / backlog_a.encode_seconds
    phase("encode")
    log(f"encoded {len(backlog_a)} + {len(backlog_b)} messages")
    try:
        with local_broker(workdir, c.partitions) as kafka:
            bootstrap = kafka.bootstrap
            ensure_topics(bootstrap, c.partitions)
            phase("broker start")

            group = f"bench-worker-{uuid.uuid4().hex[:8]}"
            expected = dict.fromkeys(("predictions", "outcomes", "joined_labels"), 2 * w)
            warmup, _, worker = worker_backlog(
                bootstrap, workdir, group, c, warm_a + warm_b, expected
            )
            stop(worker.process)
            phase("worker warm-up")
            expected = {k: v + n for k, v in expected.items()}
            worker_a, region_a, worker = worker_backlog(
                bootstrap, workdir, group, c, backlog_a, expected
            )
            stop(worker.process)
            log(f"worker (a): {worker_a.rate:,.0f} predictions/s")
            phase("worker (a)")
            expected = {k: v + n for k, v in expected.items()}
            worker_b, region_b, worker = worker_backlog(
                bootstrap, workdir, group, c, backlog_b, expected
            )
            log(f"worker (b): {worker_b.rate:,.0f} predictions/s")
            phase("worker (b)")
            try:
                # half the sustained rate of (a) (a floor for tiny runs), f00 flipping level
                target = max(worker_a.rate / 2, 200.0)
                flip_every = max(60, int(target / c.models * c.flip_seconds))
                pids = {"worker": worker.process.pid, "broker": kafka.process.pid}
                latencies = []
                start = 2 * w + 2 * n
                # half the sustained rate (the target), then a quarter: where the three
                # processes' cores add up to the machine, the difference is queueing
                for rate in (target, target / 2):
                    count = max(400, int(rate * c.latency_seconds))
                    flips = data(start, count, flip_every=flip_every, shift=c.shift)
                    start += count
                    measured = measure_latency_with_cores(
                        bootstrap, flips, rate, c.settle_seconds, codec, pids
                    )
                    latencies.append(measured)
                    cores = ", ".join(f"{k} {v:.2f}" for k, v in measured.cores.items())
                    log(
                        f"latency: {len(measured.samples)} samples at {measured.rate:,.0f}/s, "
                        f"p50 {measured.percentile(50):.3f}s p99 {measured.percentile(99):.3f}s; "
                        f"cores: {cores}"
                    )
                    expected = {k: v + count for k, v in expected.items()}
                latency, latency_quarter = latencies
                wait_counts(worker, expected)  # every row produced is in ClickHouse
                stored = worker.counts()
                phase("latency")
            finally:
                stop(worker.process)

            raw_a, raw_b = consume_raw(bootstrap, region_a), consume_raw(bootstrap, region_b)
            log(f"raw consume (a) {raw_a.rate:,.0f}/s, (b) {raw_b.rate:,.0f} predictions/s")
            phase("raw consume")
            floor = run_child("floor", bootstrap, region_a, workdir)
            floor_run = Run(region_a.messages, region_a.predictions, floor["seconds"], floor)
            if floor["stored"] != {"predictions": n, "outcomes": n}:
                raise RuntimeError(f"the I/O floor stored {floor['stored']}")
            log(f"I/O floor (a) {floor_run.rate:,.0f} predictions/s")
            phase("I/O floor")
            peer = run_child("peer", bootstrap, region_b, workdir, str(c.peer_seconds))
            peer_run = Run(
                peer["predictions"] + peer["outcomes"], peer["predictions"], peer["seconds"], peer
            )
            log(f"plain consumer (b) {peer_run.rate:,.0f} predictions/s")
            phase("plain consumer")
            faust = measure_faust(bootstrap, workdir, c)
            log(f"empty faust agent {faust.rate:,.0f} messages/s")
            phase("empty faust agent")
    finally:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)

    sdk = sdk_cost(data_a, encode_rate, c.sdk_calls)
    phase("SDK cost")
    share = min(c.profile_predictions, n) / n
    profiles = profile_processor(
        {
            "(a) batch records": (warm_a, head(backlog_a, share)),
            "(b) single events": (warm_b, head(backlog_b, share)),
        },
        c.partitions,
        c.batch[0],
    )
    phase("in-process profile")
    return Results(
        config=c,
        worker_a=worker_a,
        worker_b=worker_b,
        warmup=warmup,
        produced={"(a)": region_a.produce_seconds, "(b)": region_b.produce_seconds},
        raw_a=raw_a,
        raw_b=raw_b,
        floor=floor_run,
        peer=peer_run,
        faust=faust,
        latency=latency,
        latency_quarter=latency_quarter,
        latency_target_rate=target,
        stored=stored,
        expected=expected,
        sdk=sdk,
        profiles=profiles,
        phases=phases,
        load_before=load_before,
        load_after=os.getloadavg(),
    )


def measure_faust(bootstrap: str, workdir: Path, c: Config) -> GroupRun:
    group = f"bench-faust-{uuid.uuid4().hex[:8]}"
    log_path = workdir / f"{group}.log"
    process = spawn(
        [sys.executable, str(Path(__file__).resolve()), "--child", "faust", bootstrap, group,
         str(workdir / group), str(c.partitions), str(c.batch[0]), str(c.batch[1])],
        dict(os.environ),
        log_path,
    )  # fmt: skip
    try:
        partitions = [(t, p) for t in INPUTS for p in range(c.partitions)]
        return measure_group(
            bootstrap, group, partitions, cap_seconds=c.faust_seconds, process=process,
            log_path=log_path,
        )  # fmt: skip
    finally:
        stop(process)


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


# -- the table -------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _met(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


def _cores(latency: Latency) -> str:
    parts = [f"{name} {cores:.2f}" for name, cores in latency.cores.items()]
    return ", ".join(parts) + f" (sum {sum(latency.cores.values()):.2f})"


def render(r: Results) -> str:
    c = r.config
    a, b, floor, peer = r.worker_a, r.worker_b, r.floor, r.peer
    lat, quarter = r.latency, r.latency_quarter
    p99 = lat.percentile(99)
    ra, rb = _ratio(a.rate, floor.rate), _ratio(a.rate, peer.rate)
    rc = _ratio(b.rate, peer.rate)
    rows = [
        "| measurement | predictions/s | vs | ratio | target |",
        "|---|---:|---:|---:|---|",
        f"| **worker (a)**, SDK batch records, topic → ClickHouse + commit, vs the I/O floor "
        f"| {a.rate:,.0f} | {floor.rate:,.0f} | {ra:.2f} | ≥ {TARGET_FLOOR} {_met(ra >= TARGET_FLOOR)} |",
        f"| worker (a) vs the plain consumer | {a.rate:,.0f} | {peer.rate:,.0f} | {rb:.1f}x "
        f"| ≥ {TARGET_PEER_A:g}x {_met(rb >= TARGET_PEER_A)} |",
        f"| **worker (b)**, single-event records, vs the plain consumer | {b.rate:,.0f} "
        f"| {peer.rate:,.0f} | {rc:.1f}x | ≥ {TARGET_PEER_B:g}x {_met(rc >= TARGET_PEER_B)} |",
        f"| worker (a), absolute | {a.rate:,.0f} | | | ≥ {TARGET_PER_S:,} {_met(a.rate >= TARGET_PER_S)} |",
        f"| I/O floor (a): consume + `decode_columns` + insert predictions, outcomes; vs raw "
        f"consume (a) | {floor.rate:,.0f} | {r.raw_a.rate:,.0f} | {_ratio(floor.rate, r.raw_a.rate):.2f} | |",
        f"| raw confluent-kafka `consume()` (a), {r.raw_a.message_rate:,.0f} messages/s "
        f"| {r.raw_a.rate:,.0f} | | | |",
        f"| raw confluent-kafka `consume()` (b), {r.raw_b.message_rate:,.0f} messages/s; "
        f"worker (b) vs it | {r.raw_b.rate:,.0f} | | {_ratio(b.rate, r.raw_b.rate):.2f} | |",
        f"| plain consumer (b): consume(5000), fastavro, dict join, river ADWIN × "
        f"{c.features + 1} streams per model, chdb via Arrow, commit | {peer.rate:,.0f} | | | |",
        f"| empty faust agent (`take_events`, does nothing), messages/s vs raw consume (b) "
        f"| {r.faust.rate:,.0f} msg/s | {r.raw_b.message_rate:,.0f} msg/s "
        f"| {_ratio(r.faust.rate, r.raw_b.message_rate):.2f} | |",
        f"| produce (`log_prediction`) → DriftEvent p50 / p99 at {lat.rate:,.0f} predictions/s "
        f"(+ outcomes; half of worker (a)) | {lat.percentile(50):.3f} s / {p99:.3f} s | | "
        f"| p99 < {TARGET_P99_S:g} s {_met(p99 < TARGET_P99_S)} |",
        f"| the same at {quarter.rate:,.0f} predictions/s (a quarter of worker (a)) "
        f"| {quarter.percentile(50):.3f} s / {quarter.percentile(99):.3f} s | | | |",
        f"| SDK `log_prediction`, batch records (µs/call) vs single-event records "
        f"| {r.sdk.call_us:.2f} µs | {r.sdk.single_call_us:.2f} µs "
        f"| {_ratio(r.sdk.single_call_us, r.sdk.call_us):.1f}x | |",
        f"| SDK `log_predictions` bulk; `prediction_columns` + `encode_columns_split` "
        f"| {r.sdk.bulk_rate:,.0f} | {r.sdk.encode_rate:,.0f} | | |",
    ]
    profile = [
        "| | worker (a) | worker (b) |",
        "|---|---:|---:|",
        f"| wall: partitions assigned → lag 0 (s) | {a.seconds:.2f} | {b.seconds:.2f} |",
        f"| input thread processing: decode, join, detect, rules (s) | {a.processing:.1f} | {b.processing:.1f} |",
        f"| input thread waiting: consume(), epoch hand-over, idle (s) "
        f"| {max(a.seconds - a.processing, 0):.1f} | {max(b.seconds - b.processing, 0):.1f} |",
        f"| writer thread: inserts, records, checkpoints, commit (s; overlaps processing) "
        f"| {a.writing:.1f} | {b.writing:.1f} |",
    ]
    groups = list(PROFILE_GROUPS) + ["other"]
    in_process = [
        "| `BatchProcessor.process` in this process | µs per prediction (+ its outcome) | "
        + " | ".join(groups)
        + " |",
        "|---|---:|" + "---:|" * len(groups),
    ]
    for p in r.profiles:
        in_process.append(
            f"| {p.layout}, {p.predictions:,} predictions | {p.us_per_prediction:.1f} | "
            + " | ".join(f"{p.shares[g]:.0%}" for g in groups)
            + " |"
        )
    lines = [
        f"## driftline pipeline benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"Backlog: {c.predictions:,} predictions ({c.features} numeric features, {c.models} "
        f"models) + one outcome each, per layout, on {c.partitions} partitions per topic "
        f"({c.compression}); (a) PredictionBatch/OutcomeBatch records of {c.rows_per_record} "
        f"rows ({a.messages:,} messages), (b) single PredictionEvent/OutcomeEvent records "
        f"({b.messages:,} messages). One `driftline worker` process (batch {c.batch[0]} "
        f"messages / {c.batch[1]} s, the defaults), warmed on {c.warmup:,} predictions per "
        f"layout; each backlog is produced while the worker is stopped ({r.produced['(a)']:.1f} s "
        f"/ {r.produced['(b)']:.1f} s), then the restarted worker is timed from its partition "
        f"assignment to its last commit (lag 0), ClickHouse counts checked then. Peers read "
        f"the same offsets, each in its own process.",
        "",
        *rows,
        "",
        "Where the worker's time goes (its status-line counters, and the same code in this "
        "process):",
        "",
        *profile,
        "",
        *in_process,
        "",
        "Shares are of `process()` under cProfile (which inflates Python-heavy parts); the "
        "µs column is timed without it. The worker's processing adds the alert rules.",
        "",
        f"Latency: {len(lat.samples)} DriftEvents matched to the `log_prediction` call that "
        f"triggered them ({lat.drift_events} read; {lat.drift_points} injected level changes "
        f"of f00); {lat.predictions:,} predictions + {lat.outcomes:,} outcomes over "
        f"{lat.seconds:.1f} s (target {r.latency_target_rate:,.0f}/s) through the SDK's "
        f"default batching (records of up to 1000 rows, linger 50 ms); max "
        f"{max(lat.samples, default=float('nan')) * 1000:.0f} ms.",
        "",
        "Of that, until the worker produced the DriftEvent (the record's timestamp): p50 "
        f"{lat.percentile(50, 'to_produce'):.3f} s / p99 {lat.percentile(99, 'to_produce'):.3f} s "
        f"at half load, {quarter.percentile(50, 'to_produce'):.3f} s / "
        f"{quarter.percentile(99, 'to_produce'):.3f} s at a quarter; the rest is the record's "
        "way from the worker to this script.",
        "",
        "Cores used while the latency was measured (of the machine's "
        f"{os.cpu_count()}): at half load {_cores(lat)}; at a quarter {_cores(quarter)}. "
        "Where the sum nears the machine's cores, the worker falls behind the live producer "
        "and the latency is queueing.",
        "",
        f"Plain consumer: {peer.detail['predictions']:,} predictions, "
        f"{peer.detail['joined']:,} joined, {peer.detail['drifts']} drifts in "
        f"{peer.seconds:.1f} s; stored {peer.detail['stored']}. I/O floor stored "
        f"{floor.detail['stored']}. Worker's ClickHouse after every phase: {r.stored} "
        f"(expected {r.expected}); warm-up: {r.warmup.predictions:,} predictions in "
        f"{r.warmup.seconds:.1f} s.",
        "",
        f"Environment: {os.cpu_count()} cores shared by the broker (JVM), the worker and this "
        f"script; load average {_load(r.load_before)} before, {_load(r.load_after)} after; "
        f"Python {platform.python_version()}, Kafka {kafka_version()} (KRaft, single node), "
        f"{platform.platform()}.",
        "Phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in r.phases.items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def _load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def _batch(text: str) -> tuple[int, float]:
    events, _, seconds = text.partition(":")
    return int(events), float(seconds or 0.5)


def child(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "faust":
        bootstrap, group, datadir, partitions, batch, seconds = argv[1:7]
        run_empty_faust_agent(
            bootstrap, group, datadir, int(partitions), int(batch), float(seconds)
        )
        return
    bootstrap, region, data_dir = argv[1], Region.from_json(argv[2]), argv[3]
    if kind == "floor":
        result = io_floor(bootstrap, region, data_dir)
    else:
        result = plain_consumer(bootstrap, region, data_dir, float(argv[4]))
    print(json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", type=int, default=200_000, help="per layout")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--rows-per-record", type=int, default=1000)
    parser.add_argument("--batch", type=_batch, default=(5000, 0.1), help="EVENTS:SECONDS")
    parser.add_argument("--faust-seconds", type=float, default=15.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--compression", default="lz4")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--workdir", type=Path, help="keep logs and data here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    config = Config(
        predictions=args.predictions,
        features=args.features,
        partitions=args.partitions,
        models=args.models,
        rows_per_record=args.rows_per_record,
        batch=args.batch,
        faust_seconds=args.faust_seconds,
        latency_seconds=args.latency_seconds,
        compression=args.compression,
        out=args.out,
        workdir=args.workdir,
    )
    table = render(run(config))
    print(table)
    if config.out is not None:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        config.out.write_text(table)


if __name__ == "__main__":
    main()
