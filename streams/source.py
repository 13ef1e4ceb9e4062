"""The input loop: librdkafka's batch consumer over the co-partitioned input topics.

It owns the assignment of the two input topics (range assignment: partition ``p`` of both
topics goes to the same worker), the state that moves with it (restored from the changelog
checkpoint when a partition arrives, positions included), and the offsets it commits (only
through the :class:`~driftline.streams.effects.EffectWriter`, after every effect landed).

Per ``consume()`` batch: process (decode, join, detect), evaluate alert rules, add to the
current epoch; every ``commit_interval_s`` the epoch, with a checkpoint of each partition it
touched, goes to the writer, which applies it while the next epoch is being processed. When the
writer is still busy with the previous epoch (a store or broker outage), consumption pauses and
the loop keeps polling so the worker stays in its group, until the writer is free again.

faust's own per-message consumer capped a worker at ~5,400 messages/s with an empty agent on
this machine; librdkafka's ``consume(num_messages)`` reads the same backlog at ~180,000/s
(benchmarks/pipeline.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_STORED, Consumer, KafkaError, TopicPartition
from driftline.schemas import topics
from driftline.sinks.resilience import quiet_kafka_config
from driftline.streams.alerting import AlertEvaluator
from driftline.streams.checkpoint import Checkpoints, RestoreInterrupted
from driftline.streams.effects import EffectWriter, Epoch
from driftline.streams.kv import PartitionAlerts
from driftline.streams.processor import BatchProcessor, BatchResult, SourceMessage
from driftline.streams.state import PartitionState

log = logging.getLogger("driftline.worker")

INPUTS = (topics.PREDICTIONS, topics.OUTCOMES)


@dataclass(frozen=True)
class SourceConfig:
    bootstrap: str
    group_id: str
    batch_max_events: int = 5000
    # How long the loop waits for the first message when librdkafka has fetched none (what
    # it has fetched is taken at once, see InputLoop._fetch): an idle worker wakes this often.
    batch_max_seconds: float = 0.1
    commit_interval_s: float = 1.0
    # While the writer still lands the previous epoch, the next one keeps growing (input
    # goes on being processed, decisions go out) for up to this long before consumption
    # pauses for the writer: a store slower than the commit interval then costs bigger
    # inserts, not stalled detection. It bounds the memory an outage can fill.
    max_epoch_s: float = 5.0
    # Monitoring wants a dead worker's partitions moved within seconds, not a minute: the
    # broker's minimum session timeout (6 s by default) with heartbeats well inside it.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1500
    max_poll_interval_ms: int = 300_000
    # Topics created (or re-created after a broker restart) are seen within seconds.
    metadata_refresh_ms: int = 5000
    # Outcomes read ahead of their predictions wait at most this long (wall clock) for the
    # predictions partition to look caught up.
    max_hold_s: float = 30.0
    max_held: int = 20_000  # held outcome messages per partition before its outcomes pause
    # The idle watermark (docs/alerting.md, "The idle watermark"): a caught-up partition
    # without input this long moves its models' alert clocks by this much event time, once
    # per timeout; 0 = off.
    alert_idle_timeout_s: float = 10.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceStats:
    messages: int = 0
    batches: int = 0
    epochs: int = 0
    process_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)
    assigned: tuple[int, ...] = ()
    last_error: str | None = None
    counters: Counter = field(default_factory=Counter)  # the processor's, summed
    dead_letters: Counter = field(default_factory=Counter)  # by reason
    drifts: Counter = field(default_factory=Counter)  # by stream kind
    last_drift_at: float | None = None  # wall clock (epoch seconds)
    idle_steps: int = 0  # idle-watermark steps of alert clocks (see InputLoop._advance_idle)

    def add(self, result: BatchResult) -> None:
        self.counters.update(result.counters)
        self.dead_letters.update(letter.reason for letter in result.dead_letters)
        self.drifts.update(d["stream_kind"] for d in result.drift_events)
        if result.drift_events:
            self.last_drift_at = time.time()


class InputLoop(threading.Thread):
    def __init__(
        self,
        config: SourceConfig,
        processor: BatchProcessor,
        evaluator: AlertEvaluator,
        checkpoints: Checkpoints,
        writer: EffectWriter,
        restore_state: Any,  # (partition, checkpoint chain records) -> PartitionState
    ) -> None:
        super().__init__(name="driftline-input", daemon=True)
        self.config = config
        self.processor = processor
        self.evaluator = evaluator
        self.checkpoints = checkpoints
        self.writer = writer
        self.restore_state = restore_state
        self.alert_states = PartitionAlerts(processor.states)
        self.stats = SourceStats()
        self._lag: dict[tuple[str, int], int] = {}  # see lag()
        self.stopping = threading.Event()
        self.stopped = threading.Event()
        self.error: BaseException | None = None
        self._epoch = Epoch()
        self._last_submit = time.monotonic()
        self._error_logged: dict[int, float] = {}
        # offsets whose epochs landed, committed by this thread (librdkafka's synchronous
        # commit from another thread hangs while this one is inside consume())
        self._to_commit: list[list[TopicPartition]] = []
        self._commit_lock = threading.Lock()
        self._stash: list[SourceMessage] = []  # fetched while paused, for the next epoch
        self._holding_since: dict[int, float] = {}  # partition -> when outcomes began to wait
        self._held_paused: dict[int, TopicPartition] = {}  # outcomes paused while held
        self._last_input: dict[int, float] = {}  # partition -> when a message last came
        self._idle_steps: dict[int, int] = {}  # partition -> idle steps taken since then
        self.consumer = Consumer(
            {
                "bootstrap.servers": config.bootstrap,
                "group.id": config.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "range",
                "session.timeout.ms": config.session_timeout_ms,
                "heartbeat.interval.ms": config.heartbeat_interval_ms,
                "max.poll.interval.ms": config.max_poll_interval_ms,
                "topic.metadata.refresh.interval.ms": config.metadata_refresh_ms,
                "allow.auto.create.topics": False,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "max.partition.fetch.bytes": 16 * 1024 * 1024,
                **quiet_kafka_config(log, f"input consumer ({config.bootstrap})"),
                "error_cb": self._on_error,
                **config.extra,
            }
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        try:
            self.consumer.subscribe(
                list(INPUTS),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            while not self.stopping.is_set():
                self._step()
            self._close()
        except BaseException as exc:  # noqa: BLE001 - reported to the worker
            log.exception("the input loop failed; nothing uncommitted is acknowledged")
            self.error = exc
            with contextlib.suppress(Exception):
                self.consumer.close()
        finally:
            self.stopped.set()

    def _close(self) -> None:
        """Clean stop: write what was processed (bounded wait), then leave the group so the
        partitions move at once instead of after a session timeout."""
        if not self._epoch.empty:
            # in an outage what was not written is replayed by the next owner
            with contextlib.suppress(TimeoutError):
                self._submit(block_s=5.0)
        if not self.writer.wait_idle(5.0):
            log.warning("stopping with an epoch not written; it will be replayed")
            self.writer.abort()
        self._commit_landed()
        self.consumer.close()

    # -- the loop ----------------------------------------------------------------------------
    def request_commit(self, offsets: list[TopicPartition]) -> None:
        """Called by the writer once an epoch's effects and checkpoints landed."""
        with self._commit_lock:
            self._to_commit.append(offsets)

    def _commit_landed(self) -> None:
        with self._commit_lock:
            pending, self._to_commit = self._to_commit, []
        for offsets in pending:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            except Exception as exc:  # noqa: BLE001 - the checkpoint holds the position anyway
                self._on_error_text(f"offset commit failed (the checkpoint keeps the position): {exc}")

    def _step(self) -> None:
        if self.writer.error is not None:
            raise RuntimeError("writing effects failed") from self.writer.error
        self._commit_landed()
        messages = self._fetch()
        batch, self._stash = [*self._stash, *self._source(messages)], []
        for partition in {message.partition for message in batch}:
            self._epoch.saw(partition)
        if batch or self.processor.holding():
            started = time.perf_counter()
            result = self.processor.process(batch, self._predictions_caught_up)
            alerts = self.evaluator.evaluate(result, self.alert_states)
            self._epoch.add(result, alerts, len(batch))
            self.writer.send_decisions(self._epoch)
            self.stats.process_seconds += time.perf_counter() - started
            self.stats.messages += len(batch)
            self.stats.batches += 1
            self.stats.add(result)
            self._bound_held()
            for drift in result.drift_events:
                log.info(
                    "drift: model=%s %s/%s detector=%s position=%d",
                    drift["model_id"],
                    drift["stream_kind"],
                    drift["stream_name"],
                    drift["detector"],
                    drift["position"],
                )
            for request in result.retraining:
                log.info(
                    "retraining requested: model=%s %s", request["model_id"], request["reason"]
                )
        self._lag = self._measure_lag()
        self._advance_idle(batch)
        if self._epoch.empty:
            return
        now = time.monotonic()
        if self.writer.busy():
            # overlap: keep processing into this epoch while the writer lands the last one
            # (waiting here stalled every batch behind a slow insert: produce -> DriftEvent
            # took seconds at half load in benchmarks/pipeline.py), up to max_epoch_s
            if now - self._epoch.started >= self.config.max_epoch_s:
                self._submit()
        elif now - self._last_submit >= self.config.commit_interval_s:
            # No early hand-over for epochs with drift, alerts or retraining: their records
            # already went out (EffectWriter.send_decisions) and their rows follow within the
            # interval. Handing such epochs over at once checkpointed every touched partition
            # again at every decision: with decisions every few batches (benchmarks/pipeline.py
            # latency phase) a fifth of the input thread went to PartitionState.to_bytes.
            self._submit()

    def _fetch(self) -> list[Any]:
        """Up to ``batch_max_events`` messages: whatever librdkafka has already fetched, at once;
        only when it holds nothing, wait up to ``batch_max_seconds`` for the first one.
        ``consume(n, timeout)`` alone waits out its whole timeout unless ``n`` messages come:
        below a backlog that added the timeout to every batch's delay (a tenth of a second
        per cycle, and longer cycles made bigger, slower batches: benchmarks/pipeline.py's
        latency phase)."""
        limit = self.config.batch_max_events
        messages = self.consumer.consume(limit, 0)
        if messages:
            return messages
        first = self.consumer.poll(self.config.batch_max_seconds)
        if first is None:
            return []
        return [first, *self.consumer.consume(limit - 1, 0)] if limit > 1 else [first]

    def _advance_idle(self, batch: list[SourceMessage]) -> None:
        """The idle watermark (docs/alerting.md, "The idle watermark"): alert clocks run on
        event time, so a model that stops sending would freeze its ``for``, repeats and
        resolves. A partition
        that is caught up and has had no input for ``alert_idle_timeout_s`` moves the alert
        clocks of its models by that much event time, once per timeout that passes. The step is
        a fixed quantum from the checkpointed clock and the state it leaves is checkpointed
        like any other: a replay after a crash takes the same steps to the same records."""
        timeout = self.config.alert_idle_timeout_s
        if timeout <= 0:
            return
        now = time.monotonic()
        for partition in {message.partition for message in batch}:
            self._last_input[partition] = now
            self._idle_steps.pop(partition, None)
        for partition in sorted(self.stats.assigned):
            since = self._last_input.setdefault(partition, now)
            state = self.processor.states.get(partition)
            if state is None or not state.alerts or state.held:
                continue
            if any(self._lag.get((topic, partition), 0) for topic in INPUTS):
                continue  # a backlog is not idleness: its event times move the clocks
            due = int((now - since) // timeout)
            done = self._idle_steps.get(partition, 0)
            if due <= done:
                continue
            self._idle_steps[partition] = due
            models = sorted(state.alerts)
            outcome = self.evaluator.advance_idle(
                models,
                round((due - done) * timeout * 1000),
                self.alert_states,
                dict.fromkeys(models, partition),
            )
            self._epoch.saw(partition)
            self._epoch.add(BatchResult(), outcome, 0)
            self.writer.send_decisions(self._epoch)
            self.stats.idle_steps += due - done

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages not yet applied per assigned (topic, partition), as of the input thread's
        latest ``consume()``. Safe from any thread: a scrape must not touch the consumer, whose
        calls from another thread block until this thread's ``consume()`` returns (a
        ``/metrics`` request hung faust's event loop, and with it SIGTERM, that way)."""
        return dict(self._lag)

    def _measure_lag(self) -> dict[tuple[str, int], int]:
        """By the cached high watermarks of the latest fetches (no broker round trip); only
        on the input thread."""
        out: dict[tuple[str, int], int] = {}
        for partition in self.stats.assigned:
            state = self.processor.states.get(partition)
            for topic in INPUTS:
                try:
                    _, high = self.consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), cached=True
                    )
                except Exception:  # noqa: BLE001 - not known yet
                    continue
                if high >= 0:
                    position = state.next_offsets.get(topic, 0) if state else 0
                    out[(topic, partition)] = max(0, high - position)
        return out

    def _bound_held(self) -> None:
        """Outcomes held for their predictions stay in memory: past ``max_held`` messages
        on a partition its outcomes are paused until the predictions catch up."""
        for partition, state in self.processor.states.items():
            held = len(state.held)
            if not held:
                self._holding_since.pop(partition, None)
            if held > self.config.max_held and partition not in self._held_paused:
                tp = TopicPartition(topics.OUTCOMES, partition)
                self.consumer.pause([tp])
                self._held_paused[partition] = tp
            elif held < self.config.max_held // 10 and partition in self._held_paused:
                self.consumer.resume([self._held_paused.pop(partition)])

    def _predictions_caught_up(self, partition: int) -> bool:
        """Whether this worker has read partition ``partition`` of the predictions topic to
        its end: the consumer's position (which steps over transaction markers) against the
        high watermark of the latest fetch. Outcomes held longer than ``max_hold_s`` are
        released anyway: a liveness bound for a predictions partition that looks behind
        forever (e.g. a stale watermark)."""
        now = time.monotonic()
        since = self._holding_since.setdefault(partition, now)
        if now - since > self.config.max_hold_s:
            self._holding_since.pop(partition, None)
            return True
        tp = TopicPartition(topics.PREDICTIONS, partition)
        try:
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            (position,) = self.consumer.position([tp])
        except Exception:  # noqa: BLE001 - unknown: do not hold outcomes on a guess
            return True
        if high < 0 or position.offset < 0:
            return True
        caught_up = position.offset >= high
        if caught_up:
            self._holding_since.pop(partition, None)
        return caught_up

    def _submit(self, block_s: float | None = None) -> None:
        """Checkpoint the touched partitions and hand the epoch to the writer. While the
        writer is busy (an outage), pause consumption and keep polling (group membership)."""
        epoch = self._epoch
        self._checkpoint(epoch)
        deadline = None if block_s is None else time.monotonic() + block_s
        paused: list[TopicPartition] = []
        try:
            while not self.writer.submit(epoch, timeout=0.05):
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError("the writer did not take the last epoch in time")
                if not paused:
                    paused = self.consumer.assignment()
                    self.consumer.pause(paused)
                if self.writer.error is not None:
                    raise RuntimeError("writing effects failed") from self.writer.error
                # serves rebalance callbacks and heartbeats; a message fetched before the
                # pause is kept for the next epoch (its position is already past it)
                self._stash += self._source(self.consumer.consume(100, 0.2))
                if self._epoch is not epoch:  # a revocation gave the epoch up meanwhile
                    return
        finally:
            if paused:
                self.consumer.resume(self.consumer.assignment())
                if self._held_paused:  # still waiting for their predictions
                    self.consumer.pause(list(self._held_paused.values()))
        self.stats.epochs += 1
        self._epoch = Epoch()
        self._last_submit = time.monotonic()

    def _source(self, messages: list[Any]) -> list[SourceMessage]:
        out = []
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_error(error)
                continue
            out.append(
                SourceMessage(
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    message.key(),
                    message.value(),
                )
            )
        return out

    def _checkpoint(self, epoch: Epoch) -> None:
        for partition in sorted(epoch.partitions):
            state = self.processor.states.get(partition)
            if state is not None:
                epoch.checkpoints[partition] = state.checkpoint()
                epoch.commit_offsets += [
                    TopicPartition(topic, partition, offset)
                    for topic, offset in sorted(state.next_offsets.items())
                ]

    # -- rebalances --------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions})
        started = time.monotonic()
        for number in numbers:  # the idle timer of an arriving partition starts now
            self._last_input.pop(number, None)
            self._idle_steps.pop(number, None)
        for p in numbers:
            try:
                records = self.checkpoints.restore(p, stopping=self.stopping)
            except RestoreInterrupted:
                # stopping: nothing of these partitions was read; the next owner restores them
                self.processor.states.clear()
                log.info("stopped while restoring partition %d", p)
                return
            state = self.restore_state(p, records) if records is not None else PartitionState(p)
            self.processor.states[p] = state
        restored: list[TopicPartition] = []
        for tp in partitions:
            state = self.processor.states[tp.partition]
            nxt = state.next_offsets.get(tp.topic)
            tp.offset = nxt if nxt is not None else OFFSET_STORED
            if nxt is not None:
                restored.append(TopicPartition(tp.topic, tp.partition, nxt))
        consumer.assign(partitions)
        if restored:
            # A checkpoint lands only after its epoch's effects, and the offset commit after
            # it: a worker killed between the two leaves the group's committed offsets behind
            # its state. With no new input nothing would ever commit them, and the group would
            # show lag for good (seen in the fault suite). The checkpoint is the truth: commit it.
            with self._commit_lock:
                self._to_commit.append(restored)
        self.stats.assigned = tuple(numbers)
        log.info(
            "assigned partitions %s (state restored in %.2f s)",
            numbers,
            time.monotonic() - started,
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Write what was processed for these partitions if the writer can (bounded), else
        give it up: it is replayed from the last checkpoint by whoever gets the partitions."""
        # (inside a librdkafka callback: no polling here, so no pause loop either)
        if not self._epoch.empty:
            self._checkpoint(self._epoch)
            self.writer.submit(self._epoch, timeout=10.0)
        if not self.writer.wait_idle(10.0):
            log.warning("partitions revoked during an outage; the unwritten epoch is replayed")
            self.writer.abort()
        self._commit_landed()
        self._forget()
        self._unpause(consumer, partitions)
        consumer.unassign()
        log.info("partitions revoked")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning("partitions lost (session timed out); uncommitted work is replayed")
        self.writer.abort()
        self._forget()
        self._unpause(consumer, partitions)

    @staticmethod
    def _unpause(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """librdkafka keeps a partition's pause flag across a revoke and re-assignment to the
        same consumer (librdkafka#1849): a partition paused during an outage and revoked
        mid-pause came back paused and was never read again (a worker idle for good after a
        rebalance, seen in the fault suite). Resume while still assigned; resuming after a new
        assign() can race the assign's start offset (librdkafka#2190)."""
        with contextlib.suppress(Exception):
            consumer.resume(partitions)

    def _forget(self) -> None:
        with self._commit_lock:
            self._to_commit = []
        self._stash = []
        self._holding_since.clear()
        self._held_paused.clear()  # a new assignment starts unpaused
        self.processor.states.clear()
        self.checkpoints.forget()
        self._epoch = Epoch()
        self.stats.assigned = ()

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        self._on_error_text(str(error), error.code())
        if error.fatal():
            raise RuntimeError(f"fatal Kafka error: {error}")

    def _on_error_text(self, text: str, kind: int = -1) -> None:
        self.stats.last_error = text
        now = time.monotonic()
        if now - self._error_logged.get(kind, 0.0) >= 30.0:  # once per interval, per kind
            log.warning("kafka: %s", text)
            self._error_logged[kind] = now
