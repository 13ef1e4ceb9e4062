"""Applying an epoch's effects in the one order that makes at-least-once safe.

An *epoch* is what the input loop processed since its last commit: ClickHouse rows, output
records (drift, alerts, retraining, dead letters), the checkpoints of the partitions it
touched, and the next input offsets. The :class:`EffectWriter` thread applies epoch ``k`` while
the input loop processes epoch ``k+1`` (decode and detection overlap inserts and broker round
trips), always in this order:

1. rows into ClickHouse (waiting out a store outage for as long as it lasts),
2. output records, then the checkpoints, then wait until the broker acknowledged all of them,
3. commit the input offsets to the consumer group.

A crash anywhere before 3 replays the epoch from the last checkpoint: the replayed rows collapse
under ``FINAL`` (ReplacingMergeTree on event ids, and an insert deduplication token for a
retried insert), the replayed records carry the same deterministic ids. Nothing is committed
that did not land; a failed write never lets an offset be committed, whatever else happens.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import TopicPartition
from driftline.schemas import Codec, topics
from driftline.sinks.base import Store, StoreUnavailable
from driftline.sinks.resilience import backoff_delays
from driftline.sinks.writer import concat_chunks
from driftline.streams.alerting import AlertOutcome
from driftline.streams.processor import BatchResult, DeadLetter

log = logging.getLogger("driftline.worker")


@dataclass
class Epoch:
    """Everything to write before the offsets of these batches may be committed."""

    columns: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    drift_events: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    retraining: list[dict[str, Any]] = field(default_factory=list)
    records: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # verdicts
    dead_letters: list[DeadLetter] = field(default_factory=list)
    checkpoints: dict[int, tuple[bytes, bool]] = field(default_factory=dict)  # (record, full)
    # what may be committed: the checkpointed states' next offsets (outcomes still waiting
    # for their predictions are read but not applied, so not committed)
    commit_offsets: list[TopicPartition] = field(default_factory=list)
    partitions: set[int] = field(default_factory=set)  # to checkpoint
    messages: int = 0
    counters: Counter = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def add(self, result: BatchResult, alerts: AlertOutcome, n_messages: int) -> None:
        for table, parts in result.columns.items():
            self.columns[table].extend(parts)
        for rows_by_table in (result.rows, alerts.rows):
            for table, rows in rows_by_table.items():
                self.rows[table].extend(rows)
        self.drift_events += result.drift_events
        self.alerts += alerts.alerts
        self.retraining += [*result.retraining, *alerts.retraining]
        self.records += result.records
        self.dead_letters += result.dead_letters
        self.counters.update(result.counters)
        self.counters.update(alerts.counters)
        self.messages += n_messages
        self.partitions |= result.touched

    def saw(self, partition: int) -> None:
        self.partitions.add(partition)

    @property
    def empty(self) -> bool:
        return not self.partitions

    sent_decisions: int = 0  # decision records already produced (EffectWriter.send_decisions)



def content_token(table: str, columns: dict[str, Any] | list[dict[str, Any]]) -> str:
    """Insert deduplication token from the rows themselves: an insert retried after a lost
    answer, or the same rows replayed, is dropped by ClickHouse, and rows that differ in
    anything never share a token (a token from offsets alone could match a replayed epoch
    whose content differs, and ClickHouse would drop rows never stored)."""
    digest = hashlib.sha256(table.encode())
    if isinstance(columns, list):
        digest.update(repr(columns).encode())
        return digest.hexdigest()[:32]
    for name in sorted(columns):
        digest.update(name.encode())
        values = columns[name]
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if isinstance(values, pa.Array):
            for array in (values, *_children(values)):
                # buffers may be shared with other slices: the slice's place counts too
                digest.update(f"{array.type}:{array.offset}:{len(array)}".encode())
                for buffer in array.buffers():
                    if buffer is not None:
                        digest.update(memoryview(buffer))
        elif isinstance(values, np.ndarray) and values.dtype != object:
            digest.update(np.ascontiguousarray(values).data)
        else:
            digest.update(repr(list(values)).encode())
    return digest.hexdigest()[:32]


def _children(array: pa.Array) -> list[pa.Array]:
    if isinstance(array, pa.MapArray):
        return [array.keys, array.items]
    return []


class RecordProducer:
    """librdkafka's producer as the writer uses it: ``produce`` waits for room in the local
    queue instead of failing, and every refused delivery is remembered, so an epoch with a
    record the broker refused is never committed."""

    def __init__(self, config: dict[str, Any]) -> None:
        from confluent_kafka import Producer

        self.producer = Producer(config)
        self._failures: list[str] = []

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self._failures.append(f"{message.topic()}[{message.partition()}]: {error}")

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        on_delivered: Callable[[Any, Any], None] | None = None,
        **kwargs: Any,
    ) -> None:
        """``on_delivered(error, message)`` is called too, after the failure bookkeeping."""
        callback = self._delivered
        if on_delivered is not None:

            def callback(error: Any, message: Any) -> None:
                self._delivered(error, message)
                on_delivered(error, message)

        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=callback, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.05)

    def flush(self, timeout: float) -> int:
        return self.producer.flush(timeout)

    def poll(self, timeout: float) -> int:
        return self.producer.poll(timeout)

    def take_failures(self) -> list[str]:
        failures, self._failures = self._failures, []
        return failures


class Aborted(Exception):
    """The epoch was given up (partitions revoked, or the worker is stopping)."""


class EffectWriter(threading.Thread):
    """Applies epochs one at a time, in order; at most one waits while another is applied."""

    def __init__(
        self,
        store: Store,
        producer: RecordProducer,
        codec: Codec,
        write_checkpoint: Callable[[int, bytes, bool], None],
        commit: Callable[[list[TopicPartition]], None],
    ) -> None:
        super().__init__(name="driftline-effects", daemon=True)
        self.store = store
        self.producer = producer
        self.codec = codec
        self.write_checkpoint = write_checkpoint
        self.commit = commit
        self._queue: queue.Queue[Epoch | None] = queue.Queue(maxsize=1)
        self._idle = threading.Event()
        self._idle.set()
        self._abort = threading.Event()
        # held while checkpoints are written and offsets committed; a revocation takes it to
        # be sure no stale checkpoint lands after the partitions moved
        self.commit_lock = threading.Lock()
        self.error: BaseException | None = None
        self.outage: str | None = None  # what we are waiting for, if anything
        self.outage_since: float | None = None
        self.committed_epochs = 0
        self.write_seconds = 0.0

    # -- the input loop's side --------------------------------------------------------------
    def submit(self, epoch: Epoch, timeout: float) -> bool:
        """Hand over an epoch; False if the previous one is still being applied."""
        if self.error is not None:
            raise RuntimeError("the effect writer failed") from self.error
        try:
            self._idle.clear()
            self._queue.put(epoch, timeout=timeout)
            return True
        except queue.Full:
            if self._queue.empty():
                self._idle.set()
            return False

    def send_decisions(self, epoch: Epoch) -> None:
        """Produce the epoch's decision records (drift, alerts, retraining, verdicts) now, on
        the input thread, instead of after the epoch's rows: a DriftEvent waited for the
        previous epoch's inserts and checkpoints, ~2 s at half load (p99 3.2 s in
        benchmarks/pipeline.py). Safe for at-least-once: the records carry deterministic ids,
        and the epoch's offsets are still committed only after ``_flush`` saw every record of
        this producer acknowledged; if the epoch is replayed, so are these records, with the
        same ids. The cost: a consumer of a DriftEvent may query ClickHouse before its rows
        landed (docs/alerting.md)."""
        for drift in epoch.drift_events:
            self._record(topics.DRIFT, drift["model_id"], "DriftEvent", drift)
        for alert in epoch.alerts:
            self._record(topics.ALERTS, alert["model_id"], "AlertEvent", alert)
        for request in epoch.retraining:
            self._record(topics.RETRAINING, request["model_id"], "RetrainingRequested", request)
        for topic, schema, record in epoch.records:
            self._record(topic, record["model_id"], schema, record)
        sent = len(epoch.drift_events) + len(epoch.alerts) + len(epoch.retraining)
        sent += len(epoch.records)
        epoch.sent_decisions += sent
        epoch.drift_events, epoch.alerts, epoch.retraining, epoch.records = [], [], [], []
        if sent:
            self.producer.poll(0)  # serve delivery reports; the records go out within linger.ms

    def busy(self) -> bool:
        return not self._idle.is_set() or not self._queue.empty()

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.busy():
            if self.error is not None or time.monotonic() > deadline:
                return False
            self._idle.wait(0.05)
        return True

    def abort(self) -> None:
        """Give up whatever is queued or being applied (not committed, to be replayed)."""
        self._abort.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        with self.commit_lock:
            pass  # a checkpoint being written finishes; none starts after this
        self.wait_idle(60.0)
        self._abort.clear()

    def stop(self) -> None:
        self._queue.put(None)

    # -- the thread --------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            epoch = self._queue.get()
            if epoch is None:
                self._idle.set()
                return
            started = time.monotonic()
            try:
                self._apply(epoch)
                self.committed_epochs += 1
            except Aborted:
                log.info("an uncommitted epoch was given up (it will be replayed)")
            except BaseException as exc:  # noqa: BLE001 - reported to the input loop
                log.exception("writing an epoch failed; nothing of it is committed")
                self.error = exc
                self._idle.set()
                return
            finally:
                self.write_seconds += time.monotonic() - started
            if self._queue.empty():
                self._idle.set()

    def _apply(self, epoch: Epoch) -> None:
        for table, parts in epoch.columns.items():
            if parts:
                columns = {name: concat_chunks([p[name] for p in parts]) for name in parts[0]}
                token = content_token(table, columns)
                self._retry_store(
                    table,
                    lambda t=table, c=columns, k=token: self.store.insert(t, c, dedup_token=k),
                )
        for table, rows in epoch.rows.items():
            if rows:
                token = content_token(table, rows)
                self._retry_store(
                    table,
                    lambda t=table, r=rows, k=token: self.store.insert_rows(t, r, dedup_token=k),
                )
        self._check_abort()
        for drift in epoch.drift_events:
            self._record(topics.DRIFT, drift["model_id"], "DriftEvent", drift)
        for alert in epoch.alerts:
            self._record(topics.ALERTS, alert["model_id"], "AlertEvent", alert)
        for request in epoch.retraining:
            self._record(topics.RETRAINING, request["model_id"], "RetrainingRequested", request)
        for topic, schema, record in epoch.records:
            self._record(topic, record["model_id"], schema, record)
        for letter in epoch.dead_letters:
            self.producer.produce(
                topics.DLQ,
                letter.source.key,
                letter.payload,
                headers=letter.headers(),
            )
        with self.commit_lock:
            self._check_abort()
            for partition, (record, full) in sorted(epoch.checkpoints.items()):
                self.write_checkpoint(partition, record, full)
            self._flush()
            self._check_abort()
            if epoch.commit_offsets:
                self.commit(epoch.commit_offsets)

    def _record(self, topic: str, model_id: str, schema: str, record: dict[str, Any]) -> None:
        self.producer.produce(topic, model_id.encode(), self.codec.encode(schema, record))

    def _check_abort(self) -> None:
        if self._abort.is_set():
            raise Aborted()

    def _retry_store(self, table: str, insert: Callable[[], Any]) -> None:
        """Insert until it lands; a store outage is waited out for as long as it lasts.
        Errors that retrying cannot fix (``StoreError`` that is not ``StoreUnavailable``)
        propagate and stop the worker: nothing of the epoch is committed."""
        what = f"ClickHouse ({table} insert)"
        delays = backoff_delays(0.1, 2.0)  # caps the recovery after an outage
        last_log = 0.0
        while True:
            self._check_abort()
            try:
                insert()
            except StoreUnavailable as exc:
                now = time.monotonic()
                if self.outage is None:
                    self.outage, self.outage_since = what, now
                if now - last_log >= 30.0:
                    log.warning(
                        "waiting for %s (down %.0f s; not consuming meanwhile): %s",
                        what,
                        now - (self.outage_since or now),
                        str(exc)[:300],
                    )
                    last_log = now
                time.sleep(next(delays))
                continue
            if self.outage is not None:
                log.info(
                    "%s is back after %.0f s", self.outage, time.monotonic() - self.outage_since
                )
                self.outage = self.outage_since = None
            return

    def _flush(self) -> None:
        """Wait until the broker acknowledged every queued record (as long as it takes)."""
        started = time.monotonic()
        last_log = started
        while True:
            remaining = self.producer.flush(1.0)
            if remaining == 0:
                break
            self._check_abort()
            now = time.monotonic()
            if self.outage is None:
                self.outage, self.outage_since = "the Kafka broker (producer)", started
            if now - last_log >= 30.0:
                log.warning(
                    "waiting for the broker: %d records unacknowledged for %.0f s",
                    remaining,
                    now - started,
                )
                last_log = now
        if self.outage is not None and self.outage.startswith("the Kafka broker"):
            log.info("the broker acknowledged everything after %.0f s", time.monotonic() - started)
            self.outage = self.outage_since = None
        failures = self.producer.take_failures()
        if failures:
            raise RuntimeError(
                f"the broker refused {len(failures)} records, e.g. {failures[0]}"
            )
