"""The workers' view of the control plane: alert rules, silences and acknowledgements.

The API writes every entity to the compacted topic ``driftline.rules.v1``; the record format,
the reader's rule ("higher version wins") and the topic follower are the shared contract in
:mod:`driftline.schemas.control_plane`; rules and their parsed view (:class:`RuleBook`) are
:mod:`driftline.schemas.rules`, silences and matchers :mod:`driftline.schemas.silences`.
:class:`ControlPlaneFollower` keeps a :class:`RuleBook` up to date from the topic on a
background thread, so rule changes reach a running worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from driftline.schemas import topics
from driftline.schemas.control_plane import CompactedTopicFollower
from driftline.schemas.rules import (
    Ack,
    Matcher,
    RetrainAction,
    Rule,
    RuleBook,
    RuleError,
    Silence,
    Snapshot,
    parse_duration_ms,
    parse_time_ms,
)

__all__ = [
    "Ack",
    "ControlPlaneFollower",
    "Matcher",
    "RetrainAction",
    "Rule",
    "RuleBook",
    "RuleError",
    "Silence",
    "Snapshot",
    "parse_duration_ms",
    "parse_time_ms",
]


class ControlPlaneFollower(CompactedTopicFollower):
    """Reads the control-plane topic from the beginning into a :class:`RuleBook`, forever (the
    shared :class:`~driftline.schemas.control_plane.CompactedTopicFollower`): ``start()``
    returns at once, ``wait_ready(timeout)`` blocks until the records that were on the topic
    at start have been applied."""

    def __init__(
        self,
        bootstrap: str,
        topic: str = topics.RULES,
        rulebook: RuleBook | None = None,
        *,
        client_config: Mapping[str, Any] | None = None,
        poll_seconds: float = 0.2,
    ) -> None:
        self.rulebook = rulebook if rulebook is not None else RuleBook()
        super().__init__(
            bootstrap,
            lambda key, value, _p, _o: self.rulebook.apply(key, value),
            topic,
            name="worker-rules",
            client_config=client_config,
            poll_seconds=poll_seconds,
        )
