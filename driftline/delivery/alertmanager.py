"""Forwarding alerts to a Prometheus Alertmanager (API v2, ``POST /api/v2/alerts``).

Mapping of one driftline alert to one Alertmanager alert:

* labels: the alert's labels plus ``alertname`` (the rule name), ``model_id``, ``severity`` and
  ``fingerprint`` (these four win over alert labels of the same name);
* annotations: passed through;
* FIRING: ``startsAt`` = ``starts_at``, ``endsAt`` = now + 4 x the resend interval (as
  Prometheus does: if driftline stops resending, Alertmanager resolves the alert by itself);
* RESOLVED: ``startsAt`` = ``starts_at``, ``endsAt`` = ``ends_at`` (else ``updated_at``, else
  now); PENDING alerts are not sent.

Alertmanager expects firing alerts to be re-sent: the forwarder keeps the latest FIRING alert
per fingerprint, with the alerts-topic partition it came from, and re-posts them all every
``resend_interval`` seconds (60 by default) until a RESOLVED arrives. The set follows the
consumer's partitions: when a partition is revoked its alerts are dropped (their new owner
re-sends them), and when one is assigned :func:`scan_firing` rebuilds its firing alerts from
the topic (the last ``lookback`` of records up to where the consumer starts), so a restart or
a rebalance does not let Alertmanager time the alerts out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from driftline.delivery.alerts import AlertDecodeError, decode_alert
from driftline.delivery.dispatch import Dispatcher, Outcome

__all__ = ["AlertmanagerForwarder", "scan_firing", "to_alertmanager"]

log = logging.getLogger(__name__)


def _rfc3339(ms: int | float) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _first(*values: Any) -> Any:
    """The first value that is not None (0 is a valid epoch time)."""
    return next(v for v in values if v is not None)


def to_alertmanager(
    alert: Mapping[str, Any],
    *,
    now_ms: int | None = None,
    resend_interval: float = 60.0,
    generator_url: str | None = None,
) -> dict[str, Any]:
    """The Alertmanager v2 ``postableAlert`` for a FIRING or RESOLVED driftline alert.

    >>> am = to_alertmanager({"status": "RESOLVED", "fingerprint": "f", "rule_name": "drift",
    ...     "model_id": "churn", "severity": "critical", "labels": {"team": "ml"},
    ...     "annotations": {}, "starts_at": 0, "ends_at": 60000}, now_ms=120000)
    >>> am["labels"]["alertname"], am["startsAt"], am["endsAt"]
    ('drift', '1970-01-01T00:00:00.000Z', '1970-01-01T00:01:00.000Z')
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
    labels.update(
        alertname=str(alert.get("rule_name") or alert.get("rule_id") or "driftline"),
        model_id=str(alert.get("model_id") or ""),
        severity=str(alert.get("severity") or ""),
        fingerprint=str(alert["fingerprint"]),
    )
    starts = _first(alert.get("starts_at"), alert.get("updated_at"), now_ms)
    if alert["status"] == "RESOLVED":
        ends = _first(alert.get("ends_at"), alert.get("updated_at"), now_ms)
    else:
        ends = now_ms + int(4 * resend_interval * 1000)
    out: dict[str, Any] = {
        "labels": labels,
        "annotations": {str(k): str(v) for k, v in (alert.get("annotations") or {}).items()},
        "startsAt": _rfc3339(starts),
        "endsAt": _rfc3339(max(ends, starts)),
    }
    if generator_url:
        out["generatorURL"] = generator_url
    return out


class AlertmanagerForwarder:
    """Sends alerts to one Alertmanager through the dispatcher (same retries and lane rules
    as webhooks) and re-sends the firing ones."""

    def __init__(
        self,
        url: str,
        dispatcher: Dispatcher,
        *,
        resend_interval: float = 60.0,
        generator_url: str | None = None,
    ) -> None:
        self.endpoint = url.rstrip("/") + "/api/v2/alerts"
        self.dispatcher = dispatcher
        self.resend_interval = resend_interval
        self.generator_url = generator_url
        self.firing: dict[str, dict[str, Any]] = {}
        self.owner: dict[str, int] = {}  # fingerprint -> alerts-topic partition

    @property
    def target(self) -> str:
        return f"alertmanager:{self.endpoint}"

    def _body(self, alerts: list[Mapping[str, Any]]) -> bytes:
        now_ms = int(time.time() * 1000)
        return json.dumps(
            [
                to_alertmanager(
                    a,
                    now_ms=now_ms,
                    resend_interval=self.resend_interval,
                    generator_url=self.generator_url,
                )
                for a in alerts
            ],
            separators=(",", ":"),
        ).encode()

    def _post(self, alerts: list[Mapping[str, Any]]) -> Any:
        return self.dispatcher.post(
            self.target, self.endpoint, self._body(alerts), {"Content-Type": "application/json"}
        )

    async def forward(self, alert: Mapping[str, Any], partition: int = -1) -> Outcome | None:
        """Post one alert; None when there is nothing to send (PENDING, or older than what
        the forwarder already holds for the fingerprint)."""
        status, fingerprint = alert["status"], alert["fingerprint"]
        if status == "PENDING":
            return None
        held = self.firing.get(fingerprint)
        if held is not None and (alert.get("updated_at") or 0) < (held.get("updated_at") or 0):
            return None  # out of order: a newer state is already in Alertmanager
        if status == "FIRING":
            self.firing[fingerprint] = dict(alert)
            self.owner[fingerprint] = partition
        else:
            self.forget(fingerprint)
        return await self._post([alert])

    def forget(self, fingerprint: str) -> None:
        """Stop re-sending an alert (resolved, silenced): Alertmanager ends it at endsAt."""
        self.firing.pop(fingerprint, None)
        self.owner.pop(fingerprint, None)

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget the alerts of partitions this process no longer consumes."""
        gone = set(partitions)
        for fingerprint in [f for f, p in self.owner.items() if p in gone]:
            self.forget(fingerprint)

    def restore(self, alerts: Iterable[tuple[Mapping[str, Any], int]]) -> None:
        """Take firing alerts rebuilt by :func:`scan_firing` (they precede anything consumed
        since, so a fingerprint already held is newer and kept)."""
        for alert, partition in alerts:
            if alert["fingerprint"] not in self.firing:
                self.firing[alert["fingerprint"]] = dict(alert)
                self.owner[alert["fingerprint"]] = partition

    async def resend_once(self) -> Outcome | None:
        if not self.firing:
            return None
        outcome = await self._post(list(self.firing.values()))
        if not outcome.ok:
            log.warning("re-sending %d firing alerts to Alertmanager failed: %s",
                        len(self.firing), outcome.detail())  # fmt: skip
        return outcome

    async def run_resends(self, stop: asyncio.Event) -> None:
        """Re-post every firing alert each ``resend_interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.resend_interval)
            except TimeoutError:
                await self.resend_once()


def scan_firing(
    consumer_factory: Any,
    topic: str,
    ends: Mapping[int, int],
    *,
    since_ms: int,
    codec: Any = None,
    timeout: float = 30.0,
) -> list[tuple[dict[str, Any], int]]:
    """The alerts whose latest state, among the records of ``topic`` published since
    ``since_ms`` and before ``ends[partition]``, is FIRING (not silenced, not inhibited).

    A fingerprint lives on one partition (the key is the model id), so offset order within the
    partition is the order of its states. ``consumer_factory()`` returns a fresh confluent-kafka
    Consumer; it is closed here. Blocking: run it off the event loop.
    """
    from confluent_kafka import TopicPartition

    wanted = {p: end for p, end in ends.items() if end > 0}
    if not wanted:
        return []
    consumer = consumer_factory()
    latest: dict[str, tuple[dict[str, Any], int]] = {}
    try:
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in wanted], timeout=timeout
        )
        assign = []
        for tp in starts:
            # -1: nothing published since since_ms; nothing to read in this partition
            if 0 <= tp.offset < wanted[tp.partition]:
                assign.append(TopicPartition(topic, tp.partition, tp.offset))
        remaining = {tp.partition for tp in assign}
        if not assign:
            return []
        consumer.assign(assign)
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                if msg.error() is not None or msg.partition() not in remaining:
                    continue
                if msg.offset() >= wanted[msg.partition()]:
                    remaining.discard(msg.partition())
                    continue
                if msg.offset() == wanted[msg.partition()] - 1:
                    remaining.discard(msg.partition())
                try:
                    alert = decode_alert(msg.value(), codec)
                except AlertDecodeError:
                    continue
                latest[alert["fingerprint"]] = (alert, msg.partition())
        if remaining:
            log.warning("rebuilding firing alerts: partitions %s not read to the end in %.0f s",
                        sorted(remaining), timeout)  # fmt: skip
    finally:
        consumer.close()
    return [
        (alert, partition)
        for alert, partition in latest.values()
        if alert["status"] == "FIRING" and not alert["silenced"] and not alert["inhibited_by"]
    ]
