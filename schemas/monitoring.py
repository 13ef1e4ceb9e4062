"""Per-model monitoring settings on the control plane: the record kind ``monitoring``.

A model's owner sets its false-alarm budget and window bounds (``PUT /v1/models/{model}/
monitoring``); the API writes them to the control-plane topic ``driftline.rules.v1`` as the
record ``monitoring:<model_id>`` (format: :mod:`driftline.schemas.control_plane`), and every
worker follows that topic (``driftline.streams.rulebook``), so a running worker uses them from
the model's next window on.

``data`` holds only what the owner set, by name (:data:`FIELDS`); a field left out takes the
worker's default (``DRIFTLINE_MONITOR_*``), so a changed default reaches every model that did
not set its own. The meaning of each field and the checks of its value belong to the monitor
(``driftline.detectors.monitor.MonitorConfig.with_settings``): here a record is only checked
for shape, so that every reader agrees on what a record holds.

>>> settings = MonitoringSettings.from_record("churn", 2, {"window_size": 2000, "days": 90})
>>> settings.model_id, settings.version, dict(settings.values)
('churn', 2, {'days': 90, 'window_size': 2000})
>>> try:
...     MonitoringSettings.from_record("churn", 1, {"windows": 5})
... except MonitoringError as exc:
...     print(exc)
monitoring churn: unknown settings ['windows']
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["FIELDS", "INTEGER_FIELDS", "KIND", "MonitoringError", "MonitoringSettings"]

KIND: Final = "monitoring"
# The same names as driftline.detectors.monitor.MONITOR_SETTINGS (a test holds them equal;
# schemas may not import detectors).
FIELDS: Final = (
    "false_alarms",
    "days",
    "events_per_day",
    "window_size",
    "max_window_seconds",
    "auto_reference_events",
)
INTEGER_FIELDS: Final = ("window_size", "auto_reference_events")


class MonitoringError(ValueError):
    """A ``monitoring`` record whose data is not settings (logged and skipped by readers)."""


@dataclass(frozen=True)
class MonitoringSettings:
    """One model's own settings as a record holds them: ``values`` by name, only those set."""

    model_id: str
    version: int
    values: Mapping[str, float | int] = field(default_factory=dict)

    @classmethod
    def from_record(cls, ident: str, version: int, data: Mapping[str, Any]) -> MonitoringSettings:
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise MonitoringError(f"monitoring {ident}: unknown settings {unknown}")
        values: dict[str, float | int] = {}
        for name in sorted(data):
            value = data[name]
            if value is None:
                continue  # null: the worker's default, like a field left out
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise MonitoringError(f"monitoring {ident}: {name} is not a number: {value!r}")
            if not math.isfinite(value):
                raise MonitoringError(f"monitoring {ident}: {name} is {value}")
            if name in INTEGER_FIELDS and value != int(value):
                raise MonitoringError(f"monitoring {ident}: {name} is not whole: {value}")
            values[name] = value
        return cls(ident, int(version), values)
