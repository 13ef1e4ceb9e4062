"""The worker: a faust app for lifecycle, web (health, readiness, metrics) and timers, around
the data path that librdkafka's batch consumer drives.

faust-streaming's per-message consumer loop capped one worker at ~5,400 messages/s even with an
empty agent, so the two high-volume input topics are not faust agents: an
:class:`~driftline.streams.source.InputLoop` thread consumes them in batches and owns their
assignment, state and offsets, an :class:`~driftline.streams.effects.EffectWriter` thread
lands each epoch's effects and only then commits. faust starts and stops them with the app
(signals, logging), serves ``/health``, ``/ready`` and ``/metrics``, and runs the status timer.
faust's own Kafka clients are switched off: nothing of faust joins the input topics' group.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import faust
from driftline.schemas import Codec, topics
from driftline.schemas.control_plane import CompactedTopicFollower
from driftline.sinks.base import Store
from driftline.sinks.resilience import quiet_kafka_config
from driftline.streams import profiles, versions
from driftline.streams.alerting import AlertEvaluator
from driftline.streams.checkpoint import Checkpoints, changelog_topic, ensure_changelog
from driftline.streams.effects import EffectWriter, RecordProducer
from driftline.streams.processor import BatchProcessor, ProcessorConfig, warm_up
from driftline.streams.rulebook import ControlPlaneFollower, MonitorConfigs, RuleBook
from driftline.streams.source import InputLoop, SourceConfig
from driftline.streams.state import PartitionState
from faust.app.base import BootStrategy
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger("driftline.worker")


@dataclass(frozen=True)
class WorkerConfig:
    bootstrap: str
    app_id: str = "driftline-worker"
    partitions: int = 4
    replication: int = 1
    datadir: str = ".driftline/faust"
    batch_max_events: int = 5000
    batch_max_seconds: float = 0.1
    commit_interval_s: float = 1.0
    session_timeout_ms: int = 6000
    alert_idle_timeout_s: float = 10.0  # the idle watermark (streams/source.py)
    status_interval_s: float = 10.0  # how often a busy worker logs its status line
    web_host: str = "127.0.0.1"
    web_port: int | None = None
    processor: ProcessorConfig = field(default_factory=ProcessorConfig)


class _NoKafkaBoot(BootStrategy):
    """faust without its Kafka consumer and producer: the data path is ours."""

    enable_kafka = False


class _App(faust.App):
    BootStrategy = _NoKafkaBoot


class Worker:
    """Builds the app around a store and a codec; ``run()`` blocks until stopped."""

    def __init__(self, config: WorkerConfig, store: Store, codec: Codec | None = None) -> None:
        self.config = config
        self.store = store
        self.codec = codec or Codec()
        self.producer = RecordProducer(
            {
                "bootstrap.servers": config.bootstrap,
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "lz4",
                "partitioner": "murmur2_random",
                # an outage is waited out by the writer, never turned into lost records
                "message.timeout.ms": 0,
                **quiet_kafka_config(log, f"producer ({config.bootstrap})"),
            }
        )
        self.checkpoints = Checkpoints(
            config.bootstrap, changelog_topic(config.app_id), self.producer
        )
        self.processor = BatchProcessor(self.codec, config.processor)
        # Reference profiles (streams/profiles.py), picked up as they change (no restart).
        self.processor.references = profiles.ReferenceBook(self.codec)
        self.reference_follower = CompactedTopicFollower(
            config.bootstrap,
            self.processor.references.on_record,
            topics.REFERENCES,
            name="references",
            create=True,
            client_config=quiet_kafka_config(log, f"references reader ({config.bootstrap})"),
        )
        # Published model versions (streams/versions.py): every version, read whole.
        self.processor.versions = versions.VersionBook(self.codec)
        self.models_follower = CompactedTopicFollower(
            config.bootstrap,
            self.processor.versions.on_record,
            topics.MODELS,
            name="model versions",
            create=True,
            client_config=quiet_kafka_config(log, f"model versions reader ({config.bootstrap})"),
        )
        # Alert rules from the control-plane topic, applied as they change (no restart).
        self.rulebook = _AnnouncingRuleBook()
        self.follower = ControlPlaneFollower(
            config.bootstrap,
            topics.RULES,
            self.rulebook,
            client_config=quiet_kafka_config(log, f"alert rules reader ({config.bootstrap})"),
        )
        self.evaluator = AlertEvaluator(
            self.rulebook, retrain_cooldown_ms=config.processor.retraining_cooldown_ms
        )
        # Each model's own monitoring settings, from the same control plane (no restart).
        if config.processor.profiles is not None:
            self.processor.monitor_configs = MonitorConfigs(
                config.processor.profiles, self.rulebook
            )
        self.writer = EffectWriter(
            store, self.producer, self.codec, self.checkpoints.write, self._commit
        )
        self.source = InputLoop(
            SourceConfig(
                bootstrap=config.bootstrap,
                group_id=config.app_id,
                batch_max_events=config.batch_max_events,
                batch_max_seconds=config.batch_max_seconds,
                commit_interval_s=config.commit_interval_s,
                session_timeout_ms=config.session_timeout_ms,
                alert_idle_timeout_s=config.alert_idle_timeout_s,
            ),
            self.processor,
            self.evaluator,
            self.checkpoints,
            self.writer,
            self._restore,
        )
        self.app = _App(
            f"{config.app_id}-control",
            broker=f"kafka://{config.bootstrap}",
            datadir=config.datadir,
            autodiscover=False,
            web_enabled=config.web_port is not None,
            web_bind=config.web_host,
            web_host=config.web_host,
            web_port=config.web_port or 6066,
            web_in_thread=False,
        )
        self.metrics = CollectorRegistry()
        self.metrics.register(_Collector(self))
        self._last_report = (time.monotonic(), 0, 0)
        self._routes()
        self.app.timer(config.status_interval_s)(self._report)
        self.app.task(self._watch)
        self.app.on_before_shutdown.connect(self._on_shutdown)

    # -- the data path -----------------------------------------------------------------------
    def _restore(self, partition: int, records: list[bytes]) -> PartitionState:
        cfg = self.config.processor
        return PartitionState.from_chain(records, cfg.join_ttl_ms, cfg.orphan_ttl_ms)

    def _commit(self, offsets: list[Any]) -> None:
        self.source.request_commit(offsets)

    async def _watch(self) -> None:
        """Start the data path; stop the app (exit code 1) if it fails."""
        await asyncio.get_running_loop().run_in_executor(None, self._start_data_path)
        while True:
            await asyncio.sleep(0.5)
            error = self.source.error or self.writer.error
            if error is None and self.source.stopping.is_set():
                return  # a clean stop (SIGTERM) is under way
            if error is not None or self.source.stopped.is_set():
                log.error("the data path stopped: %r; shutting down", error)
                self._exit_code = 1
                # the same path as SIGTERM: faust stops the app, run() returns 1
                self._faust_worker._schedule_shutdown(signal.SIGTERM)
                return

    def _start_data_path(self) -> None:
        started = time.monotonic()
        warm_up(self.codec, self.config.processor)
        # Everything loaded so far (faust, numba, pandas, pyarrow, FastAPI: hundreds of
        # thousands of objects) lives as long as the process: out of the collector's sight,
        # a full collection no longer walks it. Measured in benchmarks/pipeline.py's
        # single-event backlog: full collections of ~90 ms every ~0.25 s, freeing nothing.
        gc.collect()
        gc.freeze()
        log.info("kernels and decoders loaded in %.1f s", time.monotonic() - started)
        ensure_changelog(
            self.config.bootstrap,
            changelog_topic(self.config.app_id),
            self.config.partitions,
            self.config.replication,
        )
        self.writer.start()
        self.source.start()

    async def _on_shutdown(self, app: Any, **kwargs: Any) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._stop_data_path)

    def _stop_data_path(self) -> None:
        if self.source.is_alive():
            self.source.stop()
            self.source.stopped.wait(15.0)
        if self.writer.is_alive():
            self.writer.stop()
            self.writer.join(5.0)
        followers = (self.follower, self.reference_follower, self.models_follower)
        for follower in followers:
            follower.stop()
        for follower in followers:
            follower.close()

    # -- health, readiness, metrics ----------------------------------------------------------
    def status(self) -> dict[str, Any]:
        outage = self.writer.outage
        alive = self.source.is_alive() and self.writer.is_alive()
        return {
            "alive": alive,
            "ready": alive and outage is None,
            "waiting_for": outage,
            "down_seconds": (
                round(time.monotonic() - self.writer.outage_since, 1)
                if self.writer.outage_since
                else 0.0
            ),
            "assigned_partitions": list(self.source.stats.assigned),
            "messages": self.source.stats.messages,
            "epochs_committed": self.writer.committed_epochs,
            "last_kafka_error": self.source.stats.last_error,
        }

    def _routes(self) -> None:
        @self.app.page("/health")
        async def health(web: Any, request: Any) -> Any:
            status = self.status()
            return web.json(status, status=200 if status["alive"] else 503)

        @self.app.page("/ready")
        async def ready(web: Any, request: Any) -> Any:
            status = self.status()
            return web.json(status, status=200 if status["ready"] else 503)

        @self.app.page("/metrics")
        async def metrics(web: Any, request: Any) -> Any:
            return web.text(
                generate_latest(self.metrics).decode(), content_type="text/plain; version=0.0.4"
            )

    async def _report(self) -> None:
        stats = self.source.stats
        now = time.monotonic()
        then, before, epochs_before = self._last_report
        self._last_report = (now, stats.messages, self.writer.committed_epochs)
        idle = stats.messages == before and self.writer.committed_epochs == epochs_before
        if idle and self.writer.outage is None:
            return
        log.info(
            "processed %d messages (%.0f/s over the last %.0f s; %.1f s processing, %.1f s "
            "writing in total); partitions %s%s",
            stats.messages,
            (stats.messages - before) / max(now - then, 1e-9),
            now - then,
            stats.process_seconds,
            self.writer.write_seconds,
            list(stats.assigned),
            f"; waiting for {self.writer.outage}" if self.writer.outage else "",
        )

    def run(self, loglevel: str = "info", verbose: bool = False) -> int:
        """Run until SIGTERM/SIGINT; ``verbose`` keeps faust's own service lines (each of
        its services starting and stopping), which are otherwise left out."""
        self._exit_code = 0
        try:
            # Read the alert rules before the first batch; changes keep arriving while we run.
            self.follower.start(30.0)
            if not self.follower.wait_ready(30.0):
                log.warning("alert rules not fully read within 30 s; evaluating with what is "
                            "known")  # fmt: skip
            self.reference_follower.start(30.0)
            if not self.reference_follower.wait_ready(30.0):
                log.warning("references not fully read within 30 s; models without one use "
                            "their first events until it arrives")  # fmt: skip
            self.models_follower.start(30.0)
            if not self.models_follower.wait_ready(30.0):
                log.warning("model versions not fully read within 30 s; verdicts may lack "
                            "their published record until it arrives")  # fmt: skip
            snapshot = self.rulebook.snapshot()
            log.info("alert rules: %d rules, %d silences from %s",
                     len(snapshot.rules), len(snapshot.silences), topics.RULES)  # fmt: skip
            self.rulebook.announce = True  # from now on, one line per rule that changes
            self._faust_worker = worker = _FaustWorker(
                self.app, loglevel=loglevel, quiet=True, verbose=verbose
            )
            worker.execute_from_commandline()
        except SystemExit as exc:
            return int(exc.code or self._exit_code)
        finally:
            self._stop_data_path()
        return self._exit_code


class _FaustWorker(faust.Worker):
    """faust's worker with its service tree's lines (``[^--Monitor]: Starting...``, a dozen at
    each start and stop) left out unless ``verbose``: the worker says what matters itself."""

    def __init__(self, *args: Any, verbose: bool = False, **kwargs: Any) -> None:
        self.verbose = verbose
        super().__init__(*args, **kwargs)

    def on_setup_root_logger(self, logger: Any, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        if not self.verbose:
            # faust's and mode's services, and our faust.App subclass (it logs under this
            # module's name); the worker's own lines use "driftline.worker".
            for name in ("faust", "mode", __name__):
                logging.getLogger(name).setLevel(max(level, logging.WARNING))


class _AnnouncingRuleBook(RuleBook):
    """The rule book, logging each alert rule and model's monitoring settings that arrive,
    change or go once the worker runs (``announce``), so that an operator sees the worker
    picked them up."""

    announce = False

    def apply(self, key: bytes | str, value: bytes | None) -> bool:
        changed = super().apply(key, value)
        if changed and self.announce:
            text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
            kind, _, ident = text.partition(":")
            if kind == "rule":
                version = self.version("rule", ident)
                rule = next((r for r in self.snapshot().rules if r.id == ident), None)
                if value is None or rule is None:
                    log.info("alert rule %s removed or disabled (v%s)", ident, version)
                else:
                    log.info("alert rule %r (%s) loaded, v%s", rule.name, ident, version)
            elif kind == "monitoring":
                settings = self.monitoring(ident)
                if value is None or settings is None:
                    log.info("monitoring settings of model %r removed or unusable: the "
                             "worker's defaults apply", ident)  # fmt: skip
                else:
                    log.info("monitoring settings of model %r loaded, v%d: %s", ident,
                             settings.version, dict(settings.values))  # fmt: skip
        return changed


class _Collector:
    """The worker's figures for Prometheus, read when scraped."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Any:
        status = self.worker.status()
        source, writer = self.worker.source, self.worker.writer
        stats = source.stats
        yield GaugeMetricFamily(
            "driftline_worker_ready", "1 while consuming (not waiting for the store or broker)",
            value=float(status["ready"]),
        )
        yield GaugeMetricFamily(
            "driftline_worker_outage_seconds",
            "How long the worker has been waiting for the store or broker (0: not waiting)",
            value=status["down_seconds"],
        )
        yield GaugeMetricFamily(
            "driftline_worker_assigned_partitions",
            "Input partitions assigned to this worker",
            value=len(stats.assigned),
        )
        yield CounterMetricFamily(
            "driftline_worker_messages", "Input messages processed", value=stats.messages
        )
        events = CounterMetricFamily(
            "driftline_worker_events", "Events applied, by kind", labels=["kind"]
        )
        for kind in ("predictions", "outcomes", "joined", "duplicates", "replayed"):
            events.add_metric([kind], stats.counters.get(kind, 0))
        yield events
        letters = CounterMetricFamily(
            "driftline_worker_dead_letters", "Records sent to the DLQ, by reason", labels=["reason"]
        )
        for reason, n in sorted(stats.dead_letters.items()):
            letters.add_metric([reason], n)
        yield letters
        drifts = CounterMetricFamily(
            "driftline_worker_drift_events", "Drift events, by stream kind", labels=["stream_kind"]
        )
        for kind, n in sorted(stats.drifts.items()):
            drifts.add_metric([kind], n)
        yield drifts
        yield CounterMetricFamily(
            "driftline_worker_segment_events_untested",
            "Event x segment key pairs in no window: values over DRIFTLINE_MONITOR_MAX_SEGMENTS",
            value=stats.counters.get("segment_events_untested", 0),
        )
        if stats.last_drift_at is not None:
            yield GaugeMetricFamily(
                "driftline_worker_last_drift_timestamp_seconds",
                "Wall-clock time of the latest drift event",
                value=stats.last_drift_at,
            )
        seconds = CounterMetricFamily(
            "driftline_worker_busy_seconds",
            "Time spent processing batches and writing epochs",
            labels=["stage"],
        )
        seconds.add_metric(["process"], stats.process_seconds)
        seconds.add_metric(["write"], writer.write_seconds)
        yield seconds
        yield CounterMetricFamily(
            "driftline_worker_epochs_committed",
            "Epochs whose effects landed and whose offsets were committed",
            value=writer.committed_epochs,
        )
        lag = GaugeMetricFamily(
            "driftline_worker_consumer_lag",
            "Messages not yet applied per assigned input partition",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in sorted(source.lag().items()):
            lag.add_metric([topic, str(partition)], n)
        yield lag
