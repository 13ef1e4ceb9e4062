"""performance_estimates and the view beside it, on a store filled by the worker's own logic:
the realised values the view computes equal the labels' (counted in Python), the documented
query of docs/cbpe.md runs, and a dry-run of an ``estimated_accuracy`` rule reads the
estimates as the workers evaluate them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from driftline.api.dryrun import evaluate
from driftline.api.models import RuleCreate
from driftline.schemas import Codec
from driftline.sinks import Store
from driftline.streams.estimates import EstimateConfig
from driftline.streams.processor import BatchProcessor, ProcessorConfig
from support.cbpe_traffic import START_MS, WINDOW_MS, traffic

DOC = Path(__file__).resolve().parents[2] / "docs" / "cbpe.md"
CONFIG = ProcessorConfig(
    profiles=None,
    estimates=EstimateConfig(window_ms=WINDOW_MS, calibration_size=2_000, min_bin_count=50),
)


def fill(store: Store, model: str, n: int, change_at: int | None = None) -> np.ndarray:
    msgs, correct = traffic(model, n, change_at)
    result = BatchProcessor(Codec(), CONFIG).process(msgs)
    for table in ("joined_labels", "performance_estimates", "detector_stats"):
        store.insert_rows(table, result.table_rows(table))
    return correct


def test_the_view_puts_the_realised_values_beside_each_estimate(embedded_store: Store) -> None:
    correct = fill(embedded_store, "churn", 6_000, change_at=4_000)
    rows = embedded_store.query(
        "SELECT toUnixTimestamp64Milli(window_start), n_labelled, realised_accuracy, "
        "estimated_accuracy, accuracy_error, accuracy_std_error, realised_precision, "
        "estimated_precision FROM performance_estimates_realised WHERE model_id = 'churn' "
        "ORDER BY window_start"
    )
    assert [r[0] for r in rows] == [START_MS + k * WINDOW_MS for k in range(5)]
    for k, (_, labelled, real, estimated, error, std_error, precision, est_p) in enumerate(rows):
        assert labelled == WINDOW_MS  # every label of the closed windows is in
        assert real == correct[k * WINDOW_MS : (k + 1) * WINDOW_MS].mean()
        assert abs(error - (real - estimated)) < 1e-12
        if k < 4:  # before the concept change at event 4,000
            assert abs(error) < 4 * std_error
        else:
            assert error < -8 * std_error
        assert 0 < precision < 1 and 0 < est_p < 1


def test_the_view_says_which_calibration_read_each_window(embedded_store: Store) -> None:
    msgs, _ = traffic("churn-v", 6_000, version_at=2_000)
    result = BatchProcessor(Codec(), CONFIG).process(msgs)
    for table in ("joined_labels", "performance_estimates"):
        embedded_store.insert_rows(table, result.table_rows(table))
    rows = embedded_store.query(
        "SELECT model_version, calibration_versions, n_borrowed, n_labelled "
        "FROM performance_estimates_realised WHERE model_id = 'churn-v' ORDER BY window_start"
    )
    assert rows == [("1", ["1"], 0, WINDOW_MS)] * 2 + [("2", ["1"], WINDOW_MS, WINDOW_MS)] * 2 + [
        ("2", ["2"], 0, WINDOW_MS)
    ]


def test_the_documented_query_runs(embedded_store: Store) -> None:
    fill(embedded_store, "churn", 4_000)
    (sql,) = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    rows = embedded_store.query(sql)
    assert len(rows) == 3 and all(r[2] == WINDOW_MS for r in rows)


def test_a_dry_run_of_an_estimated_accuracy_rule_reads_the_estimates(embedded_store: Store) -> None:
    fill(embedded_store, "churn", 5_000, change_at=2_500)
    start = datetime.fromtimestamp(START_MS / 1000 - 60, UTC)
    end = datetime.fromtimestamp(START_MS / 1000 + 60, UTC)

    metric = {"kind": "metric", "metric": "estimated_accuracy"}

    def dry_run(value: float, signal: dict = metric):
        rule = RuleCreate.model_validate(
            {
                "name": "low",
                "models": ["churn"],
                "signal": signal,
                "condition": {"type": "threshold", "op": "<", "value": value},
                "min_samples": 500,
            }
        )
        return evaluate(embedded_store, rule, start, end)

    # the scores are calibrated and uniform: about 0.75 in every window, concept change or not
    fired = dry_run(0.9)
    assert fired.would_fire and fired.evaluated == 4
    assert fired.firings[0].at == datetime.fromtimestamp((START_MS + WINDOW_MS) / 1000, UTC)
    assert 0.7 < fired.firings[0].value < 0.8
    assert not dry_run(0.5).would_fire
    # the same rule written as a statistic rule on the estimates' detector_stats rows
    statistic = {"kind": "statistic", "stream_kind": "METRIC", "stream_name": "estimated_accuracy",
                 "detector": "CBPE", "field": "estimate"}  # fmt: skip
    assert dry_run(0.9, statistic).firings == fired.firings
