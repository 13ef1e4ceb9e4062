"""Model versions in the worker's batch logic (streams/versions.py): re-baselining per version,
post-deploy verdicts, the published-version book. Real codec bytes, state in memory (a restart
is a checkpoint round trip); the end-to-end test runs the same in the worker on a real broker."""

from __future__ import annotations

import numpy as np
import pytest
from driftline.schemas import Codec, topics
from driftline.schemas.model_versions import make_published
from driftline.streams.alerting import AlertEvaluator
from driftline.streams.kv import MemoryKV
from driftline.streams.processor import BatchProcessor, ProcessorConfig, SourceMessage
from driftline.streams.rulebook import RuleBook
from driftline.streams.state import PartitionState
from driftline.streams.versions import (
    VerdictConfig,
    VersionBook,
    ranks_within,
    two_proportion_z,
    version_groups,
    welch_t,
)
from scipy import stats

from .alerting_support import put_rule

CODEC = Codec()
MODEL = "fraud"


def traffic(
    plan: list[tuple[str, int, float]],
    *,
    seed: int = 7,
    regression: bool = False,
    canary: tuple[str, float] | None = None,
) -> list[SourceMessage]:
    """Predictions by ``plan`` (version, count, accuracy or error scale), each labelled right
    after it. ``canary``: (version, share) of the *last* plan step's traffic served by another
    version (at its own plan quality, or the step's if it has none)."""
    rng = np.random.default_rng(seed)
    out: list[SourceMessage] = []
    t = 1_700_000_000_000
    offsets = {topics.PREDICTIONS: 0, topics.OUTCOMES: 0}
    quality = {version: q for version, _, q in plan}
    for step, (version, count, q) in enumerate(plan):
        for _ in range(count):
            v = version
            if canary is not None and step == len(plan) - 1 and rng.random() < canary[1]:
                v = canary[0]
            t += 10
            ident = f"p-{len(out)}"
            prediction = {
                "event_id": ident, "model_id": MODEL, "model_version": v, "event_time": t,
                "numeric_features": {"x": float(rng.normal())}, "categorical_features": {},
                "segments": {}, "prediction_label": None, "prediction_score": None,
                "prediction_value": None, "probabilities": None,
            }  # fmt: skip
            outcome = {"event_id": f"o-{ident}", "prediction_id": ident, "model_id": MODEL,
                       "event_time": t + 5, "label": None, "value": None}  # fmt: skip
            if regression:
                prediction["prediction_value"] = 0.0
                outcome["value"] = float(abs(rng.normal(0, quality.get(v, q))))
            else:
                right = rng.random() < quality.get(v, q)
                prediction["prediction_label"] = "yes"
                outcome["label"] = "yes" if right else "no"
            for topic, name, record in (
                (topics.PREDICTIONS, "PredictionEvent", prediction),
                (topics.OUTCOMES, "OutcomeEvent", outcome),
            ):
                out.append(SourceMessage(topic, 0, offsets[topic], MODEL.encode(),
                                         CODEC.encode(name, record)))  # fmt: skip
                offsets[topic] += 1
    return out


def chunks(messages: list[SourceMessage], size: int) -> list[list[SourceMessage]]:
    return [messages[i : i + size] for i in range(0, len(messages), size)]


CONFIG = ProcessorConfig(profiles=None, verdicts=VerdictConfig(min_labels=300, alpha=0.01))


def run(batches: list[list[SourceMessage]], restart_every: int = 0, book: VersionBook | None = None):
    processor = BatchProcessor(CODEC, CONFIG)
    processor.versions = book
    results = []
    for i, batch in enumerate(batches):
        if restart_every and i and i % restart_every == 0:
            states = {
                p: PartitionState.from_bytes(s.to_bytes(), CONFIG.join_ttl_ms, CONFIG.orphan_ttl_ms)
                for p, s in processor.states.items()
            }
            processor = BatchProcessor(CODEC, CONFIG, states)
            processor.versions = book
        results.append(processor.process(batch))
    return processor, results


def records(results, name: str) -> list[dict]:
    return [rec for r in results for _, n, rec in r.records if n == name]


def decisions(results) -> tuple[list, list, list]:
    drifts = [(d["event_id"], d["model_version"], d["position"]) for r in results
              for d in r.drift_events]  # fmt: skip
    return drifts, records(results, "ModelVerdict"), records(results, "RollbackRecommended")


# -- verdicts ---------------------------------------------------------------------------------
def test_a_worse_version_gets_a_worse_verdict_and_a_rollback_naming_the_previous_version():
    messages = traffic([("1", 1500, 0.92), ("2", 800, 0.70)])
    _, results = run(chunks(messages, 500))
    (verdict,) = records(results, "ModelVerdict")
    assert (verdict["version"], verdict["previous_version"]) == ("2", "1")
    assert verdict["verdict"] == "WORSE"
    assert verdict["metric"] == "accuracy" and verdict["test"] == "two_proportion_z"
    assert verdict["n_labels"] == 300 and verdict["n_previous"] == 300
    assert verdict["value"] < verdict["previous_value"] and verdict["p_value"] < 0.01
    (rollback,) = records(results, "RollbackRecommended")
    assert (rollback["from_version"], rollback["to_version"]) == ("2", "1")
    assert rollback["verdict_event_id"] == verdict["event_id"]
    (row,) = [row for r in results for row in r.rows["model_verdicts"]]
    assert row["rollback_to"] == "1" and row["verdict"] == "WORSE"


def test_a_better_version_gets_better_and_no_rollback():
    _, results = run(chunks(traffic([("1", 1500, 0.70), ("2", 800, 0.93)]), 500))
    (verdict,) = records(results, "ModelVerdict")
    assert verdict["verdict"] == "BETTER"
    assert not records(results, "RollbackRecommended")


def test_an_equal_version_is_inconclusive():
    _, results = run(chunks(traffic([("1", 1500, 0.85), ("2", 800, 0.85)], seed=3), 500))
    (verdict,) = records(results, "ModelVerdict")
    assert verdict["verdict"] == "INCONCLUSIVE" and verdict["p_value"] >= 0.01


def test_regression_versions_are_compared_on_absolute_error_with_welch():
    _, results = run(chunks(traffic([("1", 1500, 1.0), ("2", 800, 3.0)], regression=True), 500))
    (verdict,) = records(results, "ModelVerdict")
    assert verdict["metric"] == "mean_absolute_error" and verdict["test"] == "welch_t"
    assert verdict["verdict"] == "WORSE" and verdict["statistic"] > 0
    assert "degrees_of_freedom" in verdict["evidence"]


def test_no_verdict_before_enough_labels_nor_for_the_first_version():
    _, results = run(chunks(traffic([("1", 1500, 0.9), ("2", 299, 0.5)]), 500))
    assert not records(results, "ModelVerdict")


# -- a verdict as an alert signal -------------------------------------------------------------
def verdict_book(outcome: str = "WORSE") -> RuleBook:
    book = RuleBook()
    put_rule(book, "verdict", name="VersionWorse", models=[MODEL], severity="critical",
             signal={"kind": "verdict"}, condition={"type": "verdict_is", "outcome": outcome})  # fmt: skip
    return book


def alerts_of(results, book: RuleBook) -> list[dict]:
    """The worker's evaluation of each batch's result, as streams/source.py runs it."""
    evaluator, kv, out = AlertEvaluator(book), MemoryKV(), []
    for result in results:
        for alert in evaluator.evaluate(result, kv, {MODEL: 0}).alerts:
            CODEC.encode("AlertEvent", alert)  # raises if a record breaks the schema
            out.append(alert)
    return out


def test_a_worse_verdict_fires_the_verdict_rule_and_a_better_one_does_not():
    _, results = run(chunks(traffic([("1", 1500, 0.92), ("2", 800, 0.70)]), 500))
    (verdict,) = records(results, "ModelVerdict")
    (alert,) = alerts_of(results, verdict_book())
    assert alert["status"] == "FIRING" and alert["notify"] == []
    assert alert["trigger_event_ids"] == [verdict["event_id"]]
    assert alert["updated_at"] == verdict["decided_at"]
    assert alert["value"] == verdict["value"]
    notes = alert["annotations"]
    assert (notes["version"], notes["previous_version"], notes["rollback_to"]) == ("2", "1", "1")
    assert notes["model_version"] == "2" and "WORSE than version 1" in notes["description"]

    _, better = run(chunks(traffic([("1", 1500, 0.70), ("2", 800, 0.93)]), 500))
    assert records(better, "ModelVerdict")[0]["verdict"] == "BETTER"
    assert alerts_of(better, verdict_book()) == []
    (fired,) = alerts_of(better, verdict_book("BETTER"))  # a rule may wait for any outcome
    assert fired["status"] == "FIRING"


def test_a_later_verdict_of_another_outcome_resolves_it_the_same_in_the_dry_run():
    plan = [("1", 1500, 0.92), ("2", 800, 0.70), ("3", 800, 0.93)]
    messages = traffic(plan)
    _, results = run(chunks(messages, 500))
    worse, better = records(results, "ModelVerdict")
    assert (worse["verdict"], better["verdict"]) == ("WORSE", "BETTER")
    live = alerts_of(results, verdict_book())
    assert [(a["status"], a["updated_at"]) for a in live] == [
        ("FIRING", worse["decided_at"]), ("RESOLVED", better["decided_at"])
    ]  # fmt: skip
    # the API's dry-run replays the stored model_verdicts rows through the same lifecycle
    rows = [row for r in results for row in r.rows["model_verdicts"]]
    replayed = AlertEvaluator(verdict_book()).replay(verdicts=rows).alerts
    assert [a["event_id"] for a in replayed] == [a["event_id"] for a in live]
    for size, restart_every in ((97, 0), (333, 2)):
        batched = alerts_of(run(chunks(messages, size), restart_every)[1], verdict_book())
        assert [a["event_id"] for a in batched] == [a["event_id"] for a in live]


# -- determinism ------------------------------------------------------------------------------
@pytest.mark.parametrize("canary", [None, ("3", 0.3)])
def test_decisions_do_not_depend_on_batching_or_restarts(canary):
    plan = [("1", 3000, 0.95), ("2", 2500, 0.60)]
    messages = traffic(plan, canary=canary)
    whole = decisions(run([messages])[1])
    assert whole[1], "the plan yields a verdict"
    for size, restart_every in ((1, 0), (97, 0), (333, 3), (1000, 1)):
        batches = chunks(messages, size)
        assert decisions(run(batches, restart_every)[1]) == whole, (size, restart_every)


# -- re-baselining ----------------------------------------------------------------------------
def test_a_new_version_starts_with_fresh_error_detectors():
    processor, results = run(chunks(traffic([("1", 3000, 0.95), ("2", 3000, 0.60)]), 700))
    state = processor.states[0].models[MODEL]
    errors = state.streams["ERROR"]
    assert set(errors) == {"error@1", "error@2"}
    assert state.counts["ERROR"][errors["error@2"]] == 3000
    drifts = [d for r in results for d in r.drift_events if d["stream_kind"] == "ERROR"]
    # version 2 is worse from its first prediction on: a detector of its own has nothing to
    # compare against, so no drift; one carried over from version 1 would fire on the change
    assert not [d for d in drifts if d["model_version"] == "2"]
    assert {d["stream_name"] for d in drifts} <= {"error"}
    assert state.versions.versions["2"].previous == "1"


def test_versions_served_side_by_side_are_monitored_separately():
    processor, results = run(chunks(traffic([("1", 2000, 0.9), ("1", 3000, 0.9)],
                                            canary=("2", 0.5)), 400))  # fmt: skip
    state = processor.states[0].models[MODEL]
    rows = {r["version"]: r for res in results for r in res.rows["model_versions"]}
    assert set(rows) == {"1", "2"} and rows["2"]["previous_version"] == "1"
    n2 = state.versions.versions["2"].n_labels
    assert 1300 < n2 < 1700
    assert state.counts["ERROR"][state.streams["ERROR"]["error@2"]] == n2


def test_serving_rows_carry_first_and_last_seen():
    _, results = run([traffic([("1", 10, 0.9), ("2", 10, 0.9)])])
    rows = {r["version"]: r for r in results[0].rows["model_versions"]}
    assert rows["1"]["first_seen"] < rows["1"]["last_seen"] < rows["2"]["first_seen"]
    assert rows["1"]["previous_version"] is None and rows["2"]["previous_version"] == "1"


# -- the published versions -------------------------------------------------------------------
def published(version: str = "2", **kwargs) -> dict:
    return make_published(MODEL, version, published_at=1_700_000_000_000,
                          artifact_uri=f"file:///m/{version}.pkl", **kwargs)  # fmt: skip


def test_book_takes_a_version_once_and_dead_letters_a_changed_republication():
    book = VersionBook(CODEC)
    first = published(metrics={"accuracy": 0.9})
    key = topics.model_key(MODEL, "2")
    book.on_record(key, CODEC.encode("ModelPublished", first), 0, 0)
    again = {**first, "published_at": 1_800_000_000_000, "publisher": "someone"}
    book.on_record(key, CODEC.encode("ModelPublished", again), 0, 1)
    changed = published(metrics={"accuracy": 0.5})
    book.on_record(key, CODEC.encode("ModelPublished", changed), 0, 2)
    book.on_record(key, b"\x00garbage", 0, 3)
    assert book.get(MODEL, "2")["metrics"] == {"accuracy": 0.9}
    processor = BatchProcessor(CODEC, CONFIG)
    processor.versions = book
    result = processor.process([])
    (row,) = result.rows["model_versions"]
    assert row["published"] == 1 and row["published_event_id"] == first["event_id"]
    letters = [(d.reason, d.source.topic, d.source.offset) for d in result.dead_letters]
    assert letters == [
        (topics.VERSION_CONFLICT, topics.MODELS, 2),
        (topics.UNKNOWN_SCHEMA_ID, topics.MODELS, 3),
    ]
    assert not processor.process([]).rows.get("model_versions")  # handed out once


def test_a_verdict_names_the_published_record_it_judged():
    book = VersionBook(CODEC)
    record = published()
    book.add(record)
    _, results = run(chunks(traffic([("1", 1500, 0.9), ("2", 800, 0.6)]), 500), book=book)
    (verdict,) = records(results, "ModelVerdict")
    assert verdict["published_event_id"] == record["event_id"]
    assert CODEC.decode(CODEC.encode("ModelVerdict", verdict))[1]["verdict"] == "WORSE"


# -- the helpers ------------------------------------------------------------------------------
def test_two_proportion_z_matches_scipys_chi_square_without_correction():
    rng = np.random.default_rng(1)
    new, old = (rng.random(400) < 0.8).astype(float), (rng.random(350) < 0.72).astype(float)
    z, p = two_proportion_z(new, old)
    table = [[new.sum(), len(new) - new.sum()], [old.sum(), len(old) - old.sum()]]
    chi2, p_chi2, _, _ = stats.chi2_contingency(table, correction=False)
    assert z**2 == pytest.approx(chi2) and p == pytest.approx(p_chi2)
    assert z > 0


def test_welch_t_handles_constant_samples():
    assert welch_t(np.zeros(5), np.zeros(5))[:2] == (0.0, 1.0)
    t, p, _ = welch_t(np.ones(5), np.zeros(5))
    assert t == np.inf and p == 0.0


def test_group_and_rank_helpers():
    keys, groups = version_groups(np.array(["b", "a", "b", "c"], dtype=object))
    assert keys == ["b", "a", "c"] and groups.tolist() == [0, 1, 0, 2]
    assert ranks_within(np.array([2, 2, 0, 2, 0])).tolist() == [0, 1, 0, 2, 1]
