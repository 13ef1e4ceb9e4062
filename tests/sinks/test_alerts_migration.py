"""The alerts and rule_versions tables of migration 0004, whichever side creates them first."""

from __future__ import annotations

from pathlib import Path

from driftline.sinks import EmbeddedStore
from driftline.sinks.tables import ALERTS


def test_alerts_and_rule_versions_exist_after_migrate(chdb_path: Path) -> None:
    with EmbeddedStore(chdb_path, "alerts_fresh") as store:
        store.migrate()
        tables = {name for (name,) in store.query("SHOW TABLES")}
        assert {"alerts", "rule_versions"} <= tables
        assert store.column_types("alerts") == ALERTS.all_columns
        store.command("DROP DATABASE alerts_fresh")


def test_migrate_completes_a_table_the_api_created_first(chdb_path: Path) -> None:
    # The API creates its own (narrower) alerts table when it starts before any worker.
    from driftline.api.tables import create_tables

    with EmbeddedStore(chdb_path, "alerts_api_first") as store:
        store.command("CREATE DATABASE IF NOT EXISTS alerts_api_first")
        create_tables(store)
        assert "event_id" not in store.column_types("alerts")
        store.migrate()
        store._types.clear()
        assert store.column_types("alerts") == ALERTS.all_columns
        store.command("DROP DATABASE alerts_api_first")
