"""``driftline replay`` on real files: what the label columns mean (inferred and said, or
``--task``), when outcomes arrived (``--outcome-time-col``), and ``--dry-run``.

Publishing itself runs against the real broker in tests/core/test_client.py; here a recording
producer stands in, since these tests are about how a file becomes columns.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from driftline.schemas.validation import DEFAULT_MAX_FEATURES

from driftline.replay import add_replay_command, infer_task, replay_file
from driftline.settings import Settings


@dataclass
class _Stats:
    delivered: int = 0
    failed: int = 0
    last_error: str | None = None


@dataclass
class RecordingProducer:
    """Keeps the columns it is given (the SDK's bulk path)."""

    predictions: list[Any] = field(default_factory=list)
    outcomes: list[Any] = field(default_factory=list)
    max_features: int = DEFAULT_MAX_FEATURES
    stats: _Stats = field(default_factory=_Stats)

    def log_prediction_columns(self, cols: Any) -> None:
        self.predictions.append(cols)
        self.stats.delivered += len(cols)

    def log_outcome_columns(self, cols: Any) -> None:
        self.outcomes.append(cols)
        self.stats.delivered += len(cols)

    def flush(self, timeout: float) -> int:
        return 0

    def column(self, kind: str, name: str) -> list[Any]:
        batches = self.predictions if kind == "predictions" else self.outcomes
        out: list[Any] = []
        for cols in batches:
            column = getattr(cols, name)
            out += column.to_pylist() if hasattr(column, "to_pylist") else column.tolist()
        return out


def churn_file(tmp_path: Path, n: int = 12) -> Path:
    """A binary classifier's log with 0/1 integer labels, as real exports have them."""
    df = pd.DataFrame(
        {
            "ts": pd.date_range("2026-01-01", periods=n, freq="min", tz="UTC").astype(str),
            "label_ts": pd.date_range("2026-01-02", periods=n, freq="min", tz="UTC").astype(str),
            "age": [20 + i for i in range(n)],
            "pred": [i % 2 for i in range(n)],
            "actual": [(i // 2) % 2 if i % 3 else None for i in range(n)],
        }
    )
    path = tmp_path / "churn.csv"
    df.to_csv(path, index=False)
    return path


def test_infer_task_reads_whole_numbers_as_classes_and_says_why() -> None:
    task, why = infer_task(pd.Series([0, 1, 1, 0], name="pred"), pd.Series([1.0, None, 0.0]))
    assert task == "classification" and "2 distinct values (0, 1)" in why
    assert infer_task(pd.Series(["yes", "no"], name="p"))[0] == "classification"
    assert infer_task(pd.Series([True, False], name="p"))[0] == "classification"
    task, why = infer_task(pd.Series([0.5, 1.25], name="price"))
    assert task == "regression" and "'price' holds fractional numbers" in why
    task, why = infer_task(pd.Series(range(100), name="count"))
    assert task == "regression" and "more than 20 distinct values" in why


def test_integer_labels_replay_as_classes_and_the_decision_is_told(tmp_path: Path) -> None:
    producer = RecordingProducer()
    told: list[str] = []
    stats = replay_file(
        churn_file(tmp_path), producer, "churn", prediction_col="pred", label_col="actual",
        time_col="ts", progress=False, notify=told.append,
    )  # fmt: skip
    assert stats.task == "classification" and stats.ok
    assert len(told) == 1 and "classification" in told[0] and "--task regression" in told[0]
    assert producer.column("predictions", "prediction_label") == [str(i % 2) for i in range(12)]
    assert all(math.isnan(v) for v in producer.column("predictions", "prediction_value"))
    labels = producer.column("outcomes", "label")
    assert labels == [str((i // 2) % 2) for i in range(12) if i % 3]  # "1", not "1.0"


def test_task_flag_overrides_inference(tmp_path: Path) -> None:
    producer = RecordingProducer()
    told: list[str] = []
    stats = replay_file(
        churn_file(tmp_path), producer, "churn", prediction_col="pred", label_col="actual",
        task="regression", progress=False, notify=told.append,
    )  # fmt: skip
    assert stats.task == "regression" and told == []
    assert producer.column("predictions", "prediction_value") == [float(i % 2) for i in range(12)]
    path = tmp_path / "text.csv"
    pd.DataFrame({"pred": ["yes", "no"], "x": [1, 2]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="--task regression: column 'pred' holds text"):
        replay_file(path, RecordingProducer(), "m", prediction_col="pred", task="regression",
                    progress=False)  # fmt: skip


def test_outcome_time_column_stamps_outcomes(tmp_path: Path) -> None:
    producer = RecordingProducer()
    stats = replay_file(
        churn_file(tmp_path), producer, "churn", prediction_col="pred", label_col="actual",
        time_col="ts", outcome_time_col="label_ts", progress=False,
    )  # fmt: skip
    assert stats.ok and stats.outcomes == 8
    prediction_times = producer.column("predictions", "event_time")
    outcome_times = producer.column("outcomes", "event_time")
    day = 24 * 3600 * 1000
    labelled = [i for i in range(12) if i % 3]
    assert outcome_times == [prediction_times[i] + day for i in labelled]
    # Named as a time, the column is no feature.
    cols = producer.predictions[0]
    assert cols.numeric_names == ("age",) and "label_ts" not in cols.categorical


def test_dry_run_validates_reports_bad_rows_and_publishes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df = pd.read_csv(churn_file(tmp_path))
    df.loc[4, "ts"] = "not a time"
    df.loc[7, "label_ts"] = None  # labelled row without an outcome time: its outcome refused
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    parser = argparse.ArgumentParser()
    add_replay_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["replay", str(path), "--model-id", "churn", "--prediction-col", "pred",
         "--label-col", "actual", "--time-col", "ts", "--outcome-time-column", "label_ts",
         "--dry-run", "--no-progress"]
    )  # fmt: skip
    # No broker behind this address: a dry run must not need one.
    status = args.handler(args, Settings(kafka_bootstrap="127.0.0.1:1"))
    out, err = capsys.readouterr()
    assert status == 1
    assert "dry run of" in out and "(classification)" in out and "nothing was published" in out
    assert "12 rows, 11 predictions and 6 outcomes would be published, 2 rows refused" in out
    assert "row 4: empty or unparseable time" in err
    assert "row 7: empty or unparseable outcome time" in err
    assert "treating churn as a classification model" in err


def test_dry_run_of_a_clean_file_exits_zero(tmp_path: Path, capsys) -> None:
    stats = replay_file(churn_file(tmp_path), None, "churn", prediction_col="pred",
                        label_col="actual", progress=False)  # fmt: skip
    assert stats.dry_run and stats.ok and (stats.predictions, stats.outcomes) == (12, 8)
    assert stats.delivered == 0


def test_bad_options_are_one_line_errors(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    add_replay_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["replay", str(churn_file(tmp_path)), "--model-id", "m",
                              "--prediction-col", "nope", "--dry-run"])  # fmt: skip
    assert args.handler(args, Settings()) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no column(s) ['nope']" in err
    assert len(err.strip().splitlines()) == 1


def test_a_replayed_classifier_gets_a_retraining_reason_in_its_own_error_rate(
    tmp_path: Path,
) -> None:
    """The issue's case: a 0/1 classifier at ~9.5% error whose reason read "mean error
    0.0000 -> 0.5238". Replayed columns go through the worker's own batch logic (offline: the
    end-to-end path is tests/core/test_client.py + tests/streams)."""
    import numpy as np
    from driftline.schemas import Codec, topics
    from driftline.streams.processor import BatchProcessor, ProcessorConfig, SourceMessage

    rng = np.random.default_rng(7)
    n, change = 8000, 4000
    wrong = rng.random(n) < np.where(np.arange(n) < change, 0.095, 0.5)
    pred = rng.integers(0, 2, n)
    df = pd.DataFrame({
        "ts": 1_767_225_600_000 + np.arange(n) * 1000,
        "x": rng.normal(size=n),
        "pred": pred,
        "actual": np.where(wrong, 1 - pred, pred),
    })  # fmt: skip
    path = tmp_path / "scored.parquet"
    df.to_parquet(path)
    producer = RecordingProducer()
    stats = replay_file(path, producer, "churn-replayed", prediction_col="pred",
                        label_col="actual", time_col="ts", progress=False, chunk_rows=1000)  # fmt: skip
    assert stats.task == "classification" and stats.ok
    codec = Codec()
    messages, offsets = [], {topics.PREDICTIONS: 0, topics.OUTCOMES: 0}
    for cols_list, topic in ((producer.predictions, topics.PREDICTIONS),
                             (producer.outcomes, topics.OUTCOMES)):  # fmt: skip
        for cols in cols_list:
            messages.append(SourceMessage(topic, 0, offsets[topic], b"churn-replayed",
                                          codec.encode_columns(cols)))  # fmt: skip
            offsets[topic] += 1
    result = BatchProcessor(codec, ProcessorConfig()).process(messages)
    assert result.retraining, "a change from 9.5% to 50% error must ask for retraining"
    reason = result.retraining[0]["reason"]
    found = re.search(r"mean error (\d\.\d+) -> (\d\.\d+)", reason)
    assert found, reason
    before, after = float(found[1]), float(found[2])
    # Before: the model's own error rate. After: the mean on the cut's far side, which at
    # detection time still holds some of the old regime, so above before, up to the new 50%
    # (how much old regime it keeps depends on delta: at the budget's small delta ADWIN
    # stops dropping old values sooner, 0.09 -> 0.11 here, where 0.002 gave more than 0.2).
    assert 0.05 < before < 0.15 and before < after < 0.65, reason
