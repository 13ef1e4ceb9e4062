"""The worker's data-drift stage through BatchProcessor, on real codec bytes: windows against the
model's first events, each kind of change found, nothing on unchanged traffic, and the same
rows and drift events whatever the batching and across restarts (checkpoint round trips)."""

from __future__ import annotations

import signal
import uuid

import numpy as np
import pandas as pd
import pytest
from driftline.detectors.monitor import MonitorConfig
from driftline.detectors.reference import build_profile
from driftline.schemas import Codec, event_id, topics
from driftline.sinks.tables import columns_for
from driftline.streams import profiles
from driftline.streams.processor import BatchProcessor, ProcessorConfig, SourceMessage
from driftline.streams.state import ModelState, PartitionState
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

CODEC = Codec()
WINDOW = 500
REFERENCE_EVENTS = 2000
CONFIG = ProcessorConfig(
    profiles=MonitorConfig(
        window_size=WINDOW, auto_reference_events=REFERENCE_EVENTS, max_segments=8
    )
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


SEGMENT_SHIFT = 6000  # from this event on, region=eu's x is 0.6 sd higher; region=us's is not


def segmented(model: str, n: int, extra: dict | None = None, version_at: int | None = None) -> list[SourceMessage]:
    """Events in two regions (about half each) and two channels; only region=eu changes, at
    SEGMENT_SHIFT. ``extra`` maps a segment key to a function of the event's index; from
    event ``version_at`` on, the model version is "2"."""
    out = []
    for i in range(n):
        g = np.random.default_rng([9, i])
        region = "eu" if g.random() < 0.5 else "us"
        record = prediction(model, i, "mean" if region == "eu" and i >= SEGMENT_SHIFT else None)
        record["segments"] = {"region": region, "channel": "web" if g.random() < 0.6 else "app"}
        if version_at is not None and i >= version_at:
            record["model_version"] = "2"
        for key, value in (extra or {}).items():
            if value(i) is not None:  # None: the event does not carry the key
                record["segments"][key] = value(i)
        out.append(
            SourceMessage(topics.PREDICTIONS, 0, i, model.encode(), CODEC.encode("PredictionEvent", record))
        )
    return out


def by_segment(results, table: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows(results, table):
        out.setdefault(row.get("segment", row.get("evidence", {}).get("segment", "")), []).append(row)
    return out


def test_a_shift_in_one_segment_is_found_in_its_windows_and_names_it() -> None:
    (result,) = run([segmented("seg", 10_000)])
    drift = by_segment([result], "feature_drift")
    assert set(drift) == {"", "region=eu", "region=us", "channel=web", "channel=app"}
    events = window_events([result])
    segments = {e["evidence"].get("segment", "") for e in events}
    assert "region=eu" in segments
    # the stationary region raises nothing (channel windows hold eu events too, so they may)
    assert "region=us" not in segments
    assert [r for r in drift["region=us"] if r["drifted"] and r["test"] in ("ks", "chisquare")] == []
    eu = [e for e in events if e["evidence"].get("segment") == "region=eu"]
    assert {e["stream_name"] for e in eu} <= {"x", "multivariate"} and any(e["stream_name"] == "x" for e in eu)
    # the segment's windows test it against its own first events, and count its own events
    eu_rows = drift["region=eu"]
    assert {r["reference_source"] for r in eu_rows} == {"first_events"}
    assert {r["reference_id"] for r in eu_rows}.isdisjoint({r["reference_id"] for r in drift[""]})
    assert {r["first_position"] for r in eu_rows} == set(range(REFERENCE_EVENTS, max(r["last_position"] for r in eu_rows), WINDOW))
    built = [r for r in result.rows["reference_profiles"] if r["segment"] == "region=eu"]
    assert {r["reference_id"] for r in built} == {eu_rows[0]["reference_id"]}
    # its drift events name the segment, and their ids differ from any all-traffic window's
    assert all(e["event_id"] != event_id("drift", "seg", e["stream_kind"], e["stream_name"], e["detector"], str(e["position"])) for e in eu)
    assert len({e["event_id"] for e in events}) == len(events)
    # the rows are what the ClickHouse tables take
    assert columns_for("feature_drift", eu_rows)["segment"][0] == "region=eu"


def test_every_window_of_a_model_with_segments_spreads_the_budget_over_them() -> None:
    from driftline.detectors.budget import per_test_alpha, window_budget

    config = CONFIG.profiles
    (result,) = run([segmented("budget", 7000)])
    alphas = {(r["segment"], r["threshold"]) for r in result.rows["feature_drift"] if r["test"] == "ks"}
    # 2 keys (region, channel), 4 values: every event is in 3 windows, each window can
    # also close on time; per window 5 tests of x, heavy and score, 4 of plan and label, PCA
    tests = 5 * 3 + 4 * 2 + 1
    expected = per_test_alpha(window_budget(config.budget), config.windows_per_day(2, 4), tests)
    assert {a for _, a in alphas} == {expected}
    assert {s for s, _ in alphas} == {"", "region=eu", "region=us", "channel=web", "channel=app"}
    # the same events without segments: one window per event, a larger alpha
    (alone,) = run([messages("budget", 3000)])
    assert {r["threshold"] for r in alone.rows["feature_drift"] if r["test"] == "ks"} == {
        per_test_alpha(window_budget(config.budget), config.windows_per_day(), tests)
    }
    assert config.windows_per_day(2, 4) == 3 * config.events_per_day / WINDOW + 5 * 1.0


def test_segment_values_over_the_bound_are_counted_not_tested() -> None:
    bounded = ProcessorConfig(profiles=MonitorConfig(window_size=WINDOW, auto_reference_events=REFERENCE_EVENTS, max_segments=3))
    # a high-cardinality key: a new user every 10 events, whose first value comes first
    msgs = segmented("many", 3000, {"user": lambda i: f"u{i // 10}"})
    processor = BatchProcessor(CODEC, bounded)
    result = processor.process(msgs)
    state = processor.states[0].models["many"]
    # event 0 carries a channel, a region and a user: those three values, by key name
    first = [f"{k}={v}" for k, v in sorted(CODEC.decode(msgs[0].value)[1]["segments"].items())]
    assert [name.split("=")[0] for name in first] == ["channel", "region", "user"]
    assert list(state.segment_profiles) == first
    tested = sum(m.seq for m in state.segment_profiles.values())
    # every (event, key) pair is in a tested window or counted
    assert tested + result.counters["segment_events_untested"] == 3 * 3000
    off = ProcessorConfig(profiles=MonitorConfig(window_size=WINDOW, auto_reference_events=REFERENCE_EVENTS, max_segments=0))
    processor = BatchProcessor(CODEC, off)
    assert processor.process(msgs[:500]).counters["segment_events_untested"] == 3 * 500
    assert processor.states[0].models["many"].segment_profiles == {}


def test_keys_holding_an_equals_sign_are_never_undercounted() -> None:
    state = ModelState("eq", CONFIG.specs)
    for name in ("region=eu", "region=us", "a=b=x", "a=c=y"):  # keys "a=b" and "a=c", or "a"
        state.segment_profiles[name] = None  # type: ignore[assignment]
    # an ambiguous name counts as a key of its own: 3 keys, not 2, for the budget
    assert profiles._segment_load(state) == (3, 4)


@pytest.mark.parametrize("restart_between", [False, True])
def test_any_batching_and_restarts_give_the_same_segment_windows(restart_between: bool) -> None:
    # a key that appears mid-stream: its values' admission changes every window's alpha there
    late = {"tier": lambda i: None if i < 4321 else "gold" if i % 7 == 0 else "free"}
    msgs = segmented("sb", 8000, late)
    (whole,) = run([msgs])
    cuts = sorted(np.random.default_rng(6).choice(len(msgs), 9, replace=False).tolist())
    split = run([msgs[a:b] for a, b in zip([0, *cuts], [*cuts, len(msgs)], strict=True)], restart_between)
    for table in ("feature_drift", "data_quality", "drift_events", "reference_profiles"):
        assert by_segment(split, table) == by_segment([whole], table), table
    # all traffic and five of the six segment values: tier=gold (1 event in 7) is still
    # collecting its first events, which the checkpoints carry across the restarts
    drift = by_segment([whole], "feature_drift")
    assert set(drift) == {"", "region=eu", "region=us", "channel=web", "channel=app", "tier=free"}
    alphas = [r["threshold"] for r in drift[""] if r["test"] == "ks"]
    assert alphas[0] > alphas[-1], "the late key must shrink alpha mid-stream"
    assert any(e["evidence"].get("segment") == "region=eu" for e in window_events([whole]))


@pytest.mark.e2e
def test_uploaded_reference_reaches_the_worker_and_changes_are_found(fresh_kafka, tmp_path) -> None:  # noqa: ANN001
    """Real broker, real worker process, embedded ClickHouse: a reference uploaded through the
    SDK is used, each kind of change is found in the window it lands in,
    and the unchanged window before it raises nothing."""
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


@pytest.mark.parametrize("restart_between", [False, True])
def test_segment_windows_re_baseline_with_a_new_version_whatever_the_batching(restart_between: bool) -> None:
    switch = 5200  # region=eu has about 2,600 events by then: its reference and one window
    msgs = segmented("sv", 11_000, version_at=switch)
    (whole,) = run([msgs])
    cuts = sorted({*np.random.default_rng(8).choice(len(msgs), 6, replace=False).tolist(), switch, switch + 1})
    split = run([msgs[a:b] for a, b in zip([0, *cuts], [*cuts, len(msgs)], strict=True)], restart_between)
    for table in ("feature_drift", "data_quality", "drift_events", "reference_profiles"):
        assert by_segment(split, table) == by_segment([whole], table), table
    # each segment starts over at the switch: version 2's own first events of the segment
    eu = by_segment([whole], "feature_drift")["region=eu"]
    assert {(r["model_version"], r["reference_version"]) for r in eu} == {("1", ""), ("2", "2")}
    built = {r["reference_version"] for r in whole.rows["reference_profiles"] if r["segment"] == "region=eu"}
    assert built == {"", "2"}


@pytest.mark.e2e
def test_a_shift_in_one_segment_is_found_through_the_worker(fresh_kafka, tmp_path) -> None:  # noqa: ANN001
    """Real broker, real worker process, embedded ClickHouse: events in two regions, the
    mean of x shifts in region=eu only. The shift is found in region=eu's own windows (tested
    against its own first events) and the drift events, rows and ClickHouse columns name the
    segment; the stationary region=us raises nothing."""
    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 2)
    model, total, shift_at = "e2e-seg", 8000, 5000
    g = np.random.default_rng(21)
    region = np.where(np.arange(total) % 2 == 0, "eu", "us")  # eu's n-th event is event 2n
    x = g.normal(0.0, 1.0, total)
    x[(region == "eu") & (np.arange(total) >= shift_at)] += 0.8
    frame = pd.DataFrame({"x": x, "stable": g.normal(0.0, 1.0, total)})
    with DriftlineProducer(bootstrap) as producer:
        producer.log_predictions(
            model, frame, event_time=START_MS + 10 * np.arange(total), segments={"region": region}
        )
        assert producer.flush(60) == 0
    app_id = f"worker-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        bootstrap, tmp_path / "data", app_id,
        DRIFTLINE_MONITOR_WINDOW_SIZE="500", DRIFTLINE_MONITOR_AUTO_REFERENCE_EVENTS="1000",
        DRIFTLINE_MONITOR_MAX_SEGMENTS="8",
    )  # fmt: skip
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        wait_for(lambda: lag(bootstrap, app_id) == 0, 240, "the worker to catch up", worker, log)
    finally:
        assert stop_worker(worker) in (0, -signal.SIGTERM), log.read_text()[-3000:]

    drifts = [d for d in decode_all(read_topic(bootstrap, topics.DRIFT)) if d["detector"] != "ADWIN"]
    eu = [d for d in drifts if d["evidence"].get("segment") == "region=eu"]
    assert not [d for d in drifts if d["evidence"].get("segment") == "region=us"]
    assert eu and {d["stream_name"] for d in eu} <= {"x", "multivariate"}
    # eu's windows: its events 1000.. (after its first-events reference), 500 each; the shift
    # starts at its event 2500, so the window [2500, 3000) of its own events finds it
    assert min(d["position"] for d in eu if d["stream_name"] == "x") == 2999
    assert not {d["stream_name"] for d in drifts} & {"stable"}
    rows = query_store(
        tmp_path / "data",
        {
            "segments": "SELECT segment, count(), max(drifted) FROM feature_drift FINAL "
            "WHERE feature = 'x' AND test = 'ks' GROUP BY segment ORDER BY segment",
            "events": "SELECT DISTINCT segment FROM drift_events FINAL "
            "WHERE detector != 'ADWIN' ORDER BY segment",
            "references": "SELECT DISTINCT segment FROM reference_profiles FINAL ORDER BY segment",
        },
    )
    # all traffic (8000 events) and each region (4000): windows after 1000 reference events
    assert rows["segments"] == [["", 14, rows["segments"][0][2]], ["region=eu", 6, 1], ["region=us", 6, 0]]
    assert ["region=eu"] in rows["events"] and ["region=us"] not in rows["events"]
    assert rows["references"] == [[""], ["region=eu"], ["region=us"]]
