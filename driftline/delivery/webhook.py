"""The webhook request: a JSON payload, signed, with the event id as idempotency key.

Payload (UTF-8 JSON object, keys sorted, compact separators; times are epoch milliseconds)::

    {"version": 1, "idempotency_key": "<event_id>", "subscription_id": "sub-...",
     "event_id", "fingerprint", "status", "rule_id", "rule_version", "rule_name", "severity",
     "model_id", "labels", "annotations", "starts_at", "ends_at", "updated_at", "value",
     "trigger_event_ids", "acknowledged"}

Headers: ``Content-Type: application/json``, ``X-Driftline-Signature: sha256=<hex HMAC-SHA256
of the raw body with the subscription's secret>``, ``X-Driftline-Timestamp`` (epoch ms of the
try), ``X-Driftline-Event-Id`` (= idempotency key), ``Idempotency-Key`` (the same, for
receivers that look there). Every try of one delivery sends the same body and signature.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from driftline.delivery.signing import EVENT_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from driftline.delivery.subscriptions import Subscription

__all__ = [
    "PAYLOAD_FIELDS",
    "PAYLOAD_VERSION",
    "webhook_body",
    "webhook_headers",
    "webhook_payload",
]

PAYLOAD_VERSION: Final = 1
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


def webhook_payload(alert: Mapping[str, Any], subscription_id: str) -> dict[str, Any]:
    payload = {name: alert.get(name) for name in PAYLOAD_FIELDS}
    payload.update(
        version=PAYLOAD_VERSION,
        idempotency_key=alert["event_id"],
        subscription_id=subscription_id,
    )
    return payload


def webhook_body(alert: Mapping[str, Any], subscription_id: str) -> bytes:
    return json.dumps(
        webhook_payload(alert, subscription_id), separators=(",", ":"), sort_keys=True
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
