"""The workers' control-plane view: the reader's rule in memory, and the follower on the real
broker (records written exactly as the API writes them)."""

from __future__ import annotations

import json
import uuid

import pytest
from driftline.schemas import topics
from driftline.streams.alerting import FIRING, PENDING, AlertEvaluator
from driftline.streams.kv import MemoryKV
from driftline.streams.rulebook import (
    ControlPlaneFollower,
    Matcher,
    RuleBook,
    RuleError,
    Silence,
    parse_duration_ms,
)

from .alerting_support import T0, batch, drift, put_ack, put_silence, record, rule_data


def _apply(book: RuleBook, kind: str, ident: str, version: int, **fields) -> bool:
    data = rule_data(**fields) if kind == "rule" else fields
    return book.apply(f"{kind}:{ident}".encode(), record(kind, ident, data, version))


def test_higher_version_replaces_lower_is_ignored_tombstone_removes() -> None:
    book = RuleBook()
    assert _apply(book, "rule", "r1", 2, name="two")
    assert not _apply(book, "rule", "r1", 1, name="one")  # lost a race / replayed: ignored
    assert not _apply(book, "rule", "r1", 2, name="two again")  # equal: the first wins
    assert [r.name for r in book.snapshot().rules] == ["two"]
    assert _apply(book, "rule", "r1", 3, name="three")
    assert [(r.name, r.version) for r in book.snapshot().rules] == [("three", 3)]
    assert book.apply(b"rule:r1", None)
    assert book.snapshot().rules == () and book.version("rule", "r1") is None
    assert not book.apply(b"rule:r1", None)  # nothing left to delete
    # after a delete, the key starts over (the API's next create is version 1 again)
    assert _apply(book, "rule", "r1", 1, name="reborn")
    assert [r.name for r in book.snapshot().rules] == ["reborn"]


def test_malformed_records_are_skipped_and_unusable_ones_kept_out() -> None:
    book = RuleBook()
    assert not book.apply(b"rule:r1", b"not json")
    assert not book.apply(b"no-colon", record("rule", "r1", rule_data()))
    assert not book.apply(b"rule:other", record("rule", "r1", rule_data()))  # key != value
    # valid record, data the worker cannot use: its version counts, the rule is left out
    bad = json.loads(record("rule", "r1", rule_data()))
    bad["data"]["for"] = "soon"
    assert book.apply(b"rule:r1", json.dumps(bad).encode())
    assert book.version("rule", "r1") == 1 and book.snapshot().rules == ()
    # subscriptions and api keys are versioned, not parsed
    assert book.apply(b"subscription:s1", record("subscription", "s1", {"name": "x"}))
    assert len(book) == 2 and book.snapshot().rules == ()


def test_snapshot_is_cached_until_a_change() -> None:
    book = RuleBook()
    _apply(book, "rule", "b", 1)
    _apply(book, "rule", "a", 1)
    first = book.snapshot()
    assert [r.id for r in first.rules] == ["a", "b"]  # sorted: evaluation order is stable
    assert book.snapshot() is first
    generation = book.generation
    put_silence(book, "s1", [{"name": "model_id", "value": "m"}], T0, T0 + 1000)
    put_ack(book, "fp1", T0)
    snap = book.snapshot()
    assert snap is not first and book.generation == generation + 2
    assert [s.id for s in snap.silences] == ["s1"] and snap.acks["fp1"].acked_at_ms == T0
    assert snap.rule("a") is not None and snap.rule("zz") is None


def test_durations_matchers_and_silence_ranges() -> None:
    assert parse_duration_ms("1d2h3m4s") == ((24 + 2) * 60 + 3) * 60_000 + 4000
    for bad in ("", "5", "5x", "m5"):
        with pytest.raises(RuleError):
            parse_duration_ms(bad)
    labels = {"model_id": "churn-eu", "severity": "critical"}
    assert Matcher("model_id", "churn-*", "=~").matches(labels)
    assert Matcher("team", "", "=").matches(labels)  # a missing label is ""
    assert Matcher("severity", "warning", "!=").matches(labels)
    assert not Matcher("model_id", "churn-*", "!~").matches(labels)
    silence = Silence("s", 1, (Matcher("model_id", "churn-eu"),), 1000, 2000)
    assert [silence.mutes(labels, t) for t in (999, 1000, 1999, 2000)] == [
        False,
        True,
        True,
        False,
    ]


# -- the follower on the real broker -----------------------------------------------------------


def _produce(producer, key: str, value: bytes | None, topic: str) -> tuple[int, int]:
    """Write one record like the API does; its (partition, offset) once the broker has it."""
    kind = key.split(":", 1)[0]
    delivered = []
    producer.produce(
        topic,
        key=key.encode(),
        value=value,
        headers=[("driftline.kind", kind.encode()),
                 ("driftline.op", b"upsert" if value is not None else b"delete")],
        on_delivery=lambda err, msg: delivered.append((err, msg)),
    )  # fmt: skip
    producer.flush(30)
    ((err, msg),) = delivered
    assert err is None, err
    return msg.partition(), msg.offset()


@pytest.mark.e2e
def test_follower_applies_rule_changes_without_restart(kafka_broker) -> None:
    from dataclasses import replace

    from confluent_kafka import Producer
    from driftline.schemas.control_plane import create_topic

    bootstrap = kafka_broker.bootstrap
    # a control-plane topic of this test's own (the session broker's rules topic holds the
    # other tests' rules), made as every creator makes the control plane
    topic = f"{topics.RULES}.test-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, replace(topics.topic_spec(topics.RULES), name=topic), partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    # on the topic before the worker starts: one rule, then its update, plus a deleted one
    _produce(producer, "rule:r1", record("rule", "r1", rule_data(**{"for": "1h"}), 1), topic)
    _produce(producer, "rule:gone", record("rule", "gone", rule_data(), 1), topic)
    _produce(producer, "rule:gone", None, topic)
    _produce(producer, "rule:r1", record("rule", "r1", rule_data(**{"for": "30m"}), 2), topic)

    book = RuleBook()
    with ControlPlaneFollower(bootstrap, topic, book) as follower:
        assert follower.wait_ready(30)
        assert [(r.id, r.version, r.for_ms) for r in book.snapshot().rules] == [
            ("r1", 2, 30 * 60_000)
        ]
        evaluator, kv = AlertEvaluator(book), MemoryKV()
        (pending,) = evaluator.evaluate(batch(drift(1, T0)), kv, {"m": 0}).alerts
        assert pending["status"] == PENDING

        # the API changes the rule while the worker runs: the next batch uses the new version
        _produce(producer, "rule:r1", record("rule", "r1", rule_data(**{"for": "0s"}), 3), topic)
        # a stale write (a writer that lost a race) on the same key, hence the same partition
        partition, offset = _produce(
            producer, "rule:r1", record("rule", "r1", rule_data(**{"for": "2h"}), 2), topic
        )
        assert follower.wait_for_offset(partition, offset, 30)
        assert [(r.version, r.for_ms) for r in book.snapshot().rules] == [(3, 0)]
        (firing,) = evaluator.evaluate(batch(clock=T0 + 1), kv, {"m": 0}).alerts
        assert (firing["status"], firing["rule_version"], firing["updated_at"]) == (FIRING, 3, T0)
        assert follower.applied == 6 and follower.error is None


# -- a model's own monitoring settings ---------------------------------------------------------


def _predictions(model: str, first: int, n: int) -> list:
    """``n`` single prediction records of ``model`` (positions ``first``…), stationary."""
    import numpy as np
    from driftline.schemas import Codec, event_id
    from driftline.streams.processor import SourceMessage

    codec = Codec()
    out = []
    for i in range(first, first + n):
        g = np.random.default_rng([11, i])
        value = {
            "event_id": event_id("test-rulebook", model, str(i)), "model_id": model,
            "model_version": "1", "event_time": T0 + 10 * i,
            "numeric_features": {"x": float(g.normal())}, "categorical_features": {},
            "segments": {}, "prediction_label": None, "prediction_score": None,
            "prediction_value": None, "probabilities": None,
        }  # fmt: skip
        # one partition per model: each keeps its own offsets
        out.append(SourceMessage(topics.PREDICTIONS, ord(model), i, model.encode(),
                                 codec.encode("PredictionEvent", value)))  # fmt: skip
    return out


def test_a_models_settings_reach_its_windows_through_the_processor_and_a_restart() -> None:
    """MonitorConfigs over the RuleBook, in the BatchProcessor as the worker wires it: a
    model's settings apply from its next window on, the other model keeps the defaults, and
    a restored state continues with them; a delete returns the model to the defaults."""
    from driftline.detectors.monitor import MonitorConfig
    from driftline.schemas.codec import Codec
    from driftline.streams.processor import BatchProcessor, ProcessorConfig
    from driftline.streams.rulebook import MonitorConfigs
    from driftline.streams.state import PartitionState

    defaults = MonitorConfig(window_size=400, auto_reference_events=400)
    config = ProcessorConfig(profiles=defaults)
    book = RuleBook()

    def processor(states: dict | None = None) -> BatchProcessor:
        p = BatchProcessor(Codec(), config, states)
        p.monitor_configs = MonitorConfigs(defaults, book)
        return p

    def windows(result) -> dict[str, list[tuple[int, int]]]:  # noqa: ANN001
        out: dict[str, list[tuple[int, int]]] = {}
        for row in result.rows["feature_drift"]:
            if row["test"] == "ks":
                out.setdefault(row["model_id"], []).append(
                    (row["first_position"], row["last_position"] - row["first_position"] + 1)
                )
        return out

    p = processor()
    first = p.process(_predictions("a", 0, 1000) + _predictions("b", 0, 1000))
    assert windows(first) == {"a": [(400, 400)], "b": [(400, 400)]}  # 200 of each open
    assert _apply(book, "monitoring", "a", 1, window_size=100, days=60)
    second = p.process(_predictions("a", 1000, 300) + _predictions("b", 1000, 300))
    # a: the open window (800…999) dropped, windows of 100 from the next event; b: as before
    assert windows(second) == {"a": [(1000, 100), (1100, 100), (1200, 100)], "b": [(800, 400)]}
    assert second.counters["monitor_settings_applied"] == 1
    alpha = {r["model_id"]: r["threshold"] for r in second.rows["feature_drift"] if r["test"] == "ks"}
    assert alpha["a"] < alpha["b"]

    # a restart from the checkpointed state continues with the settings: no window dropped
    states = {k: PartitionState.from_bytes(s.to_bytes(), config.join_ttl_ms, config.orphan_ttl_ms)
              for k, s in p.states.items()}  # fmt: skip
    p = processor(states)
    third = p.process(_predictions("a", 1300, 150))
    assert windows(third) == {"a": [(1300, 100)]} and not third.counters["monitor_settings_applied"]
    assert book.apply(b"monitoring:a", None)  # deleted: back to the defaults
    fourth = p.process(_predictions("a", 1450, 450))
    assert windows(fourth) == {"a": [(1450, 400)]}

    # fewer first events than a model warming up already has: its reference is built at once
    # (and lands in reference_profiles), its windows start after the events it had
    assert p.process(_predictions("c", 0, 300)).rows["reference_profiles"] == []
    assert _apply(book, "monitoring", "c", 1, auto_reference_events=200)
    fifth = p.process(_predictions("c", 300, 400))
    assert {r["n_events"] for r in fifth.rows["reference_profiles"]} == {300}
    assert windows(fifth) == {"c": [(300, 400)]}
