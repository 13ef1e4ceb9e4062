"""Topic names, the schema each topic carries, DLQ header names and DLQ reason codes.

Every topic is keyed by ``model_id`` (UTF-8), so one model's predictions and outcomes land on
the same partition number of co-partitioned topics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

PREDICTIONS: Final = "driftline.predictions.v1"
OUTCOMES: Final = "driftline.outcomes.v1"
DRIFT: Final = "driftline.drift.v1"
RETRAINING: Final = "driftline.retraining.v1"
ALERTS: Final = "driftline.alerts.v1"
# Compacted: the latest rule per key wins.
RULES: Final = "driftline.rules.v1"
DLQ: Final = "driftline.dlq.v1"
# Compacted: the latest reference profile per model (key = model_id) wins.
REFERENCES: Final = "driftline.references.v1"
# Compacted: model versions (ModelPublished), key = ``model_key(model_id, version)`` so that
# compaction keeps every version of every model, as a model registry does.
MODELS: Final = "driftline.models.v1"
# Post-deploy verdicts (ModelVerdict) and the rollbacks they recommend (RollbackRecommended).
VERDICTS: Final = "driftline.verdicts.v1"

ALL_TOPICS: Final = (
    PREDICTIONS, OUTCOMES, DRIFT, RETRAINING, ALERTS, RULES, DLQ, REFERENCES, MODELS, VERDICTS,
)


@dataclass(frozen=True)
class TopicSpec:
    """How a topic is created, by every creator (``driftline topics create``, the workers and
    delivery at start, the API for the control plane): ``partitions`` None means the
    deployment's partition count (``DRIFTLINE_TOPIC_PARTITIONS``)."""

    name: str
    partitions: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)


TOPIC_SPECS: Final[dict[str, TopicSpec]] = {name: TopicSpec(name) for name in ALL_TOPICS}
# The control plane: compacted (the latest record per key wins; deletes are tombstones) and
# one partition, so its log keeps one total order and stays small enough for every reader.
TOPIC_SPECS[RULES] = TopicSpec(RULES, partitions=1, config={"cleanup.policy": "compact"})
# References: one small compacted partition every worker reads whole, like the control plane.
TOPIC_SPECS[REFERENCES] = TopicSpec(
    REFERENCES, partitions=1, config={"cleanup.policy": "compact"}
)
# Model versions: small, read whole by every worker and the API, like the references.
TOPIC_SPECS[MODELS] = TopicSpec(MODELS, partitions=1, config={"cleanup.policy": "compact"})


def model_key(model_id: str, version: str) -> bytes:
    """The key of a version on ``MODELS``: one per (model, version), so compaction drops
    only re-publications of the same version.

    >>> model_key("churn", "7")
    b'churn@7'
    """
    return f"{model_id}@{version}".encode()


def topic_spec(topic: str) -> TopicSpec:
    """The spec of a driftline topic; a topic we do not know gets the defaults.

    >>> topic_spec(RULES).partitions, dict(topic_spec(RULES).config)
    (1, {'cleanup.policy': 'compact'})
    """
    return TOPIC_SPECS.get(topic) or TopicSpec(topic)


# Short record names of the Avro schemas (namespace ``dev.driftline``).
NAMESPACE: Final = "dev.driftline"
PREDICTION_EVENT: Final = "PredictionEvent"
OUTCOME_EVENT: Final = "OutcomeEvent"
DRIFT_EVENT: Final = "DriftEvent"
RETRAINING_REQUESTED: Final = "RetrainingRequested"
ALERT_EVENT: Final = "AlertEvent"
REFERENCE_PROFILE: Final = "ReferenceProfile"
MODEL_PUBLISHED: Final = "ModelPublished"
MODEL_VERDICT: Final = "ModelVerdict"
ROLLBACK_RECOMMENDED: Final = "RollbackRecommended"
# Columnar records: many events of one model per Kafka message (see columns.py).
PREDICTION_BATCH: Final = "PredictionBatch"
OUTCOME_BATCH: Final = "OutcomeBatch"
BATCH_RECORDS: Final = frozenset({PREDICTION_BATCH, OUTCOME_BATCH})

# The single-event record of each Avro topic (the control plane, rules, is JSON, not Avro).
# Kept for callers that only know single events; TOPIC_RECORDS is the full truth.
TOPIC_SCHEMAS: Final[dict[str, str]] = {
    PREDICTIONS: PREDICTION_EVENT,
    OUTCOMES: OUTCOME_EVENT,
    DRIFT: DRIFT_EVENT,
    RETRAINING: RETRAINING_REQUESTED,
    ALERTS: ALERT_EVENT,
    REFERENCES: REFERENCE_PROFILE,
    MODELS: MODEL_PUBLISHED,
    VERDICTS: MODEL_VERDICT,
}
# Every record a topic may carry: the input topics take single events and batches alike.
TOPIC_RECORDS: Final[dict[str, frozenset[str]]] = {
    topic: frozenset({name}) for topic, name in TOPIC_SCHEMAS.items()
}
TOPIC_RECORDS[PREDICTIONS] = frozenset({PREDICTION_EVENT, PREDICTION_BATCH})
TOPIC_RECORDS[OUTCOMES] = frozenset({OUTCOME_EVENT, OUTCOME_BATCH})
TOPIC_RECORDS[VERDICTS] = frozenset({MODEL_VERDICT, ROLLBACK_RECOMMENDED})
# Record (short name) -> the topic it is published to.
SCHEMA_TOPICS: Final[dict[str, str]] = {
    name: topic for topic, names in TOPIC_RECORDS.items() for name in names
}


def value_subject(topic: str) -> str:
    """Schema-registry subject of a topic's values (Confluent TopicNameStrategy)."""
    return f"{topic}-value"


def record_subject(topic: str, record: str) -> str:
    """Subject of ``record`` on ``topic`` (Confluent TopicRecordNameStrategy).

    >>> record_subject(PREDICTIONS, PREDICTION_BATCH)
    'driftline.predictions.v1-dev.driftline.PredictionBatch'
    """
    full = record if "." in record else f"{NAMESPACE}.{record}"
    return f"{topic}-{full}"


def subject_for(record: str) -> str:
    """The subject ``record`` (short name) is registered under.

    Single events keep ``<topic>-value``, so a producer using a Confluent serializer with
    default settings keeps working; batch records share the topic under their own subject.

    >>> subject_for(PREDICTION_EVENT), subject_for(OUTCOME_BATCH)
    ('driftline.predictions.v1-value', 'driftline.outcomes.v1-dev.driftline.OutcomeBatch')
    """
    topic = SCHEMA_TOPICS[record]
    single = TOPIC_SCHEMAS.get(topic) == record
    return value_subject(topic) if single else record_subject(topic, record)


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
VERSION_CONFLICT: Final = "version_conflict"  # a model version published again, changed

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
        VERSION_CONFLICT,
    }
)
