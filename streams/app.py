"""The faust worker: one agent over the co-partitioned prediction and outcome topics.

Per Kafka batch (``take_events``): the processor decodes, joins and detects; then, in this
order, rows go to ClickHouse, drift/retraining/dead-letter records to their topics, table
writes to their changelogs, and the producer is flushed. Only then does faust ack the batch,
so a crash anywhere replays it (at-least-once) and the deterministic ids, ReplacingMergeTree
tables and offsets kept in model state make the replay harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import faust
from confluent_kafka import Producer
from driftline.schemas import Codec, topics
from driftline.sinks.base import Store
from driftline.sinks.writer import Sink
from driftline.streams.alerting import AlertEvaluator, AlertOutcome
from driftline.streams.kv import BufferedKV, FaustTableKV, produce
from driftline.streams.processor import BatchProcessor, BatchResult, ProcessorConfig, SourceMessage
from driftline.streams.rulebook import ControlPlaneFollower, RuleBook

log = logging.getLogger("driftline.worker")


@dataclass(frozen=True)
class WorkerConfig:
    bootstrap: str
    app_id: str = "driftline-worker"
    partitions: int = 4
    datadir: str = ".driftline/faust"
    batch_max_events: int = 5000
    batch_max_seconds: float = 0.5
    web_port: int | None = None
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)


@dataclass
class WorkerStats:
    batches: int = 0
    messages: int = 0
    started: float = field(default_factory=time.monotonic)
    counters: dict[str, int] = field(default_factory=dict)
    process_seconds: float = 0.0  # decode, join, detect
    apply_seconds: float = 0.0  # ClickHouse, topics, changelogs, producer flush

    def add(self, result: BatchResult, n: int) -> None:
        self.batches += 1
        self.messages += n
        for key, value in result.counters.items():
            self.counters[key] = self.counters.get(key, 0) + value


def _raw_topic(app: faust.App, *names: str, **kwargs: Any) -> faust.TopicT:
    return app.topic(
        *names,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        **kwargs,
    )


class Worker:
    """Builds the faust app around a store and a codec; ``run()`` blocks until stopped."""

    def __init__(self, config: WorkerConfig, store: Store, codec: Codec | None = None) -> None:
        self.config = config
        self.store = store
        self.codec = codec or Codec()
        self.sink = Sink(store, max_rows=max(50_000, config.batch_max_events * 4))
        self.stats = WorkerStats()
        self._last_report = time.monotonic()
        # chdb and the ClickHouse client block; one thread keeps them off the event loop and
        # serialises access (chdb allows one session per process).
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="driftline-sink")
        self.app = faust.App(
            config.app_id,
            broker=f"kafka://{config.bootstrap}",
            store="memory://",
            topic_partitions=config.partitions,
            datadir=config.datadir,
            autodiscover=False,
            web_enabled=config.web_port is not None,
            web_port=config.web_port or 6066,
            consumer_auto_offset_reset="earliest",
            processing_guarantee="at_least_once",
            producer_acks=-1,
            broker_max_poll_records=config.batch_max_events,
            stream_buffer_maxsize=config.batch_max_events * 4,
            table_standby_replicas=0,
        )
        self.inputs = _raw_topic(self.app, topics.PREDICTIONS, topics.OUTCOMES)
        self.states_table = self._table("model-state")
        self.join_table = self._table("join")
        # Outputs and changelog records go through librdkafka (see FaustTableKV for why).
        self.producer = Producer(
            {
                "bootstrap.servers": config.bootstrap,
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "lz4",
                "partitioner": "murmur2_random",
            }
        )
        self.states = BufferedKV(FaustTableKV(self.states_table, self.producer))
        self.join = BufferedKV(FaustTableKV(self.join_table, self.producer))
        self.processor = BatchProcessor(self.codec, config.processor, self.states, self.join)
        # Alert rules from the control-plane topic, applied as they change (no restart).
        self.rulebook = RuleBook()
        self.follower = ControlPlaneFollower(config.bootstrap, topics.RULES, self.rulebook)
        self.alert_table = self._table("alert-state")
        self.alert_states = BufferedKV(FaustTableKV(self.alert_table, self.producer))
        self.evaluator = AlertEvaluator(
            self.rulebook, retrain_cooldown_ms=config.processor.retraining_cooldown_ms
        )
        self.app.agent(self.inputs, name="monitor")(self._monitor)
        self.app.on_partitions_revoked.connect(self._on_revoked)

    def _table(self, name: str) -> faust.Table:
        changelog = _raw_topic(
            self.app,
            f"{self.config.app_id}-{name}-changelog",
            partitions=self.config.partitions,
            compacting=True,
            deleting=False,
            acks=True,
            internal=True,
        )
        return self.app.Table(
            name,
            key_type=bytes,
            value_type=bytes,
            partitions=self.config.partitions,
            changelog_topic=changelog,
        )

    async def _on_revoked(self, app: faust.App, revoked: Any, **kwargs: Any) -> None:
        # Another worker may own these partitions now; the tables (recovered from the
        # changelog) are the truth, not our cache.
        self.processor.forget()

    async def _monitor(self, stream: faust.StreamT) -> None:
        async for events in stream.take_events(
            self.config.batch_max_events, within=self.config.batch_max_seconds
        ):
            messages = [
                SourceMessage(
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    e.message.key,
                    e.message.value,
                )
                for e in events
            ]
            started = time.perf_counter()
            try:
                result = self.processor.process(messages)
                alerts = self.evaluator.evaluate(result, self.alert_states)
                processed = time.perf_counter()
                await self._apply(result, alerts)
            except BaseException:
                # Nothing of this batch is acked; drop what it changed in memory so that, if
                # faust restarts the agent in this process, the redelivered batch is applied
                # from the tables' state rather than skipped as already applied.
                for kv in (self.states, self.join, self.alert_states):
                    kv.rollback()
                self.processor.forget()
                raise
            self.stats.process_seconds += processed - started
            self.stats.apply_seconds += time.perf_counter() - processed
            self.stats.add(result, len(messages))
            self._report()
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

    def _report(self, every_seconds: float = 10.0) -> None:
        now = time.monotonic()
        if now - self._last_report < every_seconds:
            return
        elapsed = now - self.stats.started
        log.info(
            "processed %d messages in %d batches (%.0f/s since start; %.1fs processing, "
            "%.1fs writing); %s",
            self.stats.messages,
            self.stats.batches,
            self.stats.messages / elapsed if elapsed else 0.0,
            self.stats.process_seconds,
            self.stats.apply_seconds,
            ", ".join(f"{k}={v}" for k, v in sorted(self.stats.counters.items())),
        )
        self._last_report = now

    async def _apply(self, result: BatchResult, alerts: AlertOutcome) -> None:
        await asyncio.get_running_loop().run_in_executor(self._io, self._write, result, alerts)

    def _write(self, result: BatchResult, alerts: AlertOutcome) -> None:
        """Rows, then records, then table changes, then wait for the broker: in this order a
        crash at any point leaves nothing acknowledged that did not land."""
        for rows_by_table in (result.rows, alerts.rows):
            for table, rows in rows_by_table.items():
                if rows:
                    self.sink.add(table, rows)
        self.sink.flush_all()
        for drift in result.drift_events:
            produce(
                self.producer,
                topics.DRIFT,
                drift["model_id"].encode(),
                self.codec.encode("DriftEvent", drift),
            )
        for alert in alerts.alerts:
            produce(
                self.producer,
                topics.ALERTS,
                alert["model_id"].encode(),
                self.codec.encode("AlertEvent", alert),
            )
        for request in [*result.retraining, *alerts.retraining]:
            produce(
                self.producer,
                topics.RETRAINING,
                request["model_id"].encode(),
                self.codec.encode("RetrainingRequested", request),
            )
        for letter in result.dead_letters:
            produce(
                self.producer,
                topics.DLQ,
                letter.source.key,
                letter.payload,
                headers=letter.headers(),
            )
        self.states.commit()
        self.join.commit()
        self.alert_states.commit()
        remaining = self.producer.flush(60)
        if remaining:
            raise RuntimeError(f"{remaining} records not acknowledged by the broker in 60 s")

    def run(self, loglevel: str = "info") -> None:
        # Read the alert rules before the first batch; changes keep arriving while we run.
        self.follower.start(30.0)
        if not self.follower.wait_caught_up(30.0):
            log.warning("alert rules not fully read within 30 s; evaluating with what is known")
        worker = faust.Worker(self.app, loglevel=loglevel, quiet=True)
        try:
            worker.execute_from_commandline()
        finally:
            self.follower.close()
            self._io.shutdown(wait=True)
