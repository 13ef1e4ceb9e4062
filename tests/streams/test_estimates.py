"""The worker's CBPE stage through BatchProcessor, on real codec bytes: estimates per window
beside what the labels later say, a concept change the estimate cannot see, the same rows
whatever the batching and across restarts (checkpoint round trips), and alert rules on
``estimated_accuracy``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from driftline.schemas import Codec, topics
from driftline.schemas.alert_lifecycle import AlertEvaluator, MemoryKV
from driftline.schemas.rules import RuleBook
from driftline.sinks.tables import columns_for
from driftline.streams.estimates import EstimateConfig
from driftline.streams.processor import BatchProcessor, ProcessorConfig, SourceMessage
from driftline.streams.state import PartitionState
from support.cbpe_traffic import START_MS, WINDOW_MS, traffic

CODEC = Codec()
CONFIG = ProcessorConfig(
    profiles=None,
    estimates=EstimateConfig(window_ms=WINDOW_MS, calibration_size=2_000, min_bin_count=50),
)


def run(batches: list[list[SourceMessage]], restart_between: bool = False) -> list:
    processor = BatchProcessor(CODEC, CONFIG)
    results = []
    for batch in batches:
        if restart_between:
            states = {
                p: PartitionState.from_bytes(s.to_bytes(), CONFIG.join_ttl_ms, CONFIG.orphan_ttl_ms)
                for p, s in processor.states.items()
            }
            processor = BatchProcessor(CODEC, CONFIG, states)
        results.append(processor.process(batch))
    return results


def estimates(results) -> list[dict]:
    return sorted(
        (row for r in results for row in r.rows["performance_estimates"]),
        key=lambda row: row["window_start"],
    )


def estimate_stats(results) -> list[dict]:
    rows = [row for r in results for row in r.rows["detector_stats"] if row["detector"] == "CBPE"]
    return sorted(rows, key=lambda row: (row["time"], row["stream_name"]))


def test_estimates_track_the_realised_accuracy_and_miss_a_concept_change() -> None:
    n, change = 12_000, 8_000
    msgs, correct = traffic("cb", n, change_at=change)
    (result,) = run([msgs])
    rows = estimates([result])
    # windows close at the first prediction of a later window: 11 closed, the 12th is open
    assert [r["window_start"] for r in rows] == [START_MS + k * WINDOW_MS for k in range(11)]
    columns_for("performance_estimates", rows)  # every column the table wants is there
    z = []
    for k, row in enumerate(rows):
        assert row["n_predictions"] == WINDOW_MS and row["positive_label"] == "1"
        assert row["calibration_size"] == 2_000 and row["model_version"] == "1"
        realised = correct[k * WINDOW_MS : (k + 1) * WINDOW_MS].mean()
        z.append((realised - row["estimated_accuracy"]) / row["accuracy_std_error"])
    z = np.array(z)
    # within 4 standard errors before the change (see tests/detectors/test_cbpe.py), far
    # below the estimate after it: the labels show what the scores could not
    assert np.abs(z[: change // WINDOW_MS]).max() < 4, z
    assert (z[change // WINDOW_MS :] < -8).all(), z
    stats = estimate_stats([result])
    assert {s["stream_name"] for s in stats} == {
        "estimated_accuracy", "estimated_precision", "estimated_recall", "estimated_f1",
    }  # fmt: skip
    accuracy = [s for s in stats if s["stream_name"] == "estimated_accuracy"]
    assert [s["estimate"] for s in accuracy] == [r["estimated_accuracy"] for r in rows]
    assert [s["time"] for s in accuracy] == [r["window_end"] for r in rows]
    assert len({r["event_id"] for r in rows}) == len(rows)


def test_windows_before_the_calibration_are_estimated_once_labels_fit_it() -> None:
    """Labels of the first 2,000 predictions arrive only after 5,000 predictions: the windows
    closed meanwhile wait and come out with the same estimates as with early labels."""
    msgs, _ = traffic("late", 7_000)
    predictions = [m for m in msgs if m.topic == topics.PREDICTIONS]
    outcomes = [m for m in msgs if m.topic == topics.OUTCOMES]
    (early,) = run([msgs])
    late = run([predictions[:5_000], outcomes, predictions[5_000:]])
    assert late[0].rows["performance_estimates"] == []
    assert len(late[1].rows["performance_estimates"]) == 4  # the 5 closed minus the open one
    assert estimates(late) == estimates([early])


@pytest.mark.parametrize("restart_between", [False, True])
def test_any_batching_and_restarts_give_the_same_estimates(restart_between: bool) -> None:
    msgs, _ = traffic("bb", 5_000, change_at=4_000)
    (whole,) = run([msgs])
    cuts = sorted(np.random.default_rng(8).choice(len(msgs), 12, replace=False).tolist())
    split = run(
        [msgs[a:b] for a, b in zip([0, *cuts], [*cuts, len(msgs)], strict=True)], restart_between
    )
    assert estimates(split) == estimates([whole])
    assert estimate_stats(split) == estimate_stats([whole])
    assert len(estimates([whole])) == 4


def test_single_events_one_by_one_equal_the_bulk_path() -> None:
    msgs, _ = traffic("one", 2_600)
    (whole,) = run([msgs])
    one_by_one = run([[m] for m in msgs])
    assert estimates(one_by_one) == estimates([whole])
    assert len(estimates([whole])) == 2


# -- per model version -------------------------------------------------------------------------
def _realised(correct: np.ndarray, row: dict) -> float:
    k = (row["window_start"] - START_MS) // WINDOW_MS
    return float(correct[k * WINDOW_MS : (k + 1) * WINDOW_MS].mean())


def test_a_new_version_is_read_through_the_old_calibration_only_in_its_warm_up_and_says_so():
    """Version 2 serves from prediction 3,000 with underconfident scores: its first 2,000
    (calibration_size) predictions are read through version 1's calibration, flagged; later
    windows through its own, which reads its scores right."""
    msgs, correct = traffic("vv", 9_000, version_at=3_000)
    (result,) = run([msgs])
    rows = estimates([result])
    assert [r["window_start"] for r in rows] == [START_MS + k * WINDOW_MS for k in range(8)]
    flags = [(r["model_version"], r["calibration_versions"], r["n_borrowed"]) for r in rows]
    assert flags == [("1", ["1"], 0)] * 3 + [("2", ["1"], 1_000)] * 2 + [("2", ["2"], 0)] * 3
    for row in rows:
        z = (_realised(correct, row) - row["estimated_accuracy"]) / row["accuracy_std_error"]
        if row["n_borrowed"]:  # version 1's map understates version 2's squashed scores
            assert z > 4, (row["window_start"], z)
        else:
            assert abs(z) < 4, (row["window_start"], z)


@pytest.mark.parametrize("restart_between", [False, True])
def test_per_version_calibrations_give_the_same_rows_whatever_the_batching(restart_between):
    msgs, _ = traffic("vb", 7_000, version_at=2_500)
    (whole,) = run([msgs])
    assert {r["n_borrowed"] > 0 for r in estimates([whole])} == {True, False}
    cuts = sorted(np.random.default_rng(4).choice(len(msgs), 15, replace=False).tolist())
    split = run(
        [msgs[a:b] for a, b in zip([0, *cuts], [*cuts, len(msgs)], strict=True)], restart_between
    )
    assert estimates(split) == estimates([whole])
    assert estimate_stats(split) == estimate_stats([whole])
    # labels of version 2 held back until its windows closed: they wait, then come out equal
    predictions = [m for m in msgs if m.topic == topics.PREDICTIONS]
    outcomes = [m for m in msgs if m.topic == topics.OUTCOMES]
    late = run([outcomes[:2_000], predictions, outcomes[2_000:]], restart_between)
    assert estimates(late) == estimates([whole])


def _rule(op: str, value: float) -> RuleBook:
    book = RuleBook()
    record = {
        "kind": "rule", "id": "r1", "version": 1, "created_at": "", "updated_at": "",
        "updated_by": "", "data": {
            "name": "EstimatedAccuracyLow", "models": ["al"], "for": "0s",
            "signal": {"kind": "metric", "metric": "estimated_accuracy"},
            "condition": {"type": "threshold", "op": op, "value": value},
        },
    }  # fmt: skip
    book.apply(b"rule:r1", json.dumps(record).encode())
    return book


def test_alert_rules_watch_the_estimated_accuracy() -> None:
    msgs, _ = traffic("al", 5_000)
    results = run([msgs])
    (rule,) = _rule("<", 0.9).snapshot().rules
    assert (rule.signal_kind, rule.stream_name, rule.detector, rule.stat_field) == (
        "statistic", "estimated_accuracy", "CBPE", "estimate",
    )  # fmt: skip
    # calibrated scores uniform on [0, 1]: accuracy is about 0.75 in every window
    fired = AlertEvaluator(_rule("<", 0.9)).evaluate(results[0], MemoryKV(), {"al": 0})
    firing = [a for a in fired.alerts if a["status"] == "FIRING"]
    assert firing and firing[0]["updated_at"] == START_MS + WINDOW_MS  # the first window's end
    assert 0.7 < firing[0]["value"] < 0.8
    quiet = AlertEvaluator(_rule("<", 0.5)).evaluate(results[0], MemoryKV(), {"al": 0})
    assert quiet.alerts == []


@pytest.mark.e2e
def test_estimates_land_in_clickhouse_beside_the_realised_accuracy(fresh_kafka, tmp_path) -> None:  # noqa: ANN001
    """Real broker, real worker process, embedded ClickHouse: the synthetic stream's score says
    nothing about its errors (right 90% of the time at any score), so CBPE estimates 0.9 in
    every window; from event 4,000 on the model is wrong 45% of the time (a concept change the
    scores do not show), and the view beside the estimates shows the realised accuracy fall."""
    import signal
    import uuid

    from e2e_support import lag, query_store, start_worker, stop_worker, wait_for, worker_env

    from driftline.admin import ensure_topics
    from driftline.synthetic import SyntheticStream, publish

    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 2)
    stream = SyntheticStream("e2e-cbpe", n_features=2, change_at=4_000)  # 10 ms per event
    assert publish(bootstrap, stream, 6_000) == 6_000 + 6_000 - 50
    app_id = f"worker-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        bootstrap, tmp_path / "data", app_id,
        DRIFTLINE_CBPE_WINDOW_SECONDS="5", DRIFTLINE_CBPE_CALIBRATION_SIZE="1000",
    )  # fmt: skip
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        wait_for(lambda: lag(bootstrap, app_id) == 0, 240, "the worker to catch up", worker, log)
    finally:
        assert stop_worker(worker) in (0, -signal.SIGTERM), log.read_text()[-3000:]
    rows = query_store(
        tmp_path / "data",
        {
            "estimates": "SELECT count(), uniqExact(event_id), min(n_predictions), "
            "max(n_predictions), round(min(estimated_accuracy), 3), "
            "round(max(estimated_accuracy), 3) FROM performance_estimates FINAL "
            "WHERE model_id = 'e2e-cbpe'",
            "realised": "SELECT toUnixTimestamp64Milli(window_start) - "
            f"{stream.start_ms}, n_labelled, realised_accuracy, estimated_accuracy, "
            "accuracy_error, accuracy_std_error FROM performance_estimates_realised "
            "WHERE model_id = 'e2e-cbpe' ORDER BY window_start",
            "stats": "SELECT count() FROM detector_stats FINAL WHERE model_id = 'e2e-cbpe' "
            "AND detector = 'CBPE' AND stream_name = 'estimated_accuracy'",
        },
    )
    # 60 s of events in 5 s windows: 11 closed, each of 500 predictions; the last stays open
    ((count, ids, least, most, low, high),) = rows["estimates"]
    assert (count, ids, least, most) == (11, 11, 500, 500)
    assert 0.85 < low <= high < 0.95
    assert rows["stats"] == [[11]]
    realised = rows["realised"]
    assert [r[0] for r in realised] == [5_000 * k for k in range(11)]
    assert all(r[1] == 500 for r in realised)  # every label of these windows came
    before = [r for r in realised if r[0] + 5_000 <= 40_000]  # windows before event 4,000
    after = [r for r in realised if r[0] >= 40_000]
    for start, _, real, estimated, error, std_error in before:
        assert error == pytest.approx(real - estimated)
        assert abs(error) < 4 * std_error, (start, real, estimated)
    assert all(error < -0.2 for *_, error, _ in after), after
