"""The worker's data-drift stage through BatchProcessor, on real codec bytes: windows against the
model's first events, each kind of change found, nothing on unchanged traffic, and the same
rows and drift events whatever the batching and across restarts (checkpoint round trips)."""

from __future__ import annotations

import numpy as np
import pytest
from driftline.detectors.monitor import MonitorConfig
from driftline.detectors.reference import build_profile
from driftline.schemas import Codec, event_id, topics
from driftline.sinks.tables import columns_for
from driftline.streams import profiles
from driftline.streams.processor import BatchProcessor, ProcessorConfig, SourceMessage
from driftline.streams.state import ModelState, PartitionState

CODEC = Codec()
WINDOW = 500
REFERENCE_EVENTS = 2000
CONFIG = ProcessorConfig(
    profiles=MonitorConfig(window_size=WINDOW, auto_reference_events=REFERENCE_EVENTS)
)
START_MS = 1_790_000_000_000


def prediction(model: str, i: int, change: str | None) -> dict:
    g = np.random.default_rng([7, i])
    x = float(g.normal(0.0, 1.0))
    heavy = float(g.lognormal(0.0, 1.0))
    shares = [0.5, 0.3, 0.2] if change != "mix" else [0.2, 0.3, 0.5]
    plan = str(g.choice(["basic", "pro", "team"], p=shares))
    numeric = {"x": x + (0.6 if change == "mean" else 0.0), "heavy": heavy}
    if change == "missing" and g.random() < 0.6:
        del numeric["x"]  # the feature starts arriving empty in 60% of events
    score = float(g.random())
    return {
        "event_id": event_id("test-profiles", model, str(i)),
        "model_id": model,
        "model_version": "1",
        "event_time": START_MS + 10 * i,
        "numeric_features": numeric,
        "categorical_features": {"plan": plan},
        "segments": {},
        "prediction_label": "yes" if score >= 0.5 else "no",
        "prediction_score": score,
        "prediction_value": None,
        "probabilities": None,
    }


def messages(model: str, n: int, change: str | None = None, change_at: int = 3000) -> list[SourceMessage]:
    out = []
    for i in range(n):
        record = prediction(model, i, change if i >= change_at else None)
        out.append(
            SourceMessage(topics.PREDICTIONS, 0, i, model.encode(), CODEC.encode("PredictionEvent", record))
        )
    return out


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


def window_events(results) -> list[dict]:
    return [d for r in results for d in r.drift_events if d["detector"] != "ADWIN"]


def rows(results, table: str) -> list[dict]:
    return [row for r in results for row in r.rows[table]]


def test_unchanged_traffic_fills_the_tables_and_raises_nothing() -> None:
    (result,) = run([messages("calm", 6000)])
    drift = result.rows["feature_drift"]
    quality = result.rows["data_quality"]
    assert {r["window_index"] for r in drift} == set(range(8))  # (6000 - 2000) / 500
    assert {r["feature"] for r in drift} == {"x", "heavy", "plan", "score", "label", "multivariate"}
    assert {r["reference_source"] for r in drift} == {"first_events"}
    assert {r["test"] for r in quality} >= {"missing_rate", "out_of_range", "unseen_categories"}
    assert window_events([result]) == []
    # the rows are what the ClickHouse tables take (required columns present, types mapped)
    assert len(columns_for("feature_drift", drift)["test"]) == len(drift)
    assert len(columns_for("data_quality", quality)["test"]) == len(quality)
    # the first-events reference is recorded for analysts once, when it is built
    references = result.rows["reference_profiles"]
    assert {r["feature"] for r in references} == {"x", "heavy", "plan", "score", "label"}
    assert {(r["reference_id"], r["reference_source"], r["uploaded_by"]) for r in references} == {
        (drift[0]["reference_id"], "first_events", "worker")
    }
    # "uploaded" at the event time of the reference's last event (event 1999)
    assert {r["uploaded_at"] for r in references} == {START_MS + 10 * (REFERENCE_EVENTS - 1)}
    plan = next(r for r in references if r["feature"] == "plan")
    assert sum(plan["categories"].values()) == REFERENCE_EVENTS and plan["column_kind"] == "categorical"
    x = next(r for r in references if r["feature"] == "x")
    assert len(x["quantiles"]) == 9 and sum(x["bin_counts"]) == REFERENCE_EVENTS
    assert x["in_multivariate"] == 1 and x["stream_kind"] == "FEATURE"
    assert len(columns_for("reference_profiles", references)["feature"]) == len(references)


@pytest.mark.parametrize(
    ("change", "stream_name", "detector"),
    [
        ("mean", "x", {"ks", "chisquare"}),
        ("mix", "plan", {"chisquare"}),
        ("missing", "x", {"missing_rate"}),
    ],
)
def test_each_change_raises_a_drift_event_with_evidence(change, stream_name, detector) -> None:  # noqa: ANN001
    (result,) = run([messages("m", 5000, change=change, change_at=3000)])
    events = window_events([result])
    assert events, f"no window event for {change}"
    first = min(events, key=lambda e: e["position"])
    assert (first["stream_kind"], first["stream_name"]) == ("FEATURE", stream_name)
    assert first["detector"] in detector
    # found in the first whole window after the change (windows start at event 2000)
    assert first["position"] == 3499
    assert first["p_value"] < first["threshold"]
    evidence = first["evidence"]
    assert evidence["reference_source"] == "first_events"
    assert evidence["window_index"] == "2"
    assert float(evidence["alpha"]) == first["threshold"]
    assert {e["stream_name"] for e in events} <= {stream_name, "multivariate"}


@pytest.mark.parametrize("restart_between", [False, True])
def test_any_batching_and_restarts_give_the_same_windows(restart_between: bool) -> None:
    msgs = messages("mb", 5200, change="mean", change_at=3100)
    (whole,) = run([msgs])
    cuts = sorted(np.random.default_rng(4).choice(len(msgs), 9, replace=False).tolist())
    split = run([msgs[a:b] for a, b in zip([0, *cuts], [*cuts, len(msgs)], strict=True)], restart_between)
    for table in ("feature_drift", "data_quality", "drift_events", "reference_profiles"):
        assert rows(split, table) == rows([whole], table), table
    assert [e["event_id"] for e in window_events(split)] == [e["event_id"] for e in window_events([whole])]
    assert window_events([whole]), "the scenario must raise window drift"


def test_an_uploaded_reference_replaces_the_first_events() -> None:
    g = np.random.default_rng(1)
    reference = build_profile(
        {"x": g.normal(0.6, 1.0, 5000), "heavy": g.lognormal(0.0, 1.0, 5000),
         "plan": g.choice(["basic", "pro", "team"], 5000, p=[0.5, 0.3, 0.2])},
        model_id="up", version="train-7",
    )  # fmt: skip
    processor = BatchProcessor(CODEC, CONFIG)
    state = processor.partition(0).models.setdefault("up", ModelState("up", CONFIG.specs))
    profiles.set_reference(state, reference, CONFIG.profiles)
    result = processor.process(messages("up", 1000))
    drift = result.rows["feature_drift"]
    assert {r["reference_version"] for r in drift} == {"train-7"}
    assert {r["window_index"] for r in drift} == {0, 1}  # no waiting for first events
    events = window_events([result])
    # the live x is N(0, 1) and the reference N(0.6, 1): drift against the training data
    x_tests = {e["detector"] for e in events if e["stream_name"] == "x"}
    assert x_tests and x_tests <= {"ks", "chisquare"}
    # the reference has no model outputs, so the live ones are reported as new columns
    others = {(e["stream_kind"], e["stream_name"], e["detector"]) for e in events if e["stream_name"] != "x"}
    assert others == {("PREDICTION", "score", "new_feature"), ("PREDICTION", "label", "new_feature")}


def test_a_reference_record_from_the_topic_reaches_the_running_processor() -> None:
    g = np.random.default_rng(2)
    reference = build_profile(
        {"x": g.normal(0.0, 1.0, 5000), "heavy": g.lognormal(0.0, 1.0, 5000),
         "plan": g.choice(["basic", "pro", "team"], 5000, p=[0.5, 0.3, 0.2])},
        model_id="live", version="train-9",
    )  # fmt: skip
    book = profiles.ReferenceBook(CODEC)
    processor = BatchProcessor(CODEC, CONFIG)
    processor.references = book
    msgs = messages("live", 3000)
    first = processor.process(msgs[:1500])  # still collecting its first events
    assert first.rows["feature_drift"] == []
    record = CODEC.encode("ReferenceProfile", reference.to_record(START_MS, "apikey:k/ci"))
    book.on_record("live", b"\x00garbage", 0, 0)  # another writer's junk: skipped, counted
    book.on_record("live", record, 0, 1)
    assert (book.refused, book.applied) == (1, 1)
    second = processor.process(msgs[1500:])
    # the uploaded reference is recorded as it reached the worker, with who sent it
    uploaded = second.rows["reference_profiles"]
    assert {(r["reference_id"], r["uploaded_by"], r["reference_version"]) for r in uploaded} == {
        (reference.reference_id, "apikey:k/ci", "train-9")
    }
    assert {r["feature"] for r in uploaded} == {"x", "heavy", "plan"}
    assert book.take_arrivals() == []  # taken once
    drift = second.rows["feature_drift"]
    assert {r["reference_version"] for r in drift} == {"train-9"}
    assert {r["first_position"] for r in drift} == {1500, 2000, 2500}
    assert second.counters["references_applied"] == 1
    # the reference in use is part of the checkpoint
    state = PartitionState.from_bytes(processor.states[0].to_bytes(), 1, 1)
    assert state.models["live"].profiles.profile.reference_id == reference.reference_id


SWITCH = 4200  # the first prediction of version "2", mid-window (windows start at 0, 500, ...)


def switched(model: str, n: int) -> list[SourceMessage]:
    """Version "1" then, from event SWITCH on, version "2" whose x is 0.6 sd higher: a
    stationary stream of each version, with inputs that differ from version 1's."""
    out = []
    for i in range(n):
        record = prediction(model, i, "mean" if i >= SWITCH else None)
        record["model_version"] = "1" if i < SWITCH else "2"
        out.append(
            SourceMessage(topics.PREDICTIONS, 0, i, model.encode(), CODEC.encode("PredictionEvent", record))
        )
    return out


def version_reference(model: str, version: str, shift: float, seed: int):  # noqa: ANN201
    g = np.random.default_rng(seed)
    score = g.random(5000)
    # with the model's outputs, so that they are tested too rather than reported as new
    return build_profile(
        {"x": g.normal(shift, 1.0, 5000), "heavy": g.lognormal(0.0, 1.0, 5000),
         "plan": g.choice(["basic", "pro", "team"], 5000, p=[0.5, 0.3, 0.2]),
         "score": score, "label": np.where(score >= 0.5, "yes", "no")},
        model_id=model, version=version, prediction_score="score", prediction_label="label",
    )  # fmt: skip


def run_with(batches: list[list[SourceMessage]], book, restart_between: bool = False) -> list:  # noqa: ANN001
    """``run`` with a reference book, as the worker has one."""
    processor = BatchProcessor(CODEC, CONFIG)
    processor.references = book
    results = []
    for batch in batches:
        if restart_between:
            states = {
                p: PartitionState.from_bytes(s.to_bytes(), CONFIG.join_ttl_ms, CONFIG.orphan_ttl_ms)
                for p, s in processor.states.items()
            }
            processor = BatchProcessor(CODEC, CONFIG, states)
            processor.references = book
        results.append(processor.process(batch))
    return results


def book_of(*references) -> profiles.ReferenceBook:  # noqa: ANN002
    book = profiles.ReferenceBook(CODEC)
    for reference in references:
        book.put(reference, START_MS, "test")
    return book


def test_a_new_version_is_tested_against_its_own_first_events_not_the_old_reference() -> None:
    msgs = switched("sw", 9200)
    # control: the same inputs under one version are drift against version 1's reference
    same = messages("sw", 9200, "mean", SWITCH)
    assert window_events(run_with([same], book_of(version_reference("sw", "1", 0.0, 11)))), "control must drift"

    (result,) = run_with([msgs], book_of(version_reference("sw", "1", 0.0, 11)))
    assert window_events([result]) == []
    drift = result.rows["feature_drift"]
    by_version = {}
    for r in drift:
        by_version.setdefault(r["model_version"], set()).add(
            (r["reference_version"], r["reference_source"], r["first_position"], r["window_index"])
        )
    # version 1: its uploaded reference, windows from its first event; the window open at
    # the switch (events 4000..4199) is dropped, so no row covers those events ...
    assert {(v, s) for v, s, _, _ in by_version["1"]} == {("1", "uploaded")}
    assert {p for _, _, p, _ in by_version["1"]} == set(range(0, 4000, WINDOW))
    # ... version 2: its first 2,000 events, then windows after them; indices keep counting
    assert {(v, s) for v, s, _, _ in by_version["2"]} == {("2", "first_events")}
    assert {p for _, _, p, _ in by_version["2"]} == set(range(SWITCH + REFERENCE_EVENTS, 9200, WINDOW))
    assert {i for *_, i in by_version["2"]} == set(range(8, 14))
    built = {(r["reference_version"], r["uploaded_at"]) for r in result.rows["reference_profiles"] if r["uploaded_by"] == "worker"}
    assert built == {("2", START_MS + 10 * (SWITCH + REFERENCE_EVENTS - 1))}
    assert result.counters["references_rebaselined"] == 1


def test_a_new_version_uses_the_reference_uploaded_for_it() -> None:
    mine = version_reference("sw", "2", 0.6, 12)
    # uploaded last, so it is also the model's latest: version 1 keeps its own all the same
    (result,) = run_with([switched("sw", 6200)], book_of(version_reference("sw", "1", 0.0, 11), mine))
    assert window_events([result]) == []
    drift = result.rows["feature_drift"]
    assert {(r["model_version"], r["reference_version"]) for r in drift} == {("1", "1"), ("2", "2")}
    after = {r["first_position"] for r in drift if r["model_version"] == "2"}
    assert after == set(range(SWITCH, 6200, WINDOW))  # no warm-up: its reference is there
    assert {r["reference_id"] for r in drift if r["model_version"] == "2"} == {mine.reference_id}


def test_a_new_version_does_not_take_a_reference_uploaded_for_another() -> None:
    # version 1's reference only: version 2 must not inherit it, whatever the label
    (result,) = run_with([switched("sw", 6000)], book_of(version_reference("sw", "train-7", 0.0, 11)))
    drift = result.rows["feature_drift"]
    assert {(r["model_version"], r["reference_version"]) for r in drift} == {("1", "train-7")}
    assert window_events([result]) == []


@pytest.mark.parametrize("restart_between", [False, True])
@pytest.mark.parametrize("uploaded", [False, True])
def test_any_batching_and_restarts_re_baseline_at_the_same_event(restart_between: bool, uploaded: bool) -> None:
    refs = [version_reference("sw", "1", 0.0, 11)] + ([version_reference("sw", "2", 0.6, 12)] if uploaded else [])
    msgs = switched("sw", 8200)
    (whole,) = run_with([msgs], book_of(*refs))
    random_cuts = np.random.default_rng(5).choice(len(msgs), 7, replace=False).tolist()
    # cuts just before, at and after the switch, and random ones
    cuts = sorted({*random_cuts, SWITCH - 1, SWITCH, SWITCH + 1} - {0})
    batches = [msgs[a:b] for a, b in zip([0, *cuts], [*cuts, len(msgs)], strict=True)]
    split = run_with(batches, book_of(*refs), restart_between)
    for table in ("feature_drift", "data_quality", "drift_events", "reference_profiles"):
        assert rows(split, table) == rows([whole], table), table
    assert {r["model_version"] for r in rows([whole], "feature_drift")} == {"1", "2"}


@pytest.mark.e2e
def test_uploaded_reference_reaches_the_worker_and_changes_are_found(fresh_kafka, tmp_path) -> None:  # noqa: ANN001
    """Real broker, real worker process, embedded ClickHouse: a reference uploaded through the
    SDK is used, each kind of change is found in the window it lands in,
    and the unchanged window before it raises nothing."""
    import signal
    import uuid

    import pandas as pd
    from e2e_support import (
        decode_all,
        lag,
        query_store,
        read_topic,
        start_worker,
        stop_worker,
        wait_for,
        worker_env,
    )

    from driftline.admin import ensure_topics
    from driftline.client import DriftlineProducer

    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 2)
    model, change, total = "e2e-ref", 6000, 10_000

    def frame(n: int, seed: int, changed: bool) -> pd.DataFrame:
        g = np.random.default_rng(seed)
        income = g.lognormal(10.0, 0.5, n)
        if changed:
            income[g.random(n) < 0.6] = np.nan  # the feature starts arriving empty
        shares = [0.2, 0.3, 0.5] if changed else [0.5, 0.3, 0.2]
        return pd.DataFrame(
            {
                "x": g.normal(0.8 if changed else 0.0, 1.0, n),
                "income": income,
                "plan": g.choice(["basic", "pro", "team"], n, p=shares),
                "stable": g.normal(0.0, 1.0, n),
            }
        )

    with DriftlineProducer(bootstrap) as producer:
        # Published before the worker starts, so the worker has it before the first batch
        # (pickup by a worker already running: test_a_reference_record_from_the_topic_...
        # here, and tests/core/test_reference.py on the real topic).
        reference_id = producer.set_reference(model, frame(20_000, 1, False), version="train-1")
        start = 1_790_000_000_000
        before, after = frame(change, 2, False), frame(total - change, 3, True)
        for part, offset in ((before, 0), (after, change)):
            producer.log_predictions(
                model, part, event_time=start + 10 * (offset + np.arange(len(part)))
            )
        assert producer.flush(60) == 0
    app_id = f"worker-{uuid.uuid4().hex[:8]}"
    env = worker_env(bootstrap, tmp_path / "data", app_id)
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        wait_for(lambda: lag(bootstrap, app_id) == 0, 240, "the worker to catch up", worker, log)
    finally:
        assert stop_worker(worker) in (0, -signal.SIGTERM), log.read_text()[-3000:]

    drifts = [d for d in decode_all(read_topic(bootstrap, topics.DRIFT)) if d["detector"] != "ADWIN"]
    found = {(d["stream_name"], d["detector"]) for d in drifts}
    assert {d["evidence"]["reference_id"] for d in drifts} == {reference_id}
    assert {d["position"] for d in drifts} == {9999}  # the window [5000, 10000) it lands in
    assert any(name == "x" and test in ("ks", "chisquare") for name, test in found)
    assert ("plan", "chisquare") in found
    assert ("income", "missing_rate") in found
    assert not {name for name, _ in found} & {"stable"}
    rows = query_store(
        tmp_path / "data",
        {
            "windows": "SELECT window_index, max(drifted) FROM feature_drift FINAL "
            "GROUP BY window_index ORDER BY window_index",
            "versions": "SELECT DISTINCT reference_version FROM feature_drift FINAL",
            "quality": "SELECT feature, test FROM data_quality FINAL WHERE drifted = 1",
        },
    )
    assert rows["windows"] == [[0, 0], [1, 1]]
    assert rows["versions"] == [["train-1"]]
    assert ["income", "missing_rate"] in rows["quality"]
