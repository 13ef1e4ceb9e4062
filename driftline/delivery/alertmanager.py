"""Forwarding alerts to a Prometheus Alertmanager (API v2, ``POST /api/v2/alerts``).

Mapping of one driftline alert to one Alertmanager alert (labels identify, annotations
describe, as Alertmanager wants):

* labels: the alert's labels plus ``alertname`` (the rule name), ``model_id``, ``severity`` and
  ``fingerprint`` (these four win over alert labels of the same name); nothing that changes
  during an episode (model version, statistics) is a label, or Alertmanager would see a new
  alert;
* annotations: the alert's (summary, description, model_version, stream, detector, statistic,
  p_value, before, after, window_start, window_end, drift_event_id when the worker filled them)
  plus ``value``, ``dashboard_url``, ``alert_url`` and ``history_url`` (the rule's own
  annotations of those names win);
* ``generatorURL``: the model's dashboard page (``public_url`` + ``/ui/models/<model>``);
* FIRING: ``startsAt`` = ``starts_at``, ``endsAt`` = now + 4 x the resend interval (as
  Prometheus does: if driftline stops resending, Alertmanager resolves the alert by itself);
* RESOLVED: ``startsAt`` = ``starts_at``, ``endsAt`` = ``ends_at`` (else ``updated_at``, else
  now); PENDING alerts are not sent.

Alertmanager expects firing alerts to be re-sent: the forwarder keeps the latest FIRING alert
per fingerprint, with the alerts-topic partition it came from, and re-posts them all every
``resend_interval`` seconds (60 by default) until a RESOLVED arrives. The set follows the
consumer's partitions: when a partition is revoked its alerts are dropped (their new owner
re-sends them), and when one is assigned the service rebuilds its firing alerts from the topic
(:func:`firing_alerts` over what :func:`.ordering.scan_alerts` read back), so a restart or a
rebalance does not let Alertmanager time the alerts out.

Posts to one Alertmanager go one at a time (its lane has a single slot), as Prometheus's own
notifier sends: a re-send can then never overtake, or be overtaken by, a state change, so a
RESOLVED is never followed by a stale FIRING that would hold the alert active until endsAt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from driftline.delivery.dispatch import Dispatcher, Outcome
from driftline.delivery.webhook import alert_links

__all__ = ["AlertmanagerForwarder", "firing_alerts", "to_alertmanager"]

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
    public_url: str | None = None,
) -> dict[str, Any]:
    """The Alertmanager v2 ``postableAlert`` for a FIRING or RESOLVED driftline alert;
    links point at ``public_url`` (default: the API's local address).

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
    links = alert_links(alert, public_url)
    annotations = {str(k): str(v) for k, v in (alert.get("annotations") or {}).items()}
    for name, value in (
        ("dashboard_url", links["dashboard"]),
        ("alert_url", links["alert"]),
        ("history_url", links["history"]),
        ("value", None if alert.get("value") is None else str(alert["value"])),
    ):
        if value is not None:
            annotations.setdefault(name, value)
    annotations = {k: v for k, v in annotations.items() if v != ""}  # AM drops empty ones
    return {
        "labels": labels,
        "annotations": annotations,
        "startsAt": _rfc3339(starts),
        "endsAt": _rfc3339(max(ends, starts)),
        "generatorURL": links["dashboard"],
    }


class AlertmanagerForwarder:
    """Sends alerts to one Alertmanager through the dispatcher (same retries and lane rules
    as webhooks) and re-sends the firing ones."""

    def __init__(
        self,
        url: str,
        dispatcher: Dispatcher,
        *,
        resend_interval: float = 60.0,
        public_url: str | None = None,
    ) -> None:
        self.endpoint = url.rstrip("/") + "/api/v2/alerts"
        self.dispatcher = dispatcher
        self.resend_interval = resend_interval
        self.public_url = public_url
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
                    public_url=self.public_url,
                )
                for a in alerts
            ],
            separators=(",", ":"),
        ).encode()

    def _post(self, body: Any, superseded: Any = None) -> Any:
        return self.dispatcher.post(
            self.target,
            self.endpoint,
            body,
            {"Content-Type": "application/json"},
            superseded=superseded,
            concurrency=1,  # one post at a time: see the module's docstring
        )

    async def forward(
        self,
        alert: Mapping[str, Any],
        partition: int = -1,
        superseded: Callable[[], bool] | None = None,
    ) -> Outcome | None:
        """Post one alert; None when there is nothing to send (PENDING, or older than what
        the forwarder already holds for the fingerprint). Tries stop once ``superseded()``
        (a newer state of the alert is known)."""
        status, fingerprint = alert["status"], alert["fingerprint"]
        if status == "PENDING":
            return None
        if superseded is not None and superseded():
            # before touching the firing set: a stale FIRING must not be re-sent either
            return Outcome(False, 0, target=self.target, superseded=True)
        held = self.firing.get(fingerprint)
        if held is not None and (alert.get("updated_at") or 0) < (held.get("updated_at") or 0):
            return None  # out of order: a newer state is already in Alertmanager
        if status == "FIRING":
            self.firing[fingerprint] = dict(alert)
            self.owner[fingerprint] = partition
        else:
            self.forget(fingerprint)
        return await self._post(self._body([alert]), superseded)

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
        """Take firing alerts rebuilt by :func:`firing_alerts` (they precede anything
        consumed since, so a fingerprint already held is newer and kept)."""
        for alert, partition in alerts:
            if alert["fingerprint"] not in self.firing:
                self.firing[alert["fingerprint"]] = dict(alert)
                self.owner[alert["fingerprint"]] = partition

    async def resend_once(self) -> Outcome | None:
        if not self.firing:
            return None
        # The body is rebuilt at each try: a retry re-sends what is firing then, never an
        # alert that resolved meanwhile.
        outcome = await self._post(lambda: self._body(list(self.firing.values())))
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


def firing_alerts(
    scanned: Iterable[tuple[Mapping[str, Any], int, int]], before: Mapping[int, int]
) -> list[tuple[Mapping[str, Any], int]]:
    """Of the newest states read back per fingerprint (alert, partition, offset), those to
    keep re-sending: FIRING, not silenced, not inhibited, at an offset below ``before``
    (where the consumer starts; later records are consumed and forwarded anyway)."""
    return [
        (alert, partition)
        for alert, partition, offset in scanned
        if offset < before.get(partition, 0)
        and alert["status"] == "FIRING"
        and not alert.get("silenced")
        and not alert.get("inhibited_by")
    ]
