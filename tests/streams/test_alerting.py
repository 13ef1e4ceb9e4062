"""Rule evaluation and the alert lifecycle, on in-memory rule books and tables (fast).

The control plane's records are written with the API's own models and encoder
(alerting_support), the worker's side is the real RuleBook, evaluator and processor.
"""

from __future__ import annotations

import signal

import pytest
from driftline.schemas import Codec
from driftline.schemas.ids import event_id
from driftline.streams.alerting import (
    FIRING,
    PENDING,
    RESOLVED,
    AlertEvaluator,
    AlertState,
    deliverable,
    fingerprint,
    model_partitions,
)
from driftline.streams.kv import MemoryKV
from driftline.streams.processor import BatchProcessor, ProcessorConfig
from driftline.streams.rulebook import RuleBook

from driftline.synthetic import SyntheticStream

from .alerting_support import (
    MIN,
    T0,
    batch,
    drift,
    joined,
    put_ack,
    put_rule,
    put_silence,
)

CODEC = Codec()


class Harness:
    """One model's evaluator over a MemoryKV, checking every record against the contract."""

    def __init__(self, book: RuleBook, **kwargs) -> None:
        self.book = book
        self.kv = MemoryKV()
        self.evaluator = AlertEvaluator(book, **kwargs)
        self.alerts: list[dict] = []
        self.retraining: list[dict] = []

    def run(self, result, partitions=None):
        outcome = self.evaluator.evaluate(result, self.kv, partitions or {"m": 0, "m2": 1})
        for alert in outcome.alerts:
            CODEC.encode("AlertEvent", alert)  # raises if a record breaks the schema
        for request in outcome.retraining:
            CODEC.encode("RetrainingRequested", request)
        assert outcome.rows["alerts"] == [_row(a) for a in outcome.alerts]
        assert outcome.rows.get("retraining_requests", []) == outcome.retraining
        self.alerts += outcome.alerts
        self.retraining += outcome.retraining
        return outcome.alerts

    def state(self, model: str = "m") -> AlertState:
        return AlertState.from_bytes(self.kv.get(model.encode()))


def _row(alert: dict) -> dict:
    from driftline.streams.alerting import alert_row

    return alert_row(alert)


def statuses(alerts: list[dict]) -> list[tuple[str, int]]:
    return [(a["status"], a["updated_at"]) for a in alerts]


# -- drift rules: firing, pending, resolving ---------------------------------------------------


def test_for_zero_fires_at_once_with_deterministic_ids() -> None:
    book = RuleBook()
    put_rule(book, "r1", notify=["ops"], labels={"team": "ml"}, annotations={"summary": "x"})
    h = Harness(book)
    (alert,) = h.run(batch(drift(1, T0)))
    fp = fingerprint("r1", "m", {"model_id": "m"})
    assert alert["fingerprint"] == fp
    assert alert["event_id"] == event_id("alert", fp, FIRING, str(T0), str(T0))
    assert alert["status"] == FIRING and alert["starts_at"] == T0 and alert["ends_at"] is None
    assert alert["trigger_event_ids"] == ["d1"] and alert["value"] == 1.0
    assert alert["labels"] == {
        "team": "ml",
        "model_id": "m",
        "alertname": "feature drift",
        "rule_id": "r1",
        "severity": "warning",
    }
    assert alert["annotations"]["summary"] == "x"  # the rule's own annotation wins
    assert alert["notify"] == ["ops"] and deliverable(alert)
    assert (alert["rule_version"], alert["rule_name"]) == (1, "feature drift")
    # more drift while firing sustains the alert without a new record
    assert h.run(batch(drift(2, T0 + MIN))) == []
    assert h.state().alerts[fp].triggers == ["d1", "d2"]


def test_pending_then_firing_exactly_when_for_elapses() -> None:
    book = RuleBook()
    put_rule(book, "r1", **{"for": "5m"}, notify=["ops"])
    h = Harness(book)
    (pending,) = h.run(batch(drift(1, T0)))
    assert (pending["status"], pending["notify"], deliverable(pending)) == (PENDING, [], False)
    assert h.run(batch(drift(2, T0 + 2 * MIN), clock=T0 + 4 * MIN)) == []
    # the clock passes T0+5m in a batch ending later: the record carries the deadline's time
    (firing,) = h.run(batch(clock=T0 + 7 * MIN))
    assert statuses([firing]) == [(FIRING, T0 + 5 * MIN)]
    assert firing["starts_at"] == T0 and firing["trigger_event_ids"] == ["d1", "d2"]
    assert firing["notify"] == ["ops"]


def test_pending_that_goes_quiet_resolves_without_firing() -> None:
    book = RuleBook()
    put_rule(book, "r1", **{"for": "10m", "repeat_interval": "5m"}, notify=["ops"])
    h = Harness(book)
    h.run(batch(drift(1, T0)))
    (resolved,) = h.run(batch(clock=T0 + 20 * MIN))
    assert statuses([resolved]) == [(RESOLVED, T0 + 5 * MIN)]
    assert resolved["notify"] == [] and resolved["ends_at"] == T0 + 5 * MIN


def test_quiet_period_resolves_repeat_renotifies_and_cooldown_holds_off() -> None:
    book = RuleBook()
    put_rule(book, "r1", repeat_interval="10m", cooldown="30m", notify=["ops"])
    h = Harness(book)
    h.run(batch(drift(1, T0)))
    # drift every 6 minutes keeps it firing: a repeat every 10 minutes, same fingerprint
    h.run(batch(drift(2, T0 + 6 * MIN), drift(3, T0 + 12 * MIN), drift(4, T0 + 18 * MIN)))
    h.run(batch(clock=T0 + 40 * MIN))
    assert statuses(h.alerts) == [
        (FIRING, T0),
        (FIRING, T0 + 10 * MIN),
        (FIRING, T0 + 20 * MIN),
        (RESOLVED, T0 + 28 * MIN),
    ]
    assert len({a["event_id"] for a in h.alerts}) == 4
    assert len({a["fingerprint"] for a in h.alerts}) == 1
    assert h.alerts[-1]["notify"] == ["ops"] and h.alerts[-1]["value"] == 4.0
    # inside the cooldown (28m + 30m) drift is ignored; after it a new episode starts
    h.alerts.clear()
    h.run(batch(drift(5, T0 + 50 * MIN)))
    assert h.alerts == []
    (again,) = h.run(batch(drift(6, T0 + 70 * MIN)))
    assert statuses([again]) == [(FIRING, T0 + 70 * MIN)]
    assert again["starts_at"] == T0 + 70 * MIN and again["trigger_event_ids"] == ["d6"]


def test_deadlines_between_drifts_of_one_batch_are_handled_in_time_order() -> None:
    # One batch: drift, 2 hours of nothing (resolves after 1h), drift again (a new episode).
    book = RuleBook()
    put_rule(book, "r1", repeat_interval="1h")
    h = Harness(book)
    h.run(batch(drift(2, T0 + 120 * MIN), drift(1, T0)))  # out of order in the list
    assert statuses(h.alerts) == [(FIRING, T0), (RESOLVED, T0 + 60 * MIN), (FIRING, T0 + 120 * MIN)]


# -- matching ----------------------------------------------------------------------------------


def test_models_selectors_streams_detectors_and_min_samples() -> None:
    book = RuleBook()
    put_rule(book, "exact", models=["m2"])
    put_rule(book, "glob", models=None, model_selector={"model_id": "m*"},
             signal={"kind": "drift", "stream_kind": "FEATURE", "stream_name": "ag?"})  # fmt: skip
    put_rule(book, "err", signal={"kind": "drift", "stream_kind": "ERROR", "detector": "DDM"})
    put_rule(book, "samples", min_samples=5000)
    put_rule(book, "off", enabled=False)
    h = Harness(book)
    h.run(
        batch(
            drift(1, T0, name="age"),
            drift(2, T0, name="income"),
            drift(3, T0, kind="ERROR", name="error", detector="ADWIN"),
            drift(4, T0 + 1, model="m2", name="agx"),
        )
    )
    fired = sorted((a["rule_id"], a["model_id"], a["trigger_event_ids"][0]) for a in h.alerts)
    assert fired == [("exact", "m2", "d4"), ("glob", "m", "d1"), ("glob", "m2", "d4")]
    h.alerts.clear()
    h.run(batch(drift(5, T0 + 2, kind="ERROR", detector="DDM"), drift(6, T0 + 3, position=4999)))
    assert sorted(a["rule_id"] for a in h.alerts) == ["err", "samples"]


def test_group_by_makes_one_alert_per_group() -> None:
    book = RuleBook()
    put_rule(book, "per-model")
    put_rule(book, "per-stream", group_by=["model_id", "stream_name"])
    h = Harness(book)
    h.run(batch(drift(1, T0, name="age"), drift(2, T0 + 1, name="income")))
    per_model = [a for a in h.alerts if a["rule_id"] == "per-model"]
    per_stream = [a for a in h.alerts if a["rule_id"] == "per-stream"]
    assert len(per_model) == 1 and per_model[0]["trigger_event_ids"] == ["d1"]
    assert sorted(a["labels"]["stream_name"] for a in per_stream) == ["age", "income"]
    assert len({a["fingerprint"] for a in per_stream}) == 2
    assert per_stream[0]["fingerprint"] == fingerprint(
        "per-stream", "m", {"model_id": "m", "stream_name": "age"}
    )


# -- silences, acks, inhibition ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("matchers", "silenced"),
    [
        ([{"name": "model_id", "value": "m"}], True),
        ([{"name": "model_id", "value": "m", "op": "!="}], False),
        ([{"name": "alertname", "value": "feature*", "op": "=~"}], True),
        ([{"name": "alertname", "value": "feature*", "op": "!~"}], False),
        ([{"name": "model_id", "value": "m"}, {"name": "team", "value": "ml"}], True),
        ([{"name": "model_id", "value": "m"}, {"name": "team", "value": "web"}], False),
        ([{"name": "severity", "value": "critical", "op": "!="}], True),
    ],
)
def test_silence_matchers(matchers: list[dict[str, str]], silenced: bool) -> None:
    book = RuleBook()
    put_rule(book, "r1", labels={"team": "ml"}, notify=["ops"])
    put_silence(book, "s1", matchers, T0 - MIN, T0 + MIN)
    (alert,) = Harness(book).run(batch(drift(1, T0)))
    assert alert["silenced"] is silenced
    assert alert["silence_ids"] == (["s1"] if silenced else [])
    assert deliverable(alert) is not silenced
    assert alert["notify"] == ["ops"]  # still recorded with its subscribers


def test_silence_covers_event_times_in_its_range_only() -> None:
    book = RuleBook()
    put_rule(book, "r1", repeat_interval="10m")
    put_silence(book, "s1", [{"name": "model_id", "value": "m"}], T0 + 5 * MIN, T0 + 15 * MIN)
    h = Harness(book)
    h.run(batch(drift(1, T0), drift(2, T0 + 9 * MIN), drift(3, T0 + 18 * MIN)))
    h.run(batch(clock=T0 + 40 * MIN))
    assert [(a["status"], a["silenced"]) for a in h.alerts] == [
        (FIRING, False),  # T0: before the silence
        (FIRING, True),  # repeat at T0+10m: inside it
        (FIRING, False),  # repeat at T0+20m: after it
        (RESOLVED, False),
    ]


def test_acknowledged_episode_and_a_later_episode_is_not() -> None:
    book = RuleBook()
    put_rule(book, "r1", repeat_interval="10m")
    h = Harness(book)
    (first,) = h.run(batch(drift(1, T0)))
    assert first["acknowledged"] is False
    put_ack(book, first["fingerprint"], T0 + MIN)
    h.run(batch(drift(2, T0 + 5 * MIN), clock=T0 + 12 * MIN))
    assert [(a["status"], a["acknowledged"]) for a in h.alerts[1:]] == [(FIRING, True)]
    h.run(batch(clock=T0 + 30 * MIN))
    (new,) = h.run(batch(drift(3, T0 + 40 * MIN)))
    assert h.alerts[-2]["status"] == RESOLVED and h.alerts[-2]["acknowledged"] is True
    assert new["acknowledged"] is False  # the ack was for the previous episode


def test_firing_data_quality_alert_inhibits_drift_alerts_of_its_model() -> None:
    book = RuleBook()
    put_rule(book, "dq", signal={"kind": "drift", "stream_kind": "PREDICTION"},
             labels={"alertclass": "data_quality"}, repeat_interval="10m")  # fmt: skip
    put_rule(book, "drift", models=["m", "m2"], repeat_interval="5m")
    h = Harness(book)
    h.run(batch(drift(1, T0), drift(2, T0 + 1, model="m2")))
    h.run(batch(drift(3, T0 + MIN, kind="PREDICTION", name="score")))
    h.run(batch(drift(4, T0 + 2 * MIN), clock=T0 + 30 * MIN))
    h.run(batch(drift(5, T0 + 40 * MIN)))
    dq = [a for a in h.alerts if a["rule_id"] == "dq"]
    assert statuses(dq) == [(FIRING, T0 + MIN), (RESOLVED, T0 + 11 * MIN)]
    assert all(a["inhibited_by"] is None for a in dq)  # it does not inhibit itself
    fp = dq[0]["fingerprint"]
    on_m = [a for a in h.alerts if a["rule_id"] == "drift" and a["model_id"] == "m"]
    assert [(s, t, a["inhibited_by"]) for (s, t), a in zip(statuses(on_m), on_m, strict=True)] == [
        (FIRING, T0, None),  # before the data-quality alert fired
        (FIRING, T0 + 5 * MIN, fp),  # the repeat while it fires
        (RESOLVED, T0 + 7 * MIN, fp),
        (FIRING, T0 + 40 * MIN, None),  # after it resolved
    ]
    assert not deliverable(on_m[1])
    (on_m2,) = [a for a in h.alerts if a["model_id"] == "m2"]
    assert on_m2["inhibited_by"] is None  # another model's data quality is not ours


# -- retraining actions ------------------------------------------------------------------------


def test_retrain_action_requests_once_per_cooldown_with_ids_from_the_alert() -> None:
    book = RuleBook()
    put_rule(book, "r1", repeat_interval="10m",
             actions=[{"type": "retrain", "priority": "HIGH", "lookback": "2h"}])  # fmt: skip
    h = Harness(book, retrain_cooldown_ms=60 * MIN)
    (alert,) = h.run(batch(drift(1, T0)))
    (request,) = h.retraining
    assert request == {
        "event_id": event_id("retraining", "m", alert["event_id"], "0"),
        "model_id": "m",
        "model_version": "1",
        "requested_at": T0,
        "reason": "alert 'feature drift' (rule r1) firing: 1 matching drift event(s)",
        "trigger_event_ids": [alert["event_id"]],
        "window_start": T0 - 120 * MIN,
        "window_end": T0,
        "priority": "HIGH",
        "policy": "rule:r1",
    }
    # resolves at T0+10m; fires again at T0+30m, inside the hour: no second request
    h.run(batch(drift(2, T0 + 30 * MIN)))
    assert len(h.retraining) == 1
    h.run(batch(drift(3, T0 + 50 * MIN), clock=T0 + 70 * MIN))
    h.run(batch(drift(4, T0 + 95 * MIN)))
    assert [r["requested_at"] for r in h.retraining] == [T0, T0 + 95 * MIN]
    # repeats never ask again
    assert [a["status"] for a in h.alerts].count(FIRING) == 4


# -- rule changes --------------------------------------------------------------------------------


def test_rule_change_applies_without_restart_and_deletion_resolves() -> None:
    book = RuleBook()
    put_rule(book, "r1", **{"for": "1h"}, notify=["ops"])
    h = Harness(book)
    (pending,) = h.run(batch(drift(1, T0)))
    assert pending["status"] == PENDING and pending["rule_version"] == 1
    put_rule(book, "r1", version=2, **{"for": "0s"}, severity="critical", notify=["ops"])
    # the next evaluation sees version 2: "for" is over at once, the record says critical
    (firing,) = h.run(batch(clock=T0 + MIN))
    assert (firing["status"], firing["updated_at"]) == (FIRING, T0)
    assert (firing["rule_version"], firing["severity"]) == (2, "critical")
    assert book.apply(b"rule:r1", None)
    (resolved,) = h.run(batch(clock=T0 + 2 * MIN))
    assert (resolved["status"], resolved["updated_at"]) == (RESOLVED, T0 + 2 * MIN)
    assert resolved["notify"] == ["ops"] and resolved["rule_version"] == 2
    assert h.state().alerts == {}
    assert h.run(batch(drift(2, T0 + 3 * MIN))) == []


# -- metric rules ------------------------------------------------------------------------------


def test_error_rate_threshold_pending_firing_resolved_with_min_samples() -> None:
    book = RuleBook()
    put_rule(book, "err", signal={"kind": "metric", "metric": "error_rate", "window": "1m"},
             condition={"type": "threshold", "op": ">", "value": 0.3}, min_samples=20,
             **{"for": "30s"}, notify=["ops"])  # fmt: skip
    h = Harness(book)
    sec = 1000
    t0 = T0 // MIN * MIN  # ticks are multiples of window/20 = 3 s: start on one
    # 10 minutes, one labelled prediction a second: right until 3m, 50% wrong until 6m
    rows = [joined(i, t0 + i * sec, correct=not (180 <= i < 360 and i % 2)) for i in range(600)]
    # a burst of errors with too few samples (10 in a minute) must not fire
    few = [joined(1000 + i, t0 - 5 * MIN + i * 6 * sec, correct=False) for i in range(10)]
    for chunk in (few, rows[:100], rows[100:350], rows[350:]):
        h.run(batch(joined=chunk))
    # window [t-60s, t): 19 of 60 wrong at 219 s (0.317 > 0.3), 18 of 60 at 384 s (0.3)
    assert [(a["status"], a["updated_at"] - t0) for a in h.alerts] == [
        (PENDING, 219 * sec),
        (FIRING, 249 * sec),
        (RESOLVED, 384 * sec),
    ]
    firing = h.alerts[1]
    assert firing["value"] == pytest.approx(0.5, abs=0.05)
    assert firing["labels"]["model_id"] == "m" and firing["trigger_event_ids"] == []


# -- determinism -------------------------------------------------------------------------------


def _rulebook_for_the_synthetic_stream() -> RuleBook:
    book = RuleBook()
    put_rule(book, "feature", models=["m1"], group_by=["model_id", "stream_name"], repeat_interval="5s",
             **{"for": "2s"}, actions=[{"type": "retrain"}])  # fmt: skip
    put_rule(book, "error", models=["m1"], signal={"kind": "drift", "stream_kind": "ERROR"},
             repeat_interval="3s")  # fmt: skip
    put_rule(book, "err-rate", models=["m1"], signal={"kind": "metric", "metric": "error_rate", "window": "20s"},
             condition={"type": "threshold", "op": ">", "value": 0.3}, min_samples=50,
             repeat_interval="5s")  # fmt: skip
    return book


def _alerts_for(batches, restart: bool) -> tuple[list[str], list[str], bytes]:
    from .test_processor import CODEC as PCODEC
    from .test_processor import WINDOWS, restarted

    alert_states = MemoryKV()
    book = _rulebook_for_the_synthetic_stream()
    # feature drift comes from the window tests (ADWIN no longer runs on raw features)
    config = ProcessorConfig(profiles=WINDOWS)
    processor = BatchProcessor(PCODEC, config)
    evaluator = AlertEvaluator(book)
    ids, retrain = [], []
    for chunk in batches:
        if restart:  # a new worker: only the checkpoints carry over
            processor = restarted(processor, config)
            evaluator = AlertEvaluator(book)
        result = processor.process(chunk)
        outcome = evaluator.evaluate(result, alert_states, model_partitions(chunk))
        ids += [a["event_id"] for a in outcome.alerts]
        retrain += [r["event_id"] for r in outcome.retraining]
    return ids, retrain, alert_states.get(b"m1")


@pytest.mark.parametrize("restart", [False, True])
def test_any_batching_gives_the_same_alert_ids(restart: bool) -> None:
    from .test_processor import messages

    stream = SyntheticStream("m1", n_features=3, seed=4, change_at=3000)
    msgs = messages(stream, 6000)
    whole_ids, whole_retrain, whole_state = _alerts_for([msgs], restart=False)
    assert len(whole_ids) >= 4 and whole_retrain  # the scenario does exercise the lifecycle
    cuts = [0, 1, 700, 2000, 3100, 3105, 5000, len(msgs)]
    split = [msgs[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    ids, retrain, state = _alerts_for(split, restart=restart)
    assert ids == whole_ids
    assert retrain == whole_retrain
    assert state == whole_state


def test_state_round_trip_preserves_everything() -> None:
    from .test_processor import messages

    stream = SyntheticStream("m1", n_features=3, seed=4, change_at=3000)
    _, _, blob = _alerts_for([messages(stream, 4000)], restart=False)
    state = AlertState.from_bytes(blob)
    assert state.buckets and state.ticks and state.retrained
    assert AlertState.from_bytes(state.to_bytes()) == state
    assert state.to_bytes() == blob
    # and one with alerts in every state
    book = RuleBook()
    put_rule(book, "fires", repeat_interval="10m", labels={"a": "b"}, notify=["ops"])
    put_rule(book, "pends", **{"for": "1h"})
    put_rule(book, "resolves", cooldown="1h", repeat_interval="1m")
    h = Harness(book)
    h.run(batch(drift(1, T0), drift(2, T0 + 1)))
    h.run(batch(clock=T0 + 2 * MIN))
    state = h.state()
    assert {e.status for e in state.alerts.values()} == {PENDING, FIRING, RESOLVED}
    assert AlertState.from_bytes(state.to_bytes()) == state
    with pytest.raises(ValueError, match="AlertState"):
        AlertState.from_bytes(b"DLS1...")


def test_unknown_partition_keeps_the_old_state_instead_of_guessing() -> None:
    book = RuleBook()
    put_rule(book, "r1")
    kv = MemoryKV()
    evaluator = AlertEvaluator(book)
    outcome = evaluator.evaluate(batch(drift(1, T0)), kv, {"other": 3})
    assert [a["status"] for a in outcome.alerts] == [FIRING]
    assert kv.data == {} and outcome.counters["alert_state_unsaved"] == 1
    again = evaluator.evaluate(batch(drift(1, T0)), kv, {"m": 2})
    assert [a["event_id"] for a in again.alerts] == [a["event_id"] for a in outcome.alerts]
    assert kv.partition_of == {b"m": 2}


def _stats(t: int, name: str, estimate: float | None, n: int = 500) -> dict:
    return {"model_id": "m", "stream_kind": "FEATURE", "stream_name": name, "detector": "ADWIN",
            "time": t, "n_values": n, "estimate": estimate, "statistic": None, "p_value": None,
            "drift": 0}  # fmt: skip


def test_statistic_threshold_on_detector_stats_rows() -> None:
    book = RuleBook()
    put_rule(book, "mean", signal={"kind": "statistic", "stream_kind": "FEATURE",
                                   "stream_name": "f*", "field": "estimate"},
             condition={"type": "threshold", "op": ">=", "value": 1.0}, min_samples=100,
             notify=["ops"])  # fmt: skip
    h = Harness(book)

    def run(*rows: dict) -> None:
        result = batch(clock=max(r["time"] for r in rows))
        result.rows["detector_stats"].extend(rows)
        h.run(result)

    run(_stats(T0, "f1", 0.2), _stats(T0, "f2", None), _stats(T0, "other", 5.0))
    run(_stats(T0 + 1000, "f1", 1.5, n=50))  # too few values
    run(_stats(T0 + 2000, "f1", 0.2), _stats(T0 + 2000, "f2", 1.0))  # one stream suffices
    run(_stats(T0 + 3000, "f1", 0.2), _stats(T0 + 3000, "f2", 2.0))
    run(_stats(T0 + 4000, "f1", 0.1), _stats(T0 + 4000, "f2", 0.5))
    assert [(a["status"], a["updated_at"] - T0, a["value"]) for a in h.alerts] == [
        (FIRING, 2000, 1.0),
        (RESOLVED, 4000, 0.1),
    ]
    assert h.alerts[1]["notify"] == ["ops"]


def test_rule_turned_into_another_signal_resolves_its_drift_alert() -> None:
    book = RuleBook()
    put_rule(book, "r1", notify=["ops"])
    h = Harness(book)
    h.run(batch(drift(1, T0)))
    put_rule(book, "r1", version=2, signal={"kind": "metric", "metric": "accuracy"},
             condition={"type": "threshold", "op": "<", "value": 0.5}, notify=["ops"])  # fmt: skip
    h.run(batch(clock=T0 + MIN))
    # resolved at the new rule's first evaluation: its first tick (5m window: 15 s ticks)
    first_tick = T0 // 15_000 * 15_000 + 15_000
    assert statuses(h.alerts) == [(FIRING, T0), (RESOLVED, first_tick)]
    assert h.alerts[1]["notify"] == ["ops"] and h.alerts[1]["rule_version"] == 2


def test_annotations_say_what_a_person_needs_to_act() -> None:
    """Drift alerts carry the latest matching drift's facts (docs/alerting.md, "Annotations");
    metric alerts their value; the rule's own annotations are kept."""
    book = RuleBook()
    put_rule(book, "r1", annotations={"runbook": "https://runbooks/drift"})
    h = Harness(book)
    first = {**drift(1, T0), "statistic": 0.25, "p_value": 0.001,
             "evidence": {"mean_before": "0.1", "mean_after": "0.6"}}  # fmt: skip
    (alert,) = h.run(batch(first))
    notes = alert["annotations"]
    assert notes["runbook"] == "https://runbooks/drift"
    assert notes["summary"] == "feature drift firing: drift in FEATURE/age (ADWIN) on model m v1"
    assert "mean 0.1 -> 0.6" in notes["description"]
    assert {
        k: notes[k]
        for k in (
            "model_version",
            "stream",
            "detector",
            "statistic",
            "p_value",
            "before",
            "after",
            "drift_event_id",
        )
    } == {  # fmt: skip
        "model_version": "1",
        "stream": "FEATURE/age",
        "detector": "ADWIN",
        "statistic": "0.25",
        "p_value": "0.001",
        "before": "0.1",
        "after": "0.6",
        "drift_event_id": "d1",
    }
    assert notes["window_start"] == notes["window_end"] == "2023-11-14T22:13:20.000Z"
    # a second drift of the episode: the resolve names it and the span of the episode
    assert h.run(batch(drift(2, T0 + MIN))) == []
    *_, resolved = h.run(batch(drift(3, T0 + 5 * 60 * MIN, kind="OTHER")))  # moves the clock
    assert resolved["status"] == RESOLVED
    notes = resolved["annotations"]
    assert notes["drift_event_id"] == "d2" and notes["window_end"] == "2023-11-14T22:14:20.000Z"
    assert notes["description"].startswith("Resolved at ")
    assert "before" not in notes  # the second drift had no means


# -- time: the idle watermark ---------------------------------------------------------------------


def _idle(h: Harness, steps: int, step_ms: int = 10_000) -> list[dict]:
    out = []
    for _ in range(steps):
        outcome = h.evaluator.advance_idle(["m"], step_ms, h.kv, {"m": 0})
        h.alerts += outcome.alerts
        out += outcome.alerts
    return out


def test_a_burst_then_silence_fires_and_resolves_on_the_idle_watermark() -> None:
    """One drift and nothing after it: without idle steps the clock would stay at the drift
    and ``for`` would never elapse. Each idle step moves it by a fixed quantum; the
    transitions still happen at their own event times (not at the steps')."""
    book = RuleBook()
    put_rule(book, "r1", **{"for": "1m", "repeat_interval": "2m"})
    h = Harness(book)
    assert statuses(h.run(batch(drift(1, T0)))) == [(PENDING, T0)]
    assert _idle(h, 5) == []  # 50 s: still pending
    assert statuses(_idle(h, 1)) == [(FIRING, T0 + MIN)]
    assert statuses(_idle(h, 6)) == [(RESOLVED, T0 + 2 * MIN)]  # quiet for repeat_interval
    assert h.state().clock_ms == T0 + 12 * 10_000


def test_a_model_that_stops_sending_resolves_its_metric_alert() -> None:
    """Error rate over 1m: a burst of wrong answers, then the model stops sending. Idle steps
    tick the window forward: it fires after ``for``, and resolves once the window is empty."""
    book = RuleBook()
    put_rule(
        book,
        "err",
        name="errors",
        signal={"kind": "metric", "metric": "error_rate", "window": "1m"},
        condition={"type": "threshold", "op": ">", "value": 0.3},
        **{"for": "20s"},
    )
    h = Harness(book)
    burst = [joined(i, T0 + i * 100, correct=i % 2 == 0) for i in range(20)]
    alerts = h.run(batch(clock=T0, joined=burst)) + _idle(h, 9)
    assert [a["status"] for a in alerts] == [PENDING, FIRING, RESOLVED]
    pending, firing, resolved = alerts
    # at the first tick (every window / 20 = 3 s) once it has held 20 s
    assert 20_000 <= firing["updated_at"] - pending["updated_at"] < 23_000
    assert firing["value"] == 0.5
    # resolved at the first tick whose trailing minute holds no labelled row
    assert resolved["updated_at"] <= T0 + 2 * MIN


def test_idle_steps_are_reproducible_after_a_restart() -> None:
    """A crash after some idle steps whose checkpoint did not land: the replay starts from
    the last checkpointed state and takes the same fixed steps, so it emits the same records
    with the same ids."""
    book = RuleBook()
    put_rule(book, "r1", **{"for": "1m", "repeat_interval": "2m"})
    h = Harness(book)
    h.run(batch(drift(1, T0)))
    checkpoint = dict(h.kv.data)
    first = _idle(h, 12)
    h.kv.data = dict(checkpoint)  # the restart: the state as checkpointed before the steps
    again = _idle(h, 12)
    assert [a["event_id"] for a in again] == [a["event_id"] for a in first]
    assert len(first) == 2


@pytest.mark.e2e
def test_burst_and_stopped_model_fire_and_resolve_through_the_worker(fresh_kafka, tmp_path):
    """The real worker with a short idle timeout. ``burst`` sends 40 labelled predictions all
    stamped now, ``stops`` sends them spread over the last 20 s and stops: nothing more ever
    arrives. Event time alone would leave both PENDING forever; the idle watermark moves
    their clocks, so each fires after ``for`` and resolves once its window has emptied."""
    import time
    import uuid

    from confluent_kafka import Producer
    from driftline.schemas import topics
    from e2e_support import decode_all, read_topic, start_worker, stop_worker, wait_for, worker_env

    from driftline.admin import ensure_topics
    from driftline.synthetic import SyntheticStream

    from .alerting_support import record, rule_data

    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 2)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    rule = rule_data(
        name="errors",
        models=["burst", "stops"],
        signal={"kind": "metric", "metric": "error_rate", "window": "20s"},
        condition={"type": "threshold", "op": ">", "value": 0.3},
        min_samples=10,
        **{"for": "10s"},
    )
    producer.produce(topics.RULES, key=b"rule:errors", value=record("rule", "errors", rule))
    now = int(time.time() * 1000)
    sends = {"burst": [now] * 40, "stops": [now - 20_000 + i * 500 for i in range(40)]}
    last_outcome = {model: max(times) + 100 for model, times in sends.items()}
    for model, times in sends.items():
        stream = SyntheticStream(model, n_features=2, seed=3)
        for i, at in enumerate(times):
            prediction, outcome = stream.step(i)
            prediction["event_time"] = at
            wrong = "yes" if prediction["prediction_label"] == "no" else "no"
            outcome.update(
                event_time=at + 100, label=wrong if i % 2 else prediction["prediction_label"]
            )
            producer.produce(topics.PREDICTIONS, key=model.encode(),
                             value=CODEC.encode("PredictionEvent", prediction))  # fmt: skip
            producer.produce(topics.OUTCOMES, key=model.encode(),
                             value=CODEC.encode("OutcomeEvent", outcome))  # fmt: skip
    assert producer.flush(30) == 0

    app_id = f"worker-{uuid.uuid4().hex[:8]}"
    env = worker_env(bootstrap, tmp_path / "data", app_id, DRIFTLINE_ALERT_IDLE_TIMEOUT_SECONDS="1")
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)

    def statuses_of(model: str) -> list[str]:
        alerts = decode_all(read_topic(bootstrap, topics.ALERTS))
        return [a["status"] for a in sorted(alerts, key=lambda a: a["updated_at"])
                if a["model_id"] == model]  # fmt: skip

    try:
        for model in ("burst", "stops"):
            wait_for(lambda m=model: "RESOLVED" in statuses_of(m), 240,
                     f"{model}'s alert to resolve", worker, log)  # fmt: skip
    finally:
        assert stop_worker(worker) in (0, -signal.SIGTERM), log.read_text()[-3000:]
    for model in ("burst", "stops"):
        assert statuses_of(model) == ["PENDING", "FIRING", "RESOLVED"], model
        alerts = decode_all(read_topic(bootstrap, topics.ALERTS))
        pending, firing, resolved = sorted(
            (a for a in alerts if a["model_id"] == model), key=lambda a: a["updated_at"]
        )
        assert firing["updated_at"] - pending["updated_at"] >= 10_000  # `for` in event time
        assert firing["value"] > 0.3  # every second answer was wrong
        # resolved once the trailing 20 s held fewer than min_samples labelled rows: after the
        # last data, so only the idle steps can have moved the clock there
        assert resolved["updated_at"] > last_outcome[model]


def test_a_drift_back_to_the_old_level_resolves_without_waiting() -> None:
    """The error stream rose (0.1 -> 0.5) and later fell back (0.5 -> 0.12): the condition
    has cleared, so the alert resolves at that drift, not a quiet period later. A further rise
    on the same stream, or a change on another stream, sustains it as before."""
    book = RuleBook()
    put_rule(book, "r1", signal={"kind": "drift", "stream_kind": "ERROR"}, repeat_interval="4h")
    h = Harness(book)

    def error_drift(n: int, t: int, before: str, after: str, name: str = "error") -> dict:
        return {**drift(n, t, kind="ERROR", name=name),
                "evidence": {"mean_before": before, "mean_after": after}}  # fmt: skip

    assert statuses(h.run(batch(error_drift(1, T0, "0.1", "0.5")))) == [(FIRING, T0)]
    assert h.run(batch(error_drift(2, T0 + MIN, "0.5", "0.7"))) == []  # worse: sustains
    assert h.run(batch(error_drift(3, T0 + 2 * MIN, "0.1", "0.2", name="e2"))) == []
    (resolved,) = h.run(batch(error_drift(4, T0 + 3 * MIN, "0.7", "0.12")))
    assert (resolved["status"], resolved["updated_at"]) == (RESOLVED, T0 + 3 * MIN)
    assert resolved["annotations"]["drift_event_id"] == "d4"


def test_a_drift_behind_the_prediction_clock_keeps_its_own_time() -> None:
    """Labels arrive after their predictions, so an error-stream drift is often behind the
    clock the predictions moved. With no record emitted after it, it is not late: the alert
    starts at the drift's own time (what a replay of the drift events alone says too, as the
    API's dry-run does). Behind an emitted record, it is handled at that record's time."""
    book = RuleBook()
    put_rule(book, "r1", **{"for": "1m", "repeat_interval": "10m"})
    h = Harness(book)
    h.run(batch(clock=T0 + 2000))  # predictions ahead
    assert statuses(h.run(batch(drift(1, T0)))) == [(PENDING, T0)]
    replayed = AlertEvaluator(book).replay(drifts=[drift(1, T0)], until={"m": T0 + 2000})
    assert [a["event_id"] for a in replayed.alerts] == [a["event_id"] for a in h.alerts]
    h.run(batch(clock=T0 + 2 * MIN))  # FIRING at T0 + 1m emitted
    assert h.run(batch(drift(2, T0 + 30_000, name="other"))) == []  # behind that record
    fp = fingerprint("r1", "m", {"model_id": "m"})
    assert h.state().alerts[fp].last_signal == T0 + MIN  # handled at the FIRING's time
