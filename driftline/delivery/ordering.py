"""The order of an alert's states on the wire: per fingerprint, the newest state wins.

Alertmanager's own notification pipeline sends the *current* state of an alert, never a
stale one; delivery follows the same rule. Per fingerprint the service knows the newest state
it has seen (from the records it consumed, and from the tail of the alerts topic it reads when
a partition is assigned), ordered by :func:`state_key`. Then:

* a state is sent to a target only while no newer state of its fingerprint is known: an
  older state that arrives late (a re-delivery after a restart, a dead letter replayed onto
  the alerts topic) is dropped, counted as ``superseded``, never sent after the newer one;
* tries of a state stop (no dead letter) as soon as a newer state is known: the newer one
  is what the target needs;
* per (target, fingerprint) one delivery runs at a time (:meth:`AlertOrder.gate`): a newer
  state's request starts only after the older state's request in flight has finished, so it
  can never overtake it on the wire.

A duplicate of the newest state (same key) is still sent: delivery is at least once and
receivers dedup by event id.

>>> order = AlertOrder()
>>> firing = {"fingerprint": "f", "status": "FIRING", "starts_at": 1, "updated_at": 5}
>>> resolved = {**firing, "status": "RESOLVED", "updated_at": 9}
>>> order.observe(firing), order.observe(resolved), order.superseded(firing)
(True, True, True)
>>> order.observe(firing)  # a late FIRING after its RESOLVED: dropped
False
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Final

from driftline.delivery.alerts import AlertDecodeError, decode_alert

__all__ = ["AlertOrder", "scan_alerts", "state_key"]

log = logging.getLogger(__name__)

_RANK: Final = {"PENDING": 0, "FIRING": 1, "RESOLVED": 2}


def state_key(alert: Mapping[str, Any]) -> tuple[int, int, int]:
    """Order of an alert's states: event time of the change, then the episode's start (a new
    episode at the same instant is newer), then PENDING < FIRING < RESOLVED."""
    return (
        int(alert.get("updated_at") or 0),
        int(alert.get("starts_at") or 0),
        _RANK.get(str(alert.get("status")), 0),
    )


class _Gate:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class AlertOrder:
    """Newest known state per fingerprint, and one delivery at a time per (target,
    fingerprint). Used from the event loop only.

    ``capacity`` bounds the memory: the least recently changed fingerprints are forgotten
    first (a forgotten fingerprint is seeded again from the topic's tail after a restart).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._newest: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        self._gates: dict[tuple[str, str], _Gate] = {}

    def __len__(self) -> int:
        return len(self._newest)

    def observe(self, alert: Mapping[str, Any]) -> bool:
        """Record ``alert``'s state; False when a newer state of its fingerprint is known
        (the alert is stale and must not be sent)."""
        fingerprint, key = str(alert["fingerprint"]), state_key(alert)
        known = self._newest.get(fingerprint)
        if known is not None and key < known:
            return False
        if known is None or key > known:
            self._newest[fingerprint] = key
            self._newest.move_to_end(fingerprint)
            while len(self._newest) > self.capacity:
                self._newest.popitem(last=False)
        return True

    def seed(self, alerts: Iterable[Mapping[str, Any]]) -> None:
        """Learn states read back from the topic (they are not sent from here)."""
        for alert in alerts:
            self.observe(alert)

    def superseded(self, alert: Mapping[str, Any]) -> bool:
        """True once a newer state of ``alert``'s fingerprint is known."""
        known = self._newest.get(str(alert["fingerprint"]))
        return known is not None and state_key(alert) < known

    @contextlib.asynccontextmanager
    async def gate(self, target: str, fingerprint: str) -> AsyncIterator[None]:
        """Hold the (target, fingerprint) slot: deliveries of one alert to one target never
        overlap. The lock is dropped when nobody uses it (and so never outlives a loop)."""
        key = (target, fingerprint)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate()
        gate.users += 1
        try:
            async with gate.lock:
                yield
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._gates[key]


def scan_alerts(
    consumer_factory: Any,
    topic: str,
    starts: Mapping[int, int],
    ends: Mapping[int, int],
    *,
    codec: Any = None,
    include_pending: bool = True,
    timeout: float = 30.0,
) -> list[tuple[dict[str, Any], int, int]]:
    """Per fingerprint, the newest state (:func:`state_key`) among the records of ``topic``
    at offsets ``[starts[p], ends[p])`` of each partition ``p``, as (alert, partition,
    offset). Undecodable records are skipped (the consumer dead-letters them), and so are
    PENDING ones unless ``include_pending``.

    ``consumer_factory()`` returns a fresh confluent-kafka Consumer; it is closed here.
    Blocking: run it off the event loop.
    """
    from confluent_kafka import TopicPartition

    wanted = {p: end for p, end in ends.items() if 0 <= starts.get(p, end) < end}
    if not wanted:
        return []
    consumer = consumer_factory()
    newest: dict[str, tuple[dict[str, Any], int, int]] = {}
    try:
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in wanted])
        remaining = set(wanted)
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is not None or msg.partition() not in remaining:
                    continue
                end = wanted[msg.partition()]
                if msg.offset() >= end - 1:
                    remaining.discard(msg.partition())
                if msg.offset() >= end:
                    continue
                try:
                    alert = decode_alert(msg.value(), codec)
                except AlertDecodeError:
                    continue
                if alert["status"] == "PENDING" and not include_pending:
                    continue
                held = newest.get(alert["fingerprint"])
                if held is None or state_key(alert) >= state_key(held[0]):
                    newest[alert["fingerprint"]] = (alert, msg.partition(), msg.offset())
        if remaining:
            log.warning("reading back alert states: partitions %s not read to the end in "
                        "%.0f s", sorted(remaining), timeout)  # fmt: skip
    finally:
        consumer.close()
    return list(newest.values())
