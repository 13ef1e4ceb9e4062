"""Creating driftline's topics with the right partitions and cleanup policies."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic

from driftline.schemas import topics
from driftline.sinks.resilience import quiet_kafka_config

log = logging.getLogger(__name__)


def ensure_topics(
    bootstrap: str,
    partitions: int,
    replication: int = 1,
    timeout: float = 30.0,
    *,
    client_config: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create every driftline topic that does not exist yet; return the ones created.

    Each topic is created as its spec says (``schemas/topics.py``: the control plane has one
    partition, compacted); the others get ``partitions``. Predictions and outcomes must have
    the same partition count (they are co-partitioned by model id); existing topics are left
    as they are. Raises ``KafkaException`` when the broker
    does not answer within ``timeout`` (callers that start before the broker wrap this in
    :func:`driftline.sinks.resilience.wait_until`).
    """
    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            **quiet_kafka_config(log, f"admin ({bootstrap})"),
            **dict(client_config or {}),
        }
    )
    existing = set(admin.list_topics(timeout=timeout).topics)
    specs = [topics.topic_spec(name) for name in topics.ALL_TOPICS if name not in existing]
    wanted = [
        NewTopic(spec.name, spec.partitions or partitions, replication, config=dict(spec.config))
        for spec in specs
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
            created.append(name)
        except Exception as exc:  # a concurrent creator won the race: fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created
