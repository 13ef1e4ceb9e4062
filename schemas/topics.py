"""Topic names, the schema each topic carries, DLQ header names and DLQ reason codes.

Every topic is keyed by ``model_id`` (UTF-8), so one model's predictions and outcomes land on
the same partition number of co-partitioned topics.
"""

from __future__ import annotations

from typing import Final

PREDICTIONS: Final = "driftline.predictions.v1"
OUTCOMES: Final = "driftline.outcomes.v1"
DRIFT: Final = "driftline.drift.v1"
RETRAINING: Final = "driftline.retraining.v1"
ALERTS: Final = "driftline.alerts.v1"
# Compacted: the latest rule per key wins.
RULES: Final = "driftline.rules.v1"
DLQ: Final = "driftline.dlq.v1"

ALL_TOPICS: Final = (PREDICTIONS, OUTCOMES, DRIFT, RETRAINING, ALERTS, RULES, DLQ)

# Short record names of the Avro schemas (namespace ``dev.driftline``).
NAMESPACE: Final = "dev.driftline"
PREDICTION_EVENT: Final = "PredictionEvent"
OUTCOME_EVENT: Final = "OutcomeEvent"
DRIFT_EVENT: Final = "DriftEvent"
RETRAINING_REQUESTED: Final = "RetrainingRequested"
ALERT_EVENT: Final = "AlertEvent"

# Which Avro record each Avro topic carries (the control plane, rules, is JSON, not Avro).
TOPIC_SCHEMAS: Final[dict[str, str]] = {
    PREDICTIONS: PREDICTION_EVENT,
    OUTCOMES: OUTCOME_EVENT,
    DRIFT: DRIFT_EVENT,
    RETRAINING: RETRAINING_REQUESTED,
    ALERTS: ALERT_EVENT,
}
SCHEMA_TOPICS: Final[dict[str, str]] = {v: k for k, v in TOPIC_SCHEMAS.items()}


def value_subject(topic: str) -> str:
    """Schema-registry subject of a topic's values (Confluent TopicNameStrategy)."""
    return f"{topic}-value"


# DLQ records carry the original bytes untouched plus these headers (values UTF-8).
HEADER_REASON: Final = "driftline.reason"
HEADER_DETAIL: Final = "driftline.detail"
HEADER_SOURCE_TOPIC: Final = "driftline.source.topic"
HEADER_SOURCE_PARTITION: Final = "driftline.source.partition"
HEADER_SOURCE_OFFSET: Final = "driftline.source.offset"

# DLQ reason codes (the value of the ``driftline.reason`` header).
NOT_CONFLUENT_FRAMED: Final = "not_confluent_framed"  # empty, < 5 bytes, or magic byte != 0
UNKNOWN_SCHEMA_ID: Final = "unknown_schema_id"  # id not in the manifest / registry
UNDECODABLE: Final = "undecodable"  # Avro body truncated, garbage or with trailing bytes
MISSING_FIELD: Final = "missing_field"  # required field absent/empty, or unresolvable writer
NON_FINITE_VALUE: Final = "non_finite_value"  # NaN or +-inf in a numeric value
INVALID_VALUE: Final = "invalid_value"  # wrong type or out-of-range value (e.g. negative time)
TOO_LARGE: Final = "too_large"  # message, feature count or string beyond the configured caps
UNKNOWN_MODEL: Final = "unknown_model"  # streams: model not registered (when registration is on)
ORPHAN_OUTCOME: Final = "orphan_outcome"  # streams: no prediction joined within the TTL
DUPLICATE: Final = "duplicate"  # streams: event_id already seen
WRONG_SCHEMA_FOR_TOPIC: Final = "wrong_schema_for_topic"  # valid Avro of another record type

REASONS: Final = frozenset(
    {
        NOT_CONFLUENT_FRAMED,
        UNKNOWN_SCHEMA_ID,
        UNDECODABLE,
        MISSING_FIELD,
        NON_FINITE_VALUE,
        INVALID_VALUE,
        TOO_LARGE,
        UNKNOWN_MODEL,
        ORPHAN_OUTCOME,
        DUPLICATE,
        WRONG_SCHEMA_FOR_TOPIC,
    }
)
