"""Alert delivery: alerts from ``driftline.alerts.v1`` to subscribers' webhooks (signed,
retried, dead-lettered), to a Prometheus Alertmanager, and as a Server-Sent Events feed.

Runs as its own process (``driftline deliver``); docs/delivery.md is the guide.
"""

from driftline.delivery.alertmanager import AlertmanagerForwarder, to_alertmanager
from driftline.delivery.alerts import AlertDecodeError, decode_alert, encode_alert, normalize_alert
from driftline.delivery.cli import add_delivery_command
from driftline.delivery.deadletter import (
    ALERTMANAGER_FAILED,
    WEBHOOK_FAILED,
    DeadLetterProducer,
    Source,
)
from driftline.delivery.dispatch import Dispatcher, Outcome, RetryPolicy
from driftline.delivery.service import DeliveryConfig, DeliveryService
from driftline.delivery.signing import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    verify,
)
from driftline.delivery.sse import alert_stream, sse_frame
from driftline.delivery.subscriptions import (
    ControlPlaneFollower,
    Silence,
    Subscription,
    matching_subscriptions,
)
from driftline.delivery.webhook import webhook_body, webhook_payload

__all__ = [
    "ALERTMANAGER_FAILED",
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_FAILED",
    "AlertDecodeError",
    "AlertmanagerForwarder",
    "ControlPlaneFollower",
    "DeadLetterProducer",
    "DeliveryConfig",
    "DeliveryService",
    "Dispatcher",
    "Outcome",
    "RetryPolicy",
    "Silence",
    "Source",
    "Subscription",
    "add_delivery_command",
    "alert_stream",
    "decode_alert",
    "encode_alert",
    "matching_subscriptions",
    "normalize_alert",
    "sign",
    "sse_frame",
    "to_alertmanager",
    "verify",
    "webhook_body",
    "webhook_payload",
]
