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
per fingerprint in memory and re-posts them all every ``resend_interval`` seconds (60 by
default) until a RESOLVED arrives. That set lives in this process only: after a restart it is
rebuilt from the alerts consumed from then on (the workers re-emit FIRING alerts every rule
``repeat_interval``), and alerts not seen again resolve in Alertmanager after 4 intervals.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from driftline.delivery.dispatch import Dispatcher, Outcome

__all__ = ["AlertmanagerForwarder", "to_alertmanager"]

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

    async def forward(self, alert: Mapping[str, Any]) -> Outcome | None:
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
        else:
            self.firing.pop(fingerprint, None)
        return await self._post([alert])

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
