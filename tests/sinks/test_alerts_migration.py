"""The alerts and rule_versions tables of migration 0004."""

from __future__ import annotations

import time
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


def test_evaluator_rows_land_and_read_back_the_way_the_api_reads_them(chdb_path: Path) -> None:
    from driftline.api.routes.alerts import _COLUMNS
    from driftline.streams.alerting import AlertEvaluator
    from driftline.streams.kv import MemoryKV
    from driftline.streams.rulebook import RuleBook

    from tests.streams.alerting_support import MIN, batch, drift, put_rule, put_silence

    t0 = (int(time.time() * 1000) // MIN - 60) * MIN  # recent: no partition is too old
    book = RuleBook()
    put_rule(book, "r1", repeat_interval="10m", notify=["ops"],
             actions=[{"type": "retrain"}])  # fmt: skip
    put_silence(book, "s1", [{"name": "model_id", "value": "m"}], t0, t0 + 5 * MIN)
    evaluator, kv = AlertEvaluator(book), MemoryKV()
    first = evaluator.evaluate(batch(drift(1, t0)), kv, {"m": 0})
    second = evaluator.evaluate(batch(clock=t0 + 30 * MIN), kv, {"m": 0})
    with EmbeddedStore(chdb_path, "alerts_rows") as store:
        store.migrate()
        for outcome in (first, second, first):  # the first batch replayed: deduplicated
            for table, rows in outcome.rows.items():
                store.insert_rows(table, rows)
        got = store.query(
            f"SELECT {_COLUMNS}, event_id, silenced, silence_ids, notify FROM alerts FINAL "
            "ORDER BY updated_at"
        )
        assert [(row[6], row[12] - t0, row[15]) for row in got] == [
            ("firing", 0, 1),
            ("resolved", 10 * MIN, 0),
        ]
        assert [row[14] for row in got] == [a["event_id"] for a in first.alerts + second.alerts]
        assert got[0][16] == ["s1"] and got[1][17] == ["ops"]
        assert store.query("SELECT count() FROM retraining_requests FINAL") == [(1,)]
        store.command("DROP DATABASE alerts_rows")
