"""Alert delivery: alerts from ``driftline.alerts.v1`` to subscribers' webhooks (signed,
retried, dead-lettered) and to a Prometheus Alertmanager. (The live feed for browsers is the
API's ``GET /v1/feed``, api/routes/feed.py.)

Runs as its own process (``driftline deliver``); docs/delivery.md is the guide.
"""

import lazy_loader

# Names load on first use (PEP 562, through lazy_loader), so importing one light
# submodule (the CLI's parsers: `driftline --help`) does not import everything here.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "alertmanager": ["AlertmanagerForwarder", "to_alertmanager"],
        "alerts": ["AlertDecodeError", "decode_alert", "encode_alert", "normalize_alert"],
        "cli": ["add_delivery_command"],
        "deadletter": ["ALERTMANAGER_FAILED", "WEBHOOK_FAILED", "DeadLetterProducer", "Source"],
        "dispatch": ["Dispatcher", "Outcome", "RetryPolicy"],
        "service": ["DeliveryConfig", "DeliveryService"],
        "signing": ["EVENT_ID_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "sign", "verify"],
        "subscriptions": [
            "ControlPlaneFollower",
            "Silence",
            "Subscription",
            "matching_subscriptions",
        ],
        "webhook": ["webhook_body", "webhook_payload"],
    },
)
