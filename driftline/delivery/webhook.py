"""The webhook request: a JSON payload, signed, with the event id as idempotency key.

Payload schema ``driftline.webhook.v2`` (UTF-8 JSON object, keys sorted, compact separators;
times are epoch milliseconds on the model's event-time clock). Every field of version 1 is
still there, unchanged; version 2 adds what a person needs to act without looking anything up::

    {"schema": "driftline.webhook.v2", "version": 2, "idempotency_key": "<event_id>",
     "subscription_id": "sub-...",
     # version 1 fields
     "event_id", "fingerprint", "status", "rule_id", "rule_version", "rule_name", "severity",
     "model_id", "labels", "annotations", "starts_at", "ends_at", "updated_at", "value",
     "trigger_event_ids", "acknowledged",
     # version 2
     "summary", "description",
     "model": {"id", "version"},
     "rule": {"id", "name", "version", "severity"},
     "drift": {"stream", "detector", "test", "statistic", "p_value", "before", "after",
               "drift_event_id"},
     "window": {"start", "end"},
     "links": {"dashboard", "alert", "history"}}

The v2 values come from the alert's annotations (the worker's evaluator fills them); absent
ones are null. docs/delivery.md has the full example.

Headers: ``Content-Type: application/json``, ``X-Driftline-Signature: sha256=<hex HMAC-SHA256
of the raw body with the subscription's secret>``, ``X-Driftline-Timestamp`` (epoch ms of the
try), ``X-Driftline-Event-Id`` (= idempotency key), ``Idempotency-Key`` (the same, for
receivers that look there). Every try of one delivery sends the same body and signature.

>>> alert = {"event_id": "e1", "fingerprint": "f1", "status": "FIRING", "model_id": "churn",
...     "rule_id": "r1", "rule_name": "drift", "rule_version": 2, "severity": "critical",
...     "starts_at": 1000, "updated_at": 2000, "annotations": {"stream": "feature:age",
...     "detector": "PSI", "statistic": "0.31", "before": "41.2", "after": "35.9",
...     "model_version": "7", "window_start": "1000", "window_end": "2000"}}
>>> p = webhook_payload(alert, "sub-1", public_url="https://driftline.example.com/")
>>> p["schema"], p["model"], p["drift"]["statistic"], p["window"]
('driftline.webhook.v2', {'id': 'churn', 'version': '7'}, 0.31, {'start': 1000, 'end': 2000})
>>> p["links"]["dashboard"]
'https://driftline.example.com/ui/models/churn'
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import quote, urlencode

from driftline.delivery.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from driftline.delivery.subscriptions import Subscription

__all__ = [
    "DEFAULT_PUBLIC_URL",
    "PAYLOAD_FIELDS",
    "PAYLOAD_SCHEMA",
    "PAYLOAD_VERSION",
    "alert_links",
    "webhook_body",
    "webhook_headers",
    "webhook_payload",
]

PAYLOAD_VERSION: Final = 2
PAYLOAD_SCHEMA: Final = "driftline.webhook.v2"
# Where links point when no public URL is configured (the API's default address).
DEFAULT_PUBLIC_URL: Final = "http://localhost:8000"
PAYLOAD_FIELDS: Final = (
    "event_id",
    "fingerprint",
    "status",
    "rule_id",
    "rule_version",
    "rule_name",
    "severity",
    "model_id",
    "labels",
    "annotations",
    "starts_at",
    "ends_at",
    "updated_at",
    "value",
    "trigger_event_ids",
    "acknowledged",
)


def alert_links(alert: Mapping[str, Any], public_url: str | None = None) -> dict[str, str]:
    """Where a person looks next: the model's page on the dashboard (its alerts and drift
    evidence), the alert's current state and its state history in the API."""
    base = (public_url or DEFAULT_PUBLIC_URL).rstrip("/")
    fingerprint = quote(str(alert["fingerprint"]), safe="")
    return {
        "dashboard": f"{base}/ui/models/{quote(str(alert.get('model_id') or ''), safe='')}",
        "alert": f"{base}/v1/alerts/{fingerprint}",
        "history": f"{base}/v1/alerts/history?{urlencode({'fingerprint': alert['fingerprint']})}",
    }


def _number(value: Any) -> Any:
    """Annotations are strings on the wire: numbers go out as JSON numbers (ints when whole,
    as times are), anything else as it is; absent or empty is null."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    if not math.isfinite(number):
        return str(value)  # JSON has no NaN/inf: keep the worker's text
    return int(number) if number.is_integer() and "." not in str(value) else number


def webhook_payload(
    alert: Mapping[str, Any], subscription_id: str, *, public_url: str | None = None
) -> dict[str, Any]:
    """The JSON object of schema ``driftline.webhook.v2`` for one alert state change."""
    notes: Mapping[str, Any] = alert.get("annotations") or {}

    def note(name: str) -> Any:
        value = notes.get(name)
        return None if value in (None, "") else value

    # The evidence window when the worker names one, else the alert's episode so far.
    start, end = note("window_start"), note("window_end")
    window = {
        "start": alert.get("starts_at") if start is None else _number(start),
        "end": (alert.get("ends_at") or alert.get("updated_at")) if end is None else _number(end),
    }
    payload = {name: alert.get(name) for name in PAYLOAD_FIELDS}
    payload.update(
        schema=PAYLOAD_SCHEMA,
        version=PAYLOAD_VERSION,
        idempotency_key=alert["event_id"],
        subscription_id=subscription_id,
        summary=note("summary"),
        description=note("description"),
        model={"id": alert.get("model_id"), "version": note("model_version")},
        rule={
            "id": alert.get("rule_id"),
            "name": alert.get("rule_name"),
            "version": alert.get("rule_version"),
            "severity": alert.get("severity"),
        },
        drift={
            "stream": note("stream"),
            "detector": note("detector"),
            "test": note("test"),
            "statistic": _number(note("statistic")),
            "p_value": _number(note("p_value")),
            "before": _number(note("before")),
            "after": _number(note("after")),
            "drift_event_id": note("drift_event_id"),
        },
        window=window,
        links=alert_links(alert, public_url),
    )
    return payload


def webhook_body(
    alert: Mapping[str, Any], subscription_id: str, *, public_url: str | None = None
) -> bytes:
    return json.dumps(
        webhook_payload(alert, subscription_id, public_url=public_url),
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


def webhook_headers(
    subscription: Subscription, body: bytes, event_id: str
) -> Callable[[], dict[str, str]]:
    """Headers for each try: the signature is computed once, the timestamp per try."""
    signature = sign(subscription.secret, body)

    def headers() -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "User-Agent": "driftline-delivery",
            SIGNATURE_HEADER: signature,
            TIMESTAMP_HEADER: str(int(time.time() * 1000)),
            EVENT_ID_HEADER: event_id,
            "Idempotency-Key": event_id,
        }

    return headers
