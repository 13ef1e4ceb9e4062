"""Creating driftline's topics with the right partitions and cleanup policies."""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, NewTopic

from driftline.schemas import topics


def topic_configs(topic: str) -> dict[str, str]:
    if topic == topics.RULES:
        # latest rule per key wins; deleted rules are tombstones
        return {"cleanup.policy": "compact"}
    return {}


def ensure_topics(
    bootstrap: str, partitions: int, replication: int = 1, timeout: float = 30.0
) -> list[str]:
    """Create every driftline topic that does not exist yet; return the ones created.

    Predictions and outcomes must have the same partition count (they are co-partitioned by
    model id); existing topics are left as they are.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(name, partitions, replication, config=topic_configs(name))
        for name in topics.ALL_TOPICS
        if name not in existing
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
