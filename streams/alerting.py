"""Alert rules evaluated on the worker: per Kafka batch, the batch's drift events, detector
statistics and labelled rows go through the alert lifecycle, and the alert state changes
(``AlertEvent`` records) and retraining requests come out.

The lifecycle itself (episodes, ``for``, repeats, quiet periods, cooldowns, the per-model
event-time clock, the :class:`AlertState` checkpointed in the partition state) is pure code in
:mod:`driftline.schemas.alert_lifecycle`, shared with the API's dry-run so both say the same
thing about the same events; docs/alerting.md has the full story. This module is the worker's
name for it.
"""

from __future__ import annotations

from driftline.schemas.alert_lifecycle import (
    FIRING,
    KV,
    PENDING,
    RESOLVED,
    STATUSES,
    AlertEvaluator,
    AlertOutcome,
    AlertState,
    Episode,
    alert_row,
    deliverable,
    fingerprint,
    model_partitions,
)

__all__ = [
    "FIRING",
    "KV",
    "PENDING",
    "RESOLVED",
    "STATUSES",
    "AlertEvaluator",
    "AlertOutcome",
    "AlertState",
    "Episode",
    "alert_row",
    "deliverable",
    "fingerprint",
    "model_partitions",
]
