"""The worker's batch logic on real codec bytes, state in memory (a restart is a checkpoint
round trip). The end-to-end tests run the same logic in the worker on the real broker."""

from __future__ import annotations

import numpy as np
import pytest
from driftline.detectors.monitor import MonitorConfig
from driftline.schemas import Codec, topics
from driftline.schemas.columns import OutcomeColumns, PredictionColumns
from driftline.streams import state as state_module
from driftline.streams.processor import (
    DUPLICATE,
    BatchProcessor,
    ProcessorConfig,
    SourceMessage,
)
from driftline.streams.state import PartitionState

from driftline.synthetic import SyntheticStream

CODEC = Codec()
# Features are watched by windows against the model's first events (no sequential detector
# on raw features by default): small windows, so a change at event 3,000 is found in the
# window [3000, 3500).
WINDOWS = MonitorConfig(window_size=500, auto_reference_events=2000)


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


def restarted(processor: BatchProcessor, config: ProcessorConfig) -> BatchProcessor:
    """A new worker over the checkpoints of the old one: nothing else carries over."""
    states = {
        p: PartitionState.from_bytes(s.to_bytes(), config.join_ttl_ms, config.orphan_ttl_ms)
        for p, s in processor.states.items()
    }
    return BatchProcessor(CODEC, config, states)


def run(
    batches: list[list[SourceMessage]],
    config: ProcessorConfig | None = None,
    restart_between: bool = False,
):
    config = config or ProcessorConfig(profiles=WINDOWS)
    processor = BatchProcessor(CODEC, config)
    results = []
    for batch in batches:
        if restart_between:
            processor = restarted(processor, config)
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
    tests = {d["detector"] for d in feature}
    # a window test decided; the shifted values also leave the reference's range
    assert tests & {"ks", "chisquare"} and tests <= {"ks", "chisquare", "out_of_range"}
    assert min(d["position"] for d in feature) == 3499  # the first window after the change
    errors = [d for d in drifts if d["stream_kind"] == "ERROR"]
    assert errors and 2950 <= min(d["position"] for d in errors) < 3500
    assert len(result.retraining) == 1
    request = result.retraining[0]
    assert request["trigger_event_ids"] == [errors[0]["event_id"]]
    assert request["window_end"] == errors[0]["detected_at"]
    assert result.counters["joined"] == 6000 - 50
    assert result.count("predictions") == 6000
    assert result.count("joined_labels") == 6000 - 50


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
    (row,) = result.table_rows("joined_labels")
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


# -- batch records ---------------------------------------------------------------------------


def batch_messages(
    stream: SyntheticStream, n: int, *, outcome_lag: int = 50, rows: int = 100
) -> list[SourceMessage]:
    """The same events as ``messages`` but as PredictionBatch/OutcomeBatch records of up to
    ``rows`` events, alternating so outcomes still follow their predictions."""
    pairs = list(stream.events(n))
    predictions = [p for p, _ in pairs]
    outcomes = [o for _, o in pairs[: max(0, n - outcome_lag)]]
    out: list[SourceMessage] = []
    offsets = {topics.PREDICTIONS: 0, topics.OUTCOMES: 0}
    for start in range(0, n, rows):
        cols = PredictionColumns.from_records(stream.model_id, predictions[start : start + rows])
        out.append(
            SourceMessage(topics.PREDICTIONS, 0, offsets[topics.PREDICTIONS], b"m",
                          CODEC.encode_columns(cols))  # fmt: skip
        )
        offsets[topics.PREDICTIONS] += 1
        done = outcomes[max(0, start - outcome_lag) : max(0, start + rows - outcome_lag)]
        if done:
            ocols = OutcomeColumns.from_records(stream.model_id, done)
            out.append(
                SourceMessage(topics.OUTCOMES, 0, offsets[topics.OUTCOMES], b"m",
                              CODEC.encode_columns(ocols))  # fmt: skip
            )
            offsets[topics.OUTCOMES] += 1
    return out


def test_batch_records_give_the_same_decisions_as_single_events():
    stream = SyntheticStream("mb", n_features=4, seed=3, change_at=2000)
    (singles,) = run([messages(stream, 4000)])
    (batched,) = run([batch_messages(stream, 4000)])
    assert drift_ids([batched]) == drift_ids([singles])
    assert [r["event_id"] for r in batched.retraining] == [
        r["event_id"] for r in singles.retraining
    ]
    for table in ("predictions", "outcomes", "joined_labels"):
        assert batched.count(table) == singles.count(table)
    assert batched.dead_letters == []


@pytest.mark.parametrize("restart_between", [False, True])
def test_batch_records_any_batching_gives_the_same_decisions(restart_between):
    stream = SyntheticStream("mc", n_features=3, seed=5, change_at=1500)
    msgs = batch_messages(stream, 3000, rows=64)
    (whole,) = run([msgs])
    cuts = [0, 1, 7, 20, 33, 60, len(msgs)]
    split = run([msgs[a:b] for a, b in zip(cuts, cuts[1:], strict=False)],
                restart_between=restart_between)  # fmt: skip
    assert drift_ids(split) == drift_ids([whole])
    assert [r["event_id"] for s in split for r in s.retraining] == [
        r["event_id"] for r in whole.retraining
    ]
    assert whole.retraining, "the scenario must exercise the retraining policy"


def test_a_bad_row_in_a_batch_record_is_dead_lettered_alone():
    stream = SyntheticStream("md", n_features=2, seed=6)
    records = [p for p, _ in stream.events(10)]
    records[3] = dict(records[3], numeric_features={"f00": float("inf"), "f01": 1.0})
    records[7] = dict(records[7], event_id=records[2]["event_id"])  # a duplicate id
    cols = PredictionColumns.from_records("md", records)
    message = SourceMessage(topics.PREDICTIONS, 0, 0, b"md", CODEC.encode_columns(cols))
    (result,) = run([[message]])
    letters = {letter.reason: letter for letter in result.dead_letters}
    assert sorted(letters) == [DUPLICATE, topics.NON_FINITE_VALUE]
    bad = letters[topics.NON_FINITE_VALUE]
    assert dict(bad.headers())["driftline.source.row"] == b"3"
    name, record = CODEC.decode(bad.payload)
    assert name == "PredictionEvent" and record["event_id"] == records[3]["event_id"]
    assert result.count("predictions") == 8
    stored = {r["event_id"] for r in result.table_rows("predictions")}
    assert records[3]["event_id"] not in stored and records[9]["event_id"] in stored


def test_singles_and_batch_records_interleave_in_topic_order():
    stream = SyntheticStream("me", n_features=2, seed=7, change_at=1000)
    singles = messages(stream, 2000)
    batches = batch_messages(stream, 2000, rows=50)
    (reference,) = run([singles])
    # the first half as single events, the rest as batch records (offsets continue)
    half = [m for m in singles if m.topic == topics.PREDICTIONS][:1000]
    half_o = [m for m in singles if m.topic == topics.OUTCOMES][: 1000 - 50]
    rest_p = [m for m in batches if m.topic == topics.PREDICTIONS][1000 // 50 :]
    rest_o = [m for m in batches if m.topic == topics.OUTCOMES][(1000 - 50) // 50 :]
    mixed = []
    for i, m in enumerate(half):
        mixed.append(SourceMessage(m.topic, 0, i, m.key, m.value))
    for i, m in enumerate(half_o):
        mixed.append(SourceMessage(m.topic, 0, i, m.key, m.value))
    for i, m in enumerate(rest_p):
        mixed.append(SourceMessage(m.topic, 0, len(half) + i, m.key, m.value))
    for i, m in enumerate(rest_o):
        mixed.append(SourceMessage(m.topic, 0, len(half_o) + i, m.key, m.value))
    (result,) = run([mixed])
    features = [d for d in reference.drift_events if d["stream_kind"] == "FEATURE"]
    assert [d["event_id"] for d in result.drift_events if d["stream_kind"] == "FEATURE"] == [
        d["event_id"] for d in features
    ]
    assert result.count("joined_labels") == reference.count("joined_labels")


# -- outcomes read ahead of their predictions ---------------------------------------------------


def _variable_delay_streams(n: int, seed: int = 21) -> tuple[list, list]:
    """Predictions in order, and outcomes in the order their labels become known (random
    delays of 1..80 steps, so outcome order is not prediction order)."""
    stream = SyntheticStream("late", n_features=2, seed=seed, change_at=n // 2)
    rng = np.random.default_rng(seed)
    pairs = list(stream.events(n))
    delays = rng.integers(1, 80, n)
    outcomes = []
    for i, (p, o) in enumerate(pairs):
        outcomes.append((i + delays[i], dict(o, event_time=p["event_time"] + delays[i] * 10)))
    outcomes.sort(key=lambda item: item[0])
    return pairs, outcomes


def test_outcomes_read_ahead_wait_for_their_predictions_and_decide_the_same():
    n = 3000
    pairs, outcomes = _variable_delay_streams(n)
    pred_msgs = [
        SourceMessage(topics.PREDICTIONS, 0, i, b"l", CODEC.encode("PredictionEvent", p))
        for i, (p, _) in enumerate(pairs)
    ]
    out_msgs = [
        SourceMessage(topics.OUTCOMES, 0, i, b"l", CODEC.encode("OutcomeEvent", o))
        for i, (_, o) in enumerate(outcomes)
    ]
    # live: each outcome is read right after the prediction step its label became known at
    live, j = [], 0
    for i, message in enumerate(pred_msgs):
        live.append(message)
        while j < len(outcomes) and outcomes[j][0] <= i:
            live.append(out_msgs[j])
            j += 1
    live += out_msgs[j:]
    (reference,) = run([live])
    assert any(d["stream_kind"] == "ERROR" for d in reference.drift_events)

    # catching up: every outcome is fetched before the predictions, in small batches
    processor = BatchProcessor(CODEC, ProcessorConfig(profiles=WINDOWS))

    def caught_up(partition: int) -> bool:
        state = processor.states[partition]
        return state.next_offsets.get(topics.PREDICTIONS, 0) >= n

    behind = out_msgs + pred_msgs
    results = [
        processor.process(behind[k : k + 400], caught_up) for k in range(0, len(behind), 400)
    ]
    assert results[0].counters["outcomes_held"] == 400  # nothing applied before predictions
    assert not processor.holding()
    assert drift_ids(results) == drift_ids([reference])
    assert sum(r.count("joined_labels") for r in results) == n
    # the held outcomes were never committed: the checkpoint stops before them
    first = BatchProcessor(CODEC, ProcessorConfig(profiles=WINDOWS))
    first.process(behind[:400], lambda p: False)
    assert topics.OUTCOMES not in first.states[0].next_offsets


def _interleaved(streams: list[SyntheticStream], n: int, partitions: int) -> list[SourceMessage]:
    """Several models over ``partitions`` partitions (model i on partition i % partitions),
    their events interleaved step by step, each outcome 30 steps after its prediction."""
    out: list[SourceMessage] = []
    offsets: dict[tuple[str, int], int] = {}
    events = [list(s.events(n)) for s in streams]

    def add(topic: str, partition: int, name: str, record: dict, value: bytes | None = None):
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        value = CODEC.encode(name, record) if value is None else value
        out.append(SourceMessage(topic, partition, offset, record["model_id"].encode(), value))

    for i in range(n):
        for k, pairs in enumerate(events):
            partition = k % partitions
            add(topics.PREDICTIONS, partition, "PredictionEvent", pairs[i][0])
            if i % 97 == 13 and k == 0:  # a bad message now and then on partition 0
                add(topics.PREDICTIONS, partition, "", pairs[i][0], b"\x00\x00\x00\x01junk")
            if i >= 30:
                add(topics.OUTCOMES, partition, "OutcomeEvent", pairs[i - 30][1])
    return out


def _everything(results) -> dict[str, list]:
    tables = ("predictions", "outcomes", "joined_labels", "drift_events", "retraining_requests")
    out: dict[str, list] = {
        t: sorted(repr(sorted(r.items())) for res in results for r in res.table_rows(t))
        for t in tables
    }
    out["dead_letters"] = sorted(
        (d.source.topic, d.source.partition, d.source.offset, d.reason)
        for res in results
        for d in res.dead_letters
    )
    return out


def test_single_events_in_bulk_equal_one_message_at_a_time():
    """Batches of single events take the columnar path (whole partitions at once); one
    message per batch takes the per-message path. With bad messages, several models and
    partitions, replays and a restart, both must store and decide exactly the same."""
    streams = [
        SyntheticStream(f"bulk-{k}", n_features=3, seed=10 + k, change_at=700) for k in range(3)
    ]
    msgs = _interleaved(streams, 1200, partitions=2)
    one_by_one = run([[m] for m in msgs])
    rng = np.random.default_rng(5)
    cuts = sorted(rng.choice(len(msgs), 9, replace=False).tolist())
    batches = [msgs[a:b] for a, b in zip([0, *cuts], [*cuts, len(msgs)], strict=True)]
    # a redelivery overlapping the batch before it, after a restart
    batches.insert(5, msgs[cuts[2] : cuts[4]])
    in_bulk = run(batches, restart_between=True)
    assert sum(r.counters["replayed"] for r in in_bulk) == cuts[4] - cuts[2]
    # (within a batch, models are applied one after another: compare as sets)
    assert sorted(drift_ids(in_bulk)) == sorted(drift_ids(one_by_one))
    assert _everything(in_bulk) == _everything(one_by_one)
    assert len(_everything(one_by_one)["dead_letters"]) > 0


# -- what the sequential detectors see ----------------------------------------------------------


def _regression_messages(n: int, change_at: int, seed: int = 4) -> tuple[list[SourceMessage], np.ndarray]:
    """A regression model on lognormal targets, predicted as y * exp(N(0, sigma)); sigma
    0.1, then 0.5 from ``change_at``. Each outcome right after its prediction. Returns the
    messages and the relative errors |y - ŷ| / (|y| + |ŷ|)."""
    rng = np.random.default_rng(seed)
    y = rng.lognormal(0.0, 1.0, n)
    sigma = np.where(np.arange(n) < change_at, 0.1, 0.5)
    predicted = y * np.exp(rng.normal(0.0, 1.0, n) * sigma)
    out = []
    for i in range(n):
        ident = f"r-{i}"
        prediction = {
            "event_id": ident, "model_id": "reg", "model_version": "1",
            "event_time": 1_700_000_000_000 + 10 * i, "numeric_features": {"x": float(y[i])},
            "categorical_features": {}, "segments": {}, "prediction_label": None,
            "prediction_score": None, "prediction_value": float(predicted[i]),
            "probabilities": None,
        }  # fmt: skip
        outcome = {"event_id": f"o-{ident}", "prediction_id": ident, "model_id": "reg",
                   "event_time": prediction["event_time"] + 5, "label": None,
                   "value": float(y[i])}  # fmt: skip
        out += [
            SourceMessage(topics.PREDICTIONS, 0, i, b"reg", CODEC.encode("PredictionEvent", prediction)),
            SourceMessage(topics.OUTCOMES, 0, i, b"reg", CODEC.encode("OutcomeEvent", outcome)),
        ]
    return out, np.abs(y - predicted) / (y + np.abs(predicted))


def test_a_regression_error_stream_is_the_bounded_relative_error():
    # ADWIN's bound needs values in [0, 1]: the error stream of a regression carries the
    # relative error (its detector's estimate is their mean), the stored rows the absolute
    # one, and the unbounded predicted value gets no sequential detector
    messages, relative = _regression_messages(2000, change_at=2000)
    (result,) = run([messages])
    joined = result.table_rows("joined_labels")
    assert max(row["error"] for row in joined) > 1.0  # absolute errors, unbounded
    (stats,) = [r for r in result.rows["detector_stats"] if r["stream_kind"] == "ERROR"]
    assert stats["n_values"] == 2000
    assert stats["estimate"] == pytest.approx(relative.mean())
    assert not [r for r in result.rows["detector_stats"] if r["stream_kind"] == "PREDICTION"]
    assert not [d for d in result.drift_events if d["stream_kind"] == "ERROR"]


def test_a_regression_error_growing_is_detected_on_the_relative_error():
    messages, _ = _regression_messages(6000, change_at=3000)
    (result,) = run([messages])
    errors = [d for d in result.drift_events if d["stream_kind"] == "ERROR"]
    assert errors and 3000 <= min(d["position"] for d in errors) < 3500
    assert float(errors[0]["evidence"]["mean_after"]) > float(errors[0]["evidence"]["mean_before"])
    assert len(result.retraining) == 1


def test_the_score_stream_is_clipped_to_the_unit_interval():
    stream = SyntheticStream("clip", n_features=1, seed=5)
    records = []
    for i, (prediction, _) in enumerate(stream.events(300)):
        # a model that reports raw margins: the bound holds on [0, 1] only
        prediction["prediction_score"] = 3.0 if i % 2 else -3.0
        records.append(
            SourceMessage(topics.PREDICTIONS, 0, i, b"clip", CODEC.encode("PredictionEvent", prediction))
        )
    (result,) = run([records])
    (stats,) = [r for r in result.rows["detector_stats"] if r["stream_kind"] == "PREDICTION"]
    assert stats["stream_name"] == "score" and stats["estimate"] == pytest.approx(0.5)


def _join_rows(state: PartitionState) -> dict[str, dict[str, tuple[str, ...]]]:
    """Each join's live rows by id (slot numbers may differ between equal states)."""
    out = {}
    for model, join in state.joins.items():
        names = [*join.cols, *(f"segment:{n}" for n in join.segments)]
        columns = [*join.cols.values(), *join.segments.values()]
        live = np.flatnonzero(join.cols["tag"] != 0).tolist()
        out[model] = {
            join.cols["id"][slot]: tuple(f"{n}={c[slot]!r}" for n, c in zip(names, columns, strict=True))
            for slot in live
        }
    return out


@pytest.mark.parametrize("join_ttl_ms", [3_600_000, 2_000])
def test_a_checkpoint_chain_restores_the_state_and_the_decisions_after_it(
    join_ttl_ms, monkeypatch
):
    """A worker checkpoints after every batch: a full record, then deltas of the joins. A
    crash after any batch restores, from the chain so far, the joins as they were, and a
    worker resumed from it decides what the uninterrupted one does; with outcomes read ahead
    of their predictions (early outcomes) and, at the short TTL, joined and pending predictions
    expiring between checkpoints."""
    # long chains whatever the models' share of a record (they are written whole each time)
    monkeypatch.setattr(state_module, "DELTA_BUDGET", 50.0)
    config = ProcessorConfig(profiles=WINDOWS, join_ttl_ms=join_ttl_ms)
    stream = SyntheticStream("m-chain", n_features=3, seed=5, change_at=2500)
    msgs = messages(stream, 4000)
    predictions = [m for m in msgs if m.topic == topics.PREDICTIONS]
    outcomes = [m for m in msgs if m.topic == topics.OUTCOMES]
    rng = np.random.default_rng(7)
    batches, p, o = [], 0, 0
    while p < len(predictions) or o < len(outcomes):
        p_end = min(len(predictions), p + int(rng.integers(20, 300)))
        # outcomes up to 150 steps ahead of their predictions, or behind them
        o_end = min(len(outcomes), max(o, p_end - 50 + int(rng.integers(-100, 150))))
        if p_end == len(predictions):
            o_end = len(outcomes)
        batches.append(predictions[p:p_end] + outcomes[o:o_end])
        p, o = p_end, o_end

    processor = BatchProcessor(CODEC, config)
    chain: list[bytes] = []
    results, chains = [], []
    for batch in batches:
        results.append(processor.process(batch))
        record, full = processor.states[0].checkpoint()
        chain = [record] if full else [*chain, record]
        chains.append(chain)
        restored = PartitionState.from_chain(chain, config.join_ttl_ms, config.orphan_ttl_ms)
        assert _join_rows(restored) == _join_rows(processor.states[0])
    assert max(len(c) for c in chains) > 10  # deltas were written and restored
    assert drift_ids(results)

    for crash in (len(batches) // 3, len(batches) // 2, 2 * len(batches) // 3):
        state = PartitionState.from_chain(chains[crash], config.join_ttl_ms, config.orphan_ttl_ms)
        resumed = BatchProcessor(CODEC, config, {0: state})
        after = [resumed.process(batch) for batch in batches[crash + 1 :]]
        assert drift_ids(after) == drift_ids(results[crash + 1 :])
        assert [len(r.dead_letters) for r in after] == [
            len(r.dead_letters) for r in results[crash + 1 :]
        ]
        assert _join_rows(resumed.states[0]) == _join_rows(processor.states[0])
        # the resumed worker's first checkpoint starts a new chain (its size is unknown)
        assert resumed.states[0].checkpoint()[1]
