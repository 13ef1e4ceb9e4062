"""Every query of the Grafana dashboards (grafana/dashboards/*.json) runs on a store filled by
the worker's own logic, through the embedded store and through the ClickHouse HTTP endpoint
(driftline's own, with clickhouse-connect), with the plugin's macros expanded the way
grafana-clickhouse-datasource expands them, and returns the columns its panel is built on.

The store is filled by ``fill_store`` of test_documented_queries.py: SyntheticStream events
through ``BatchProcessor`` and ``AlertEvaluator``, every table inserted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from driftline.sinks import EmbeddedStore, ServerStore, Store

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
_spec = importlib.util.spec_from_file_location(
    "documented_queries_fill_grafana", Path(__file__).with_name("test_documented_queries.py")
)
assert _spec and _spec.loader
_fill = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fill)

DATASOURCE_UID = "driftline-clickhouse"
INTERVAL_S = 60

# (dashboard uid, panel title) -> the columns its panel reads, in order.
EXPECTED: dict[tuple[str, str], list[str]] = {
    ("driftline-fleet", "Predictions"): ["predictions"],
    ("driftline-fleet", "Drift events"): ["drift_events"],
    ("driftline-fleet", "Open alerts"): ["open_alerts"],
    ("driftline-fleet", "Retraining requests"): ["retraining_requests"],
    ("driftline-fleet", "Models"): ["model_id", "model_version", "predictions", "label_coverage",
                                    "accuracy", "mae", "drift_events", "last_drift", "last_seen"],
    ("driftline-fleet", "Predictions per model"): ["time", "model_id", "predictions"],
    ("driftline-fleet", "Accuracy per model"): ["time", "model_id", "accuracy"],
    ("driftline-model", "Accuracy and error rate"): ["time", "accuracy", "error_rate"],
    ("driftline-model", "MAE (regression)"): ["time", "mae", "rmse"],
    ("driftline-model", "Traffic and label coverage"): ["time", "predictions", "labeled",
                                                        "label_coverage"],
    ("driftline-model", "Traffic per version"): ["time", "model_version", "predictions"],
    ("driftline-model", "Drift events"): ["detected_at", "model_version", "stream_kind",
                                          "stream_name", "detector", "position", "statistic",
                                          "threshold", "evidence", "source_event_id", "event_id"],
    ("driftline-model", "Retraining requests"): ["requested_at", "model_version", "priority",
                                                 "policy", "reason", "window_start",
                                                 "window_end", "triggers", "event_id"],
    ("driftline-drift", "Drift events per stream"): ["time", "stream", "drift_events"],
    ("driftline-drift", "Detector estimates per stream"): ["t", "stream", "estimate"],
    ("driftline-drift", "Streams: values seen, drift flags, last estimate"): [
        "stream_kind", "stream_name", "detector", "n_values", "drift_flags", "last_estimate",
        "last_report"],
    ("driftline-drift", "Drift evidence"): ["detected_at", "stream_kind", "stream_name",
                                            "detector", "position", "statistic", "p_value",
                                            "threshold", "evidence"],
    ("driftline-alerts", "Alerts now"): ["fingerprint", "alertname", "model_id", "severity",
                                         "state", "silenced", "starts_at", "updated_at"],
    ("driftline-alerts", "Alert state changes"): ["time", "state", "changes"],
    ("driftline-alerts", "Retraining requests over time"): ["time", "model_id", "requests"],
    ("driftline-alerts", "Alert history"): ["updated_at", "state", "alertname", "model_id",
                                            "severity", "value", "silenced", "trigger_event_ids"],
    ("driftline-alerts", "Retraining requests"): ["requested_at", "model_id", "model_version",
                                                  "priority", "policy", "reason"],
    ("driftline-alerts", "Rule changes"): ["updated_at", "kind", "id", "version", "op",
                                           "updated_by"],
}  # fmt: skip
# Template variable values to try: each All choice ('') and one real value.
VARIABLE_CHOICES = [
    {"model": "churn", "version": "", "segment": ""},
    {"model": "churn", "version": "1", "segment": "region=eu"},
]
# Panels that may be empty on this data: the synthetic models are classifiers.
MAY_BE_EMPTY = {("driftline-model", "MAE (regression)")}


def dashboards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text("utf-8")) for p in sorted((GRAFANA / "dashboards").glob("*.json"))]


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, rawSql) of every panel target."""
    return [
        (board["uid"], panel["title"], target["rawSql"])
        for board in dashboards()
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]


def expand(sql: str, start_s: int, end_s: int, variables: dict[str, str]) -> str:
    """The plugin's macros (grafana-clickhouse-datasource v4, seconds precision) and Grafana's
    template variables, as they reach ClickHouse."""

    def time_filter(m: re.Match) -> str:
        return f"{m[1]} >= toDateTime({start_s}) AND {m[1]} <= toDateTime({end_s})"

    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", time_filter, sql)
    sql = re.sub(r"\$__timeInterval\(([^)]+)\)",
                 lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL {INTERVAL_S} second)",
                 sql)  # fmt: skip
    sql = sql.replace("$__fromTime", f"toDateTime({start_s})")
    sql = sql.replace("$__toTime", f"toDateTime({end_s})")
    sql = sql.replace("$__interval_s", str(INTERVAL_S))
    sql = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m[1] or m[2]], sql)
    assert "$" not in sql, f"unexpanded macro in {sql}"
    return sql


@pytest.fixture(scope="module", params=["embedded", "server-http"])
def filled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Store]:  # fmt: skip
    if request.param == "embedded":
        store: Store = EmbeddedStore(tmp_path_factory.mktemp("chdb"), "driftline")
    else:
        url = os.environ.get("DRIFTLINE_TEST_CLICKHOUSE_URL")
        if not url:
            pytest.skip("DRIFTLINE_TEST_CLICKHOUSE_URL not set")
        store = ServerStore(url, f"grafana_{uuid.uuid4().hex[:8]}")
    try:
        store.migrate()
        _fill.fill_store(store, n=1500)
        yield store
    finally:
        if request.param == "server-http":
            store.command(f"DROP DATABASE IF EXISTS {store.database}")
        store.close()


def test_every_panel_has_its_expected_columns_listed():
    assert sorted((uid, title) for uid, title, _ in panel_queries()) == sorted(EXPECTED)


def test_provisioning_points_the_dashboards_at_the_clickhouse_plugin():
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/clickhouse.yaml").read_text())
    (datasource,) = source["datasources"]
    assert datasource["type"] == "grafana-clickhouse-datasource"
    assert datasource["uid"] == DATASOURCE_UID
    for board in dashboards():
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DATASOURCE_UID
                assert target["editorType"] == "sql" and target["rawSql"].strip()
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]


@pytest.mark.parametrize("variables", VARIABLE_CHOICES, ids=["all", "version-segment"])
def test_panel_queries_run_and_return_their_columns(filled, variables):
    now = int(time.time())
    start, end = now - 86_400, now + 3600
    for uid, title, sql in panel_queries():
        frame = filled.query_df(expand(sql, start, end, variables))
        assert list(frame.columns) == EXPECTED[(uid, title)], (uid, title)
        if (uid, title) not in MAY_BE_EMPTY:
            assert len(frame) > 0, f"{uid} / {title!r} returned no rows for {variables}"
        if frame.columns[0] in ("time", "t"):
            assert str(frame.dtypes.iloc[0]).startswith("datetime64"), (uid, title)


def test_template_variable_queries_offer_the_data(filled):
    values: dict[str, list[str]] = {}
    for board in dashboards():
        for variable in board["templating"]["list"]:
            sql = expand(variable["query"], 0, 0, {"model": "churn"})
            values[variable["name"]] = [row[0] for row in filled.query(sql)]
    assert values["model"] == ["churn", "fraud"]
    assert values["version"] == ["1", "2"]
    assert values["segment"] and all("=" in s for s in values["segment"])
