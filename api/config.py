"""The API's own configuration (the CLI maps ``driftline.settings.Settings`` onto it)."""

from __future__ import annotations

from dataclasses import dataclass


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
