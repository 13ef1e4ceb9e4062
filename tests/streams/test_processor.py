"""The worker's batch logic on real codec bytes, with in-memory tables standing in for faust's.

(The end-to-end tests run the same logic inside faust on the real broker.)
"""

from __future__ import annotations

import numpy as np
import pytest
from driftline.schemas import Codec, topics
from driftline.streams.kv import MemoryKV
from driftline.streams.processor import (
    DUPLICATE,
    BatchProcessor,
    ProcessorConfig,
    SourceMessage,
)

from driftline.synthetic import SyntheticStream

CODEC = Codec()


def messages(stream: SyntheticStream, n: int, *, outcome_lag: int = 50) -> list[SourceMessage]:
    """Predictions in order, each outcome ``outcome_lag`` steps after its prediction."""
    out: list[SourceMessage] = []
    pairs = list(stream.events(n))
    offsets = {topics.PREDICTIONS: 0, topics.OUTCOMES: 0}

    def add(topic: str, name: str, record: dict) -> None:
        out.append(
            SourceMessage(
                topic, 0, offsets[topic], record["model_id"].encode(), CODEC.encode(name, record)
            )
        )
        offsets[topic] += 1

    for i, (prediction, _) in enumerate(pairs):
        add(topics.PREDICTIONS, "PredictionEvent", prediction)
        if i >= outcome_lag:
            add(topics.OUTCOMES, "OutcomeEvent", pairs[i - outcome_lag][1])
    return out


def run(
    batches: list[list[SourceMessage]],
    config: ProcessorConfig | None = None,
    restart_between: bool = False,
):
    states, join = MemoryKV(), MemoryKV()
    processor = BatchProcessor(CODEC, config or ProcessorConfig(), states, join)
    results = []
    for batch in batches:
        if restart_between:
            # a new worker over the same tables: nothing but the tables carries over
            processor = BatchProcessor(CODEC, config or ProcessorConfig(), states, join)
        results.append(processor.process(batch))
    return results


def drift_ids(results) -> list[str]:
    return [d["event_id"] for r in results for d in r.drift_events]


def test_drift_detected_near_change_and_retraining_requested():
    stream = SyntheticStream("m1", n_features=5, seed=1, change_at=3000)
    (result,) = run([messages(stream, 6000)])
    drifts = result.drift_events
    feature = [d for d in drifts if d["stream_kind"] == "FEATURE"]
    assert {d["stream_name"] for d in feature} == {"f00"}
    assert 3000 <= min(d["position"] for d in feature) < 3300
    errors = [d for d in drifts if d["stream_kind"] == "ERROR"]
    assert errors and 2950 <= min(d["position"] for d in errors) < 3500
    assert len(result.retraining) == 1
    request = result.retraining[0]
    assert request["trigger_event_ids"] == [errors[0]["event_id"]]
    assert request["window_end"] == errors[0]["detected_at"]
    assert result.counters["joined"] == 6000 - 50
    assert len(result.rows["predictions"]) == 6000
    assert len(result.rows["joined_labels"]) == 6000 - 50


def test_no_drift_on_control_stream():
    (result,) = run([messages(SyntheticStream("ctl", n_features=5, seed=2), 6000)])
    assert result.drift_events == []
    assert result.retraining == []


@pytest.mark.parametrize("restart_between", [False, True])
def test_any_batching_gives_the_same_detections(restart_between):
    stream = SyntheticStream("m2", n_features=4, seed=3, change_at=2000)
    msgs = messages(stream, 4000)
    (whole,) = run([msgs])
    cuts = sorted(np.random.default_rng(0).choice(len(msgs), 7, replace=False))
    batches = [msgs[a:b] for a, b in zip([0, *cuts], [*cuts, len(msgs)], strict=True)]
    split = run(batches, restart_between=restart_between)
    assert drift_ids(split) == drift_ids([whole])
    assert [r["event_id"] for s in split for r in s.retraining] == [
        r["event_id"] for r in whole.retraining
    ]


def test_replayed_messages_are_not_applied_twice():
    stream = SyntheticStream("m3", n_features=3, seed=4, change_at=1500)
    msgs = messages(stream, 3000)
    (whole,) = run([msgs])
    # the worker died after its state write for the first 2000 but before committing offsets:
    # the broker redelivers from 1000
    results = run([msgs[:2000], msgs[1000:]], restart_between=True)
    assert results[1].counters["replayed"] == 1000
    assert drift_ids(results) == drift_ids([whole])


def test_bad_input_goes_to_dead_letters_and_the_batch_goes_on():
    stream = SyntheticStream("m4", n_features=2, seed=5)
    good = messages(stream, 10, outcome_lag=1)
    prediction, outcome = stream.step(100)
    nan = dict(prediction, event_id="nan-1", numeric_features={"f00": float("nan")})
    bad = [
        SourceMessage(topics.PREDICTIONS, 0, 1000, b"m4", b"not avro at all"),
        SourceMessage(topics.PREDICTIONS, 0, 1001, b"m4", b"\x00\x00\x00\x03\xe7garbage"),
        SourceMessage(topics.PREDICTIONS, 0, 1002, b"m4", CODEC.encode("PredictionEvent", nan)),
        SourceMessage(topics.PREDICTIONS, 0, 1003, b"m4", CODEC.encode("OutcomeEvent", outcome)),
        SourceMessage(topics.PREDICTIONS, 0, 1004, b"m4", None),
        # the same prediction again (a producer retry): a duplicate
        SourceMessage(topics.PREDICTIONS, 0, 1005, b"m4", good[0].value),
    ]
    after = SourceMessage(
        topics.PREDICTIONS, 0, 2000, b"m4", CODEC.encode("PredictionEvent", stream.step(200)[0])
    )
    (result,) = run([good + bad + [after]])
    reasons = [letter.reason for letter in result.dead_letters]
    assert reasons == [
        topics.NOT_CONFLUENT_FRAMED,
        topics.UNKNOWN_SCHEMA_ID,
        topics.NON_FINITE_VALUE,
        topics.WRONG_SCHEMA_FOR_TOPIC,
        topics.NOT_CONFLUENT_FRAMED,
        DUPLICATE,
    ]
    assert result.dead_letters[0].payload == b"not avro at all"
    headers = dict(result.dead_letters[2].headers())
    assert headers[topics.HEADER_SOURCE_OFFSET] == b"1002"
    assert result.counters["predictions"] == 11


def test_unknown_models_and_orphan_outcomes():
    config = ProcessorConfig(known_models=frozenset({"known"}), orphan_ttl_ms=1_000)
    known = SyntheticStream("known", n_features=1, seed=6)
    stranger = SyntheticStream("stranger", n_features=1, seed=6)
    _, orphan = SyntheticStream("known", n_features=1, seed=99).step(0)
    batch = [
        SourceMessage(
            topics.PREDICTIONS, 0, 0, b"s", CODEC.encode("PredictionEvent", stranger.step(0)[0])
        ),
        SourceMessage(topics.OUTCOMES, 0, 0, b"k", CODEC.encode("OutcomeEvent", orphan)),
    ]
    # the model's clock moves past the orphan's wait
    batch += [
        SourceMessage(topics.PREDICTIONS, 0, i, b"k", CODEC.encode("PredictionEvent", p))
        for i, (p, _) in enumerate(known.events(400), start=1)
    ]
    (result,) = run([batch], config)
    reasons = sorted(letter.reason for letter in result.dead_letters)
    assert reasons == [topics.ORPHAN_OUTCOME, topics.UNKNOWN_MODEL]
    orphan_letter = next(x for x in result.dead_letters if x.reason == topics.ORPHAN_OUTCOME)
    assert CODEC.decode(orphan_letter.payload)[1]["event_id"] == orphan["event_id"]
    assert dict(orphan_letter.headers())[topics.HEADER_SOURCE_TOPIC] == topics.OUTCOMES.encode()


def test_outcome_before_its_prediction_waits_and_joins():
    stream = SyntheticStream("m5", n_features=1, seed=8)
    prediction, outcome = stream.step(0)
    batch = [
        SourceMessage(topics.OUTCOMES, 0, 0, b"m5", CODEC.encode("OutcomeEvent", outcome)),
        SourceMessage(topics.PREDICTIONS, 0, 0, b"m5", CODEC.encode("PredictionEvent", prediction)),
        SourceMessage(topics.OUTCOMES, 0, 1, b"m5", CODEC.encode("OutcomeEvent", outcome)),
    ]
    (result,) = run([batch])
    assert result.counters["joined"] == 1
    assert [x.reason for x in result.dead_letters] == [DUPLICATE]
    (row,) = result.rows["joined_labels"]
    assert row["prediction_id"] == prediction["event_id"]
    assert row["label_delay_ms"] == outcome["event_time"] - prediction["event_time"]


def test_catching_up_one_topic_far_ahead_of_the_other_loses_no_outcome():
    """After an outage the consumer may read every outcome before any prediction; the outcomes
    wait on the prediction clock, not their own, so all of them still join."""
    config = ProcessorConfig(orphan_ttl_ms=1_000, join_ttl_ms=1_000)
    stream = SyntheticStream("backlog", n_features=2, seed=12)
    pairs = list(stream.events(2000))  # 20 s of traffic: far beyond both TTLs
    outcomes = [
        SourceMessage(topics.OUTCOMES, 0, i, b"b", CODEC.encode("OutcomeEvent", o))
        for i, (_, o) in enumerate(pairs)
    ]
    predictions = [
        SourceMessage(topics.PREDICTIONS, 0, i, b"b", CODEC.encode("PredictionEvent", p))
        for i, (p, _) in enumerate(pairs)
    ]
    results = run(
        [outcomes[:1000], outcomes[1000:], predictions[:1000], predictions[1000:]], config
    )
    assert sum(r.counters["joined"] for r in results) == 2000
    assert [x for r in results for x in r.dead_letters] == []


def test_labels_that_never_come_do_not_pile_up():
    config = ProcessorConfig(join_ttl_ms=1_000)
    stream = SyntheticStream("unlabelled", n_features=1, seed=13)
    predictions = [
        SourceMessage(topics.PREDICTIONS, 0, i, b"u", CODEC.encode("PredictionEvent", p))
        for i, (p, _) in enumerate(stream.events(500))  # 5 s of predictions, no outcomes
    ]
    (result,) = run([predictions], config)
    # kept until the prediction clock is twice the TTL past them, then given up
    assert result.counters["unlabelled_expired"] == 500 - 200
