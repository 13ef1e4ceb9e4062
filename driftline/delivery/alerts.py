"""Reading alerts off ``driftline.alerts.v1``: bytes to a normalised alert dict.

The workers publish Avro ``AlertEvent`` records (``schemas/AlertEvent.avsc``, Confluent
framing, decoded with :class:`driftline.schemas.Codec`; times come out as epoch milliseconds).
A UTF-8 JSON object with the same fields is accepted too (tools, tests, hand-written alerts).
Whichever form arrives, :func:`normalize_alert` gives the rest of the package one shape, with
the optional fields defaulted.

>>> alert = decode_alert(b'{"event_id": "e1", "fingerprint": "f1", "status": "FIRING"}')
>>> alert["fingerprint"], alert["labels"], alert["notify"], alert["silenced"]
('f1', {}, [], False)
>>> full = {**alert, "rule_id": "r1", "rule_name": "drift", "model_id": "churn",
...         "starts_at": 1700000000000, "updated_at": 1700000000000}
>>> decode_alert(encode_alert(full)) == full  # Avro AlertEvent, Confluent framing
True
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any, Final

from driftline.schemas import topics
from driftline.schemas.alert_lifecycle import STATUSES
from driftline.schemas.silences import alert_labels

#: The labels subscription filters and silences match on (the one definition, shared with the
#: workers: :func:`driftline.schemas.silences.alert_labels`).
alert_label_set = alert_labels

__all__ = [
    "ALERT_SCHEMA",
    "STATUSES",
    "AlertDecodeError",
    "alert_label_set",
    "decode_alert",
    "encode_alert",
    "normalize_alert",
]

ALERT_SCHEMA: Final = "AlertEvent"

# Every AlertEvent field with the value an absent optional field takes.
_DEFAULTS: Final[dict[str, Any]] = {
    "rule_id": "",
    "rule_version": 0,
    "rule_name": "",
    "severity": "warning",
    "model_id": "",
    "labels": {},
    "annotations": {},
    "starts_at": None,
    "ends_at": None,
    "updated_at": None,
    "value": None,
    "trigger_event_ids": [],
    "silenced": False,
    "silence_ids": [],
    "acknowledged": False,
    "notify": [],
    "inhibited_by": None,
}
_CONTAINERS: Final = ("labels", "annotations", "trigger_event_ids", "silence_ids", "notify")


class AlertDecodeError(Exception):
    """Bytes that are not an alert; ``reason`` is a DLQ reason code of ``schemas.topics``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _codec_knows_alerts() -> bool:
    from driftline.schemas.registry import SCHEMA_FILES

    return ALERT_SCHEMA in SCHEMA_FILES


@functools.cache
def default_codec() -> Any:
    """One static-manifest codec per process (building one parses every schema)."""
    from driftline.schemas import Codec

    return Codec()


def normalize_alert(record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``record`` with every AlertEvent field present; raises AlertDecodeError when
    the fields delivery cannot do without are missing or wrong."""
    alert = dict(_DEFAULTS)
    for name, value in record.items():
        # null in an optional field means "absent": take the default
        if value is not None or name not in _DEFAULTS:
            alert[name] = value
    for name in ("event_id", "fingerprint", "status"):
        if not isinstance(alert.get(name), str) or not alert[name]:
            raise AlertDecodeError(topics.MISSING_FIELD, f"alert has no {name}")
    if alert["status"] not in STATUSES:
        raise AlertDecodeError(topics.INVALID_VALUE, f"status {alert['status']!r}")
    for name in _CONTAINERS:
        value = alert[name]
        alert[name] = dict(value) if isinstance(value, Mapping) else list(value or [])
    return alert


def decode_alert(value: bytes | None, codec: Any = None) -> dict[str, Any]:
    """The normalised alert in ``value``: Confluent-framed Avro AlertEvent (once the schema is
    known to the codec), else a JSON object. Raises :class:`AlertDecodeError`."""
    if not value:
        raise AlertDecodeError(topics.NOT_CONFLUENT_FRAMED, "empty value")
    if value[0] == 0:
        if codec is None:
            if not _codec_knows_alerts():
                raise AlertDecodeError(topics.UNKNOWN_SCHEMA_ID, "no AlertEvent schema yet")
            codec = default_codec()
        from driftline.schemas.codec import DecodeError

        try:
            _, record = codec.decode(bytes(value), expected=ALERT_SCHEMA)
        except DecodeError as exc:
            raise AlertDecodeError(exc.reason, exc.detail) from None
        return normalize_alert(record)
    try:
        record = json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        raise AlertDecodeError(topics.UNDECODABLE, f"neither Avro nor JSON: {exc}") from None
    if not isinstance(record, dict):
        raise AlertDecodeError(topics.UNDECODABLE, "JSON alert is not an object")
    return normalize_alert(record)


def encode_alert(alert: Mapping[str, Any], codec: Any = None) -> bytes:
    """Bytes for the alerts topic: Avro when the codec knows AlertEvent, else compact JSON
    (what tests and tools publish; the workers publish Avro)."""
    if codec is not None or _codec_knows_alerts():
        return (codec or default_codec()).encode(ALERT_SCHEMA, alert)
    return json.dumps(dict(alert), separators=(",", ":"), sort_keys=True).encode()
