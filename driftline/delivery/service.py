"""The delivery service: alerts from Kafka to webhooks and Alertmanager, at least once.

One asyncio loop runs everything but the Kafka clients' blocking calls: the consumer (group
``driftline-delivery``) is only touched from one dedicated thread, through an executor, so
polling never blocks the loop and librdkafka never sees two threads on the consumer at once.
Each alert becomes a task that delivers to every matching target concurrently (lanes in
:mod:`.dispatch` keep targets apart) and dead-letters what fails; the alert's offset is
committed only when that task is done, and only in offset order per partition (the committed
offset is the first one not done yet). A crash therefore re-delivers, never loses, alerts;
receivers drop duplicates by the event id.

Order: per alert fingerprint the newest state wins (:mod:`.ordering`): every decoded alert is
observed in the order book before anything is sent, a stale state is dropped, retries of a
state stop once a newer one is known, and one delivery at a time runs per (target,
fingerprint). Delivering alerts concurrently with retries was what let a RESOLVED overtake
its FIRING; a restart re-delivered a FIRING whose RESOLVED had already gone out. So when a
partition is assigned, its recent records up to the end of the partition are read back first
to learn the newest state of each fingerprint (and, for Alertmanager, what is still firing).

Back-pressure: at most ``max_in_flight`` alerts are in progress; past that the consumer pauses
its partitions (and keeps polling, so it stays in the group) until half of them are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from driftline.delivery.alertmanager import AlertmanagerForwarder, firing_alerts
from driftline.delivery.alerts import AlertDecodeError, decode_alert
from driftline.delivery.deadletter import (
    ALERTMANAGER_FAILED,
    HEADER_SUBSCRIPTION,
    WEBHOOK_FAILED,
    DeadLetterProducer,
    Source,
)
from driftline.delivery.dispatch import Dispatcher, Outcome, RetryPolicy
from driftline.delivery.ordering import AlertOrder, scan_alerts
from driftline.delivery.subscriptions import (
    ControlPlaneFollower,
    Subscription,
    active_silences_for,
    matching_subscriptions,
)
from driftline.delivery.webhook import webhook_body, webhook_headers
from driftline.schemas import topics
from driftline.schemas.registry import RegistryError
from driftline.sinks.resilience import quiet_kafka_config, wait_until

__all__ = ["DeadLetterSink", "DeliveryConfig", "DeliveryService", "OffsetLedger"]

log = logging.getLogger(__name__)


class DeadLetterSink(Protocol):
    async def send(
        self, source: Source, reason: str, detail: str, extra: Any = ()
    ) -> None: ...  # pragma: no cover


@dataclass
class DeliveryConfig:
    bootstrap: str
    group_id: str = "driftline-delivery"
    alerts_topic: str = topics.ALERTS
    rules_topic: str = topics.RULES
    dlq_topic: str = topics.DLQ
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    alertmanager_url: str | None = None
    alertmanager_resend_interval: float = 60.0
    # How far back (seconds of publish time) a newly assigned partition is read to learn the
    # newest state of each alert (so a stale state re-delivered or replayed later is dropped)
    # and the alerts still firing (so they keep being re-sent to Alertmanager); 0 reads only
    # the records not yet committed. Cover the rules' repeat_interval (4h by default): a
    # firing alert is re-published at least that often.
    rebuild_lookback: float = 24 * 3600.0
    # Public base URL of the API and dashboard, for the links in payloads (None: the API's
    # local default address).
    public_url: str | None = None
    # Fingerprints whose newest state is remembered (least recently changed go first).
    order_capacity: int = 100_000
    max_in_flight: int = 1000
    per_target_concurrency: int = 4
    max_queue_per_target: int = 256
    # PENDING alerts are a rule's "for" period: subscribers are told when it fires.
    deliver_pending: bool = False
    # Where a new consumer group starts: "latest" so a first deployment does not replay the
    # whole alert history to every webhook; a known group resumes from its commits.
    auto_offset_reset: str = "latest"
    commit_interval: float = 0.5
    drain_timeout: float = 30.0
    client_config: dict[str, Any] = field(default_factory=dict)
    # Confluent-compatible registry for the AlertEvent writer schemas; None = static manifest.
    schema_registry_url: str | None = None


async def mirror_stop(stop: asyncio.Event, event: threading.Event) -> None:
    """Set ``event`` (for a blocking wait in a thread) when ``stop`` is set."""
    await stop.wait()
    event.set()


class OffsetLedger:
    """One partition's offsets in progress; ``committable`` is the first offset not done."""

    def __init__(self) -> None:
        self._pending: dict[int, bool] = {}  # insertion order is offset order
        self.committable: int | None = None

    def add(self, offset: int) -> None:
        self._pending[offset] = False

    def done(self, offset: int) -> None:
        if offset not in self._pending:
            return
        self._pending[offset] = True
        while self._pending:
            first = next(iter(self._pending))
            if not self._pending[first]:
                break
            del self._pending[first]
            self.committable = first + 1

    def __len__(self) -> int:
        return len(self._pending)


class DeliveryService:
    """Consume alerts, deliver them to matching subscriptions (and Alertmanager), commit.

    ``deliver`` is the per-alert step and works without a consumer: tests and tools can call
    it with a follower fed through ``apply`` and any dead-letter sink.
    """

    def __init__(
        self,
        config: DeliveryConfig,
        *,
        follower: ControlPlaneFollower | None = None,
        dead_letters: DeadLetterSink | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.config = config
        # Every client of the service: a missing broker is logged once per 30 s, not per
        # reconnect (the caller's own settings win).
        self._client_config = {
            **quiet_kafka_config(log, f"delivery ({config.bootstrap})"),
            **config.client_config,
        }
        self._own_follower = follower is None
        self.follower = follower or ControlPlaneFollower(
            config.bootstrap, config.rules_topic, client_config=self._client_config
        )
        self._own_dead_letters = dead_letters is None
        self.dead_letters: DeadLetterSink | None = dead_letters
        self.dispatcher = dispatcher or Dispatcher(
            config.policy,
            per_target_concurrency=config.per_target_concurrency,
            max_queue_per_target=config.max_queue_per_target,
        )
        self.alertmanager = (
            AlertmanagerForwarder(
                config.alertmanager_url,
                self.dispatcher,
                resend_interval=config.alertmanager_resend_interval,
                public_url=config.public_url,
            )
            if config.alertmanager_url
            else None
        )
        self.codec: Any = None
        if config.schema_registry_url:
            from driftline.schemas import Codec
            from driftline.schemas.registry import ConfluentRegistry

            self.codec = Codec(ConfluentRegistry(config.schema_registry_url, auto_register=False))
        self.order = AlertOrder(config.order_capacity)
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()  # ledgers: touched by the loop and rebalance callbacks
        self._ledgers: dict[tuple[str, int], OffsetLedger] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- one alert --------------------------------------------------------------------------

    def _dead_letter_sink(self) -> DeadLetterSink:
        if self.dead_letters is None:
            self.dead_letters = DeadLetterProducer(
                self.config.bootstrap,
                self.config.dlq_topic,
                client_config=self._client_config,
            )
        return self.dead_letters

    def skip_reason(self, alert: Mapping[str, Any]) -> str | None:
        """Why ``alert`` is not delivered to anyone, or None."""
        if alert["status"] == "PENDING" and not self.config.deliver_pending:
            return "pending"
        if alert.get("silenced"):
            return "silenced"
        # A silence created after the worker evaluated the alert still counts.
        if active_silences_for(self.follower.silences(), alert):
            return "silenced"
        if alert.get("inhibited_by"):
            return "inhibited"
        return None

    async def deliver(self, alert: Mapping[str, Any], source: Source) -> list[Outcome]:
        """Deliver one (normalised) alert to every target it has; dead-letter each failure.
        Returns once every delivery is done or dead-lettered.

        A state older than one already seen for its fingerprint is dropped (``superseded``);
        PENDING states take no part in the order unless they are delivered."""
        ordered = alert["status"] != "PENDING" or self.config.deliver_pending
        if ordered and not self.order.observe(alert):
            self.stats["superseded"] += 1
            log.info("alert %s (%s of %s) superseded by a newer state; not sent",
                     alert["event_id"], alert["status"], alert["fingerprint"])  # fmt: skip
            return []
        reason = self.skip_reason(alert)
        if reason is not None:
            self.stats[f"skipped_{reason}"] += 1
            if self.alertmanager is not None and reason != "pending":
                # Stop re-sending it: Alertmanager resolves it after its endsAt.
                self.alertmanager.forget(alert["fingerprint"])
            return []
        subs = matching_subscriptions(self.follower.subscriptions(), alert)
        jobs = [self._webhook(alert, sub, source) for sub in subs]
        if self.alertmanager is not None:
            jobs.append(self._alertmanager(alert, source))
        outcomes = await asyncio.gather(*jobs)
        return [o for o in outcomes if o is not None]

    async def _webhook(
        self, alert: Mapping[str, Any], sub: Subscription, source: Source
    ) -> Outcome:
        body = webhook_body(alert, sub.id, public_url=self.config.public_url)
        target = f"subscription:{sub.id}"
        async with self.order.gate(target, alert["fingerprint"]):
            outcome = await self.dispatcher.post(
                target,
                sub.url,
                body,
                webhook_headers(sub, body, alert["event_id"]),
                superseded=lambda: self.order.superseded(alert),
            )
        if outcome.superseded:
            self.stats["superseded"] += 1
        elif outcome.ok:
            self.stats["delivered"] += 1
        else:
            self.stats["dead_lettered"] += 1
            log.warning("alert %s to subscription %s failed: %s", alert["event_id"], sub.id,
                        outcome.detail())  # fmt: skip
            await self._dead_letter_sink().send(
                source, WEBHOOK_FAILED, f"subscription={sub.id} {outcome.detail()}",
                [(HEADER_SUBSCRIPTION, sub.id)],
            )  # fmt: skip
        return outcome

    async def _alertmanager(self, alert: Mapping[str, Any], source: Source) -> Outcome | None:
        assert self.alertmanager is not None
        async with self.order.gate(self.alertmanager.target, alert["fingerprint"]):
            outcome = await self.alertmanager.forward(
                alert, source.partition, lambda: self.order.superseded(alert)
            )
        if outcome is None:
            return None
        if outcome.superseded:
            self.stats["superseded"] += 1
        elif outcome.ok:
            self.stats["alertmanager"] += 1
        else:
            self.stats["dead_lettered"] += 1
            await self._dead_letter_sink().send(source, ALERTMANAGER_FAILED, outcome.detail())
        return outcome

    async def process(self, source: Source) -> None:
        """Decode and deliver one consumed record (undecodable ones are dead-lettered)."""
        while True:
            try:
                alert = decode_alert(source.value, self.codec)
                break
            except AlertDecodeError as exc:
                self.stats["undecodable"] += 1
                await self._dead_letter_sink().send(source, exc.reason, exc.detail)
                return
            except RegistryError as exc:
                # The registry is down: nothing is wrong with the message, so wait, not DLQ.
                log.warning("schema registry unavailable (%s); retrying", exc)
                await asyncio.sleep(1.0)
        await self.deliver(alert, source)

    # -- the consumer -----------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        with self._lock:
            for tp in partitions:
                self._ledgers[(tp.topic, tp.partition)] = OffsetLedger()
        # Runs inside consume(), before any record of these partitions is returned, so what
        # is read back reaches the loop ahead of everything consumed after it.
        try:
            scanned, starts = self._read_back(consumer, partitions)
        except Exception:
            log.exception("could not read back the alert states of %s", partitions)
        else:
            self._call_in_loop(self._restore, scanned, starts)

    def _read_back(
        self, consumer: Any, partitions: list[Any]
    ) -> tuple[list[tuple[dict[str, Any], int, int]], dict[int, int]]:
        """The newest state per fingerprint in each partition, from ``rebuild_lookback`` ago
        (or where the group starts, if earlier) to the partition's end, and where the group
        starts in each partition."""
        from confluent_kafka import Consumer, TopicPartition

        starts, ends = {}, {}
        for tp in consumer.committed(partitions, timeout=10):
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            if tp.offset >= 0:
                starts[tp.partition] = tp.offset
            else:  # no commit yet: the group starts at auto.offset.reset
                starts[tp.partition] = high if self.config.auto_offset_reset == "latest" else low
            ends[tp.partition] = high
        firsts = dict(starts)
        if self.config.rebuild_lookback > 0:
            since_ms = max(0, int((time.time() - self.config.rebuild_lookback) * 1000))
            back = consumer.offsets_for_times(
                [TopicPartition(self.config.alerts_topic, p, since_ms) for p in starts],
                timeout=10,
            )
            for tp in back:
                if tp.offset >= 0:  # -1: nothing published since since_ms
                    firsts[tp.partition] = min(firsts[tp.partition], tp.offset)
        scanned = scan_alerts(
            lambda: Consumer(
                {
                    "bootstrap.servers": self.config.bootstrap,
                    **self._client_config,
                    "group.id": f"driftline-delivery-scan-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                }
            ),
            self.config.alerts_topic,
            firsts,
            ends,
            codec=self.codec,
            include_pending=self.config.deliver_pending,
        )
        return scanned, starts

    def _restore(
        self, scanned: list[tuple[dict[str, Any], int, int]], starts: dict[int, int]
    ) -> None:
        self.order.seed(alert for alert, _, _ in scanned)
        if self.alertmanager is not None:
            self.alertmanager.restore(firing_alerts(scanned, starts))

    def _call_in_loop(self, fn: Any, *args: Any) -> None:
        if self._loop is not None:
            # a closed loop means the process is ending anyway
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(fn, *args)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # Commit what is done; deliveries still running for these partitions finish (their
        # ledger is gone) and the new owner re-delivers them: duplicates, never losses.
        offsets = self._take_committable({(tp.topic, tp.partition) for tp in partitions})
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except Exception as exc:
                log.warning("commit on revoke failed: %s", exc)
        self._on_lost(consumer, partitions)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        with self._lock:
            for tp in partitions:
                self._ledgers.pop((tp.topic, tp.partition), None)
                self._committed.pop((tp.topic, tp.partition), None)
        if self.alertmanager is not None:
            # Their new owner re-sends their firing alerts; two senders would keep an alert
            # alive in Alertmanager after the owner saw it resolve.
            self._call_in_loop(
                self.alertmanager.drop_partitions, [tp.partition for tp in partitions]
            )

    def _take_committable(self, only: set[tuple[str, int]] | None = None) -> list[Any]:
        from confluent_kafka import TopicPartition

        out = []
        with self._lock:
            for key, ledger in self._ledgers.items():
                if only is not None and key not in only:
                    continue
                if ledger.committable is not None and ledger.committable > self._committed.get(
                    key, -1
                ):
                    self._committed[key] = ledger.committable
                    out.append(TopicPartition(key[0], key[1], ledger.committable))
        return out

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(ledger) for ledger in self._ledgers.values())

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume and deliver until ``stop`` is set (or :meth:`stop` is called), then finish
        the deliveries in progress (up to ``drain_timeout``) and commit."""
        from confluent_kafka import Consumer

        self._stop = stop = stop or asyncio.Event()
        self._loop = loop = asyncio.get_running_loop()
        kafka = ThreadPoolExecutor(1, thread_name_prefix="driftline-delivery-consumer")

        def call(fn: Any, *args: Any) -> Any:
            return loop.run_in_executor(kafka, fn, *args)

        if self._own_follower:
            # The broker may be away (or go away again): wait for it, stoppable by SIGTERM.
            waiting = threading.Event()
            watcher = asyncio.create_task(mirror_stop(stop, waiting))
            try:
                started = await call(
                    lambda: wait_until(
                        lambda: self.follower.start(timeout=3.0),
                        what=f"the control-plane topic on Kafka at {self.config.bootstrap}",
                        log=log,
                        max_interval_s=5.0,
                        stop=waiting,
                    )
                )
            finally:
                watcher.cancel()
            if not started:
                kafka.shutdown(wait=True)
                return
            if not await call(self.follower.wait_ready, 60.0):
                log.warning("subscriptions not fully read after 60 s; delivering with what "
                            "has been read so far")  # fmt: skip
        consumer = Consumer(
            {
                "bootstrap.servers": self.config.bootstrap,
                **self._client_config,
                "group.id": self.config.group_id,
                "client.id": f"driftline-delivery-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": self.config.auto_offset_reset,
            }
        )
        await call(
            lambda: consumer.subscribe(
                [self.config.alerts_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        )
        tasks: set[asyncio.Task[None]] = set()
        background = []
        if self.alertmanager is not None:
            background.append(asyncio.create_task(self.alertmanager.run_resends(stop)))
        paused = False
        last_commit = loop.time()
        try:
            while not stop.is_set():
                if not paused and len(tasks) >= self.config.max_in_flight:
                    await call(lambda: consumer.pause(consumer.assignment()))
                    paused = True
                elif paused and len(tasks) <= self.config.max_in_flight // 2:
                    await call(lambda: consumer.resume(consumer.assignment()))
                    paused = False
                messages = await call(consumer.consume, 200, 0.1)
                for msg in messages:
                    if msg.error() is not None:
                        log.warning("alerts consumer: %s", msg.error())
                        continue
                    tasks.add(self._start(msg))
                tasks = {t for t in tasks if not t.done()}
                if loop.time() - last_commit >= self.config.commit_interval:
                    last_commit = loop.time()
                    await self._commit(call, consumer)
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=self.config.drain_timeout)
                if late:
                    log.warning("%d alerts still in delivery at shutdown; they will be "
                                "re-delivered", len(late))  # fmt: skip
                    for task in late:
                        task.cancel()
            await self._commit(call, consumer)
        finally:
            stop.set()
            for task in background:
                task.cancel()
            await call(consumer.close)
            kafka.shutdown(wait=True)
            await self.dispatcher.aclose()
            if self._own_dead_letters and isinstance(self.dead_letters, DeadLetterProducer):
                self.dead_letters.close()
            if self._own_follower:
                self.follower.close()

    def _start(self, msg: Any) -> asyncio.Task[None]:
        source = Source(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value())
        with self._lock:
            ledger = self._ledgers.get((source.topic, source.partition))
            if ledger is None:  # assigned before our callback ran (should not happen)
                ledger = self._ledgers[(source.topic, source.partition)] = OffsetLedger()
            ledger.add(source.offset)

        async def work() -> None:
            try:
                await self.process(source)
            except Exception:
                # Not marked done: this partition's commits stop here and the alert is
                # re-delivered after a restart, rather than silently dropped.
                log.exception("delivering %s[%d]@%d failed", source.topic, source.partition,
                              source.offset)  # fmt: skip
                return
            with self._lock:
                ledger.done(source.offset)

        return asyncio.create_task(work())

    async def _commit(self, call: Any, consumer: Any) -> None:
        offsets = self._take_committable()
        if not offsets:
            return
        try:
            await call(lambda: consumer.commit(offsets=offsets, asynchronous=False))
        except Exception as exc:  # e.g. a rebalance in progress: the next round commits
            log.warning("commit failed: %s", exc)
            with self._lock:
                for tp in offsets:
                    self._committed.pop((tp.topic, tp.partition), None)
