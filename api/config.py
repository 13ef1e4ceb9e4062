"""The API's own configuration (the CLI maps ``driftline.settings.Settings`` onto it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ApiConfig:
    title: str = "driftline alert-rule API"
    #: Requests with a larger body are refused with 413 before they are parsed.
    max_body_bytes: int = 256 * 1024
    #: Longest history one dry-run may read.
    dry_run_max_days: int = 31
    #: Most rows of history one dry-run may evaluate (larger ranges answer 422).
    dry_run_max_rows: int = 200_000
    #: Apply the ClickHouse migrations (``alerts``, ``rule_versions``...) at startup.
    create_tables: bool = True
    #: Most alerts one list call returns.
    max_alerts: int = 1000
    #: Largest reference upload (``PUT /v1/models/{model}/reference``: training data as CSV,
    #: Parquet or JSON columns); larger bodies get 413.
    max_reference_bytes: int = 64 * 1024 * 1024
    #: Models a reference may be uploaded for (``DRIFTLINE_KNOWN_MODELS``); empty: any.
    known_models: frozenset[str] = field(default_factory=frozenset)
    #: The workers' monitoring defaults (``DRIFTLINE_MONITOR_*`` by setting name, as
    #: ``Settings.monitor_settings()``; empty: the built-in ones): a model's own settings
    #: (``PUT /v1/models/{model}/monitoring``) are checked over them, and a GET shows the
    #: settings in effect with them. Run the API with the workers' settings.
    monitor_defaults: Mapping[str, float] = field(default_factory=dict)
