"""The workers' view of the control plane: alert rules, silences, acknowledgements and each
model's own monitoring settings.

The API writes every entity to the compacted topic ``driftline.rules.v1``; the record format,
the reader's rule ("higher version wins") and the topic follower are the shared contract in
:mod:`driftline.schemas.control_plane`; rules and their parsed view (:class:`RuleBook`) are
:mod:`driftline.schemas.rules`, silences and matchers :mod:`driftline.schemas.silences`.
:class:`ControlPlaneFollower` keeps a :class:`RuleBook` up to date from the topic on a
background thread, so rule changes reach a running worker. :class:`MonitorConfigs` turns the
book's ``monitoring`` records into each model's ``MonitorConfig`` over the worker's defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from driftline.detectors.monitor import MonitorConfig
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
    "MonitorConfigs",
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

log = logging.getLogger(__name__)


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


class MonitorConfigs:
    """Each model's :class:`MonitorConfig`: the worker's ``defaults`` with the model's own
    settings from the control plane (``monitoring:<model_id>``, set through ``PUT
    /v1/models/{model}/monitoring``) over them; a model without settings gets ``defaults``.

    Called once per model and batch (the data-drift stage, ``BatchProcessor``), so it answers
    from a cache until the model's record changes. A record whose values the monitor refuses
    (written by something other than the API, or valid only under other defaults) is logged
    once and the model keeps the defaults.

    >>> import json
    >>> book = RuleBook()
    >>> configs = MonitorConfigs(MonitorConfig(window_size=5000), book)
    >>> record = {"kind": "monitoring", "id": "churn", "version": 1, "created_at": "",
    ...           "updated_at": "", "updated_by": "me", "data": {"window_size": 2000}}
    >>> book.apply("monitoring:churn", json.dumps(record).encode())
    True
    >>> configs("churn").window_size, configs("fraud").window_size
    (2000, 5000)
    """

    def __init__(self, defaults: MonitorConfig, rulebook: RuleBook) -> None:
        self.defaults = defaults
        self.rulebook = rulebook
        # model -> (the settings record the config was made from, the config)
        self._cache: dict[str, tuple[Any, MonitorConfig]] = {}

    def __call__(self, model_id: str) -> MonitorConfig:
        settings = self.rulebook.monitoring(model_id)
        if settings is None:
            self._cache.pop(model_id, None)
            return self.defaults
        cached = self._cache.get(model_id)
        if cached is not None and cached[0] is settings:
            return cached[1]
        try:
            config = self.defaults.with_settings(**settings.values)
        except ValueError as exc:
            log.warning("monitoring settings v%d of model %r are not usable (%s); it keeps the "
                        "worker's defaults", settings.version, model_id, exc)  # fmt: skip
            config = self.defaults
        self._cache[model_id] = (settings, config)
        return config
