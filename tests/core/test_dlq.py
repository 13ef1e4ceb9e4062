"""``driftline dlq``: listing dead letters and replaying them, on the real broker with a real
worker (which dead-letters what it refuses, and drops replayed events it has already taken)."""

from __future__ import annotations

import argparse
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from driftline.schemas import Codec, topics
from e2e_support import lag, query_store, start_worker, stop_worker, wait_for, worker_env

from driftline.admin import ensure_topics
from driftline.cli import main
from driftline.deadletters import (
    DeadLetter,
    add_dlq_command,
    describe_value,
    parse_since,
    read_dead_letters,
    replay_dead_letters,
)
from driftline.synthetic import SyntheticStream

N = 20  # events of a model the first worker does not know


# -- without a broker -------------------------------------------------------------------------


def test_decoded_view_of_a_valid_record_and_previews_of_the_rest() -> None:
    prediction, _ = SyntheticStream("late", n_features=2, seed=3).step(0)
    view = describe_value(Codec().encode("PredictionEvent", prediction))
    assert view.startswith("PredictionEvent {") and '"model_id":"late"' in view
    assert describe_value(b"plain text") == "utf-8: 'plain text'"
    assert describe_value(b"\xff\xfe\x01") == "hex fffe01"
    assert describe_value(b"\x00\x00\x00\x00\x01\xff").startswith("not decodable (")
    assert describe_value(None) == "(empty)"
    assert describe_value(b"x" * 100).endswith("(+36 bytes)")


def test_since_accepts_durations_and_times_and_says_what_is_wrong() -> None:
    assert parse_since("90s") < parse_since("1s")
    assert parse_since("2026-01-01T00:00:00+00:00") == 1767225600000
    with pytest.raises(ValueError, match="duration"):
        parse_since("yesterday")


def test_replay_counts_letters_per_source_topic_in_a_dry_run() -> None:
    def letter(source: str | None) -> DeadLetter:
        headers = {topics.HEADER_REASON: "unknown_model"}
        if source:
            headers[topics.HEADER_SOURCE_TOPIC] = source
        return DeadLetter(0, 0, 0, b"k", b"v", headers)

    letters = [letter(topics.PREDICTIONS), letter(topics.PREDICTIONS), letter(None)]
    # dry run: nothing is produced, so no broker is needed
    counts = replay_dead_letters("unused:9092", letters, dry_run=True)
    assert counts == {topics.PREDICTIONS: 2, "": 1}


def test_dlq_command_parses_its_options() -> None:
    parser = argparse.ArgumentParser()
    add_dlq_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dlq", "list", "--limit", "5", "--reason", "a", "--reason", "b"])
    assert (args.limit, args.reason, args.since) == (5, ["a", "b"], None)
    args = parser.parse_args(["dlq", "replay", "--dry-run", "--since", "2h"])
    assert args.dry_run and callable(args.handler)
    with pytest.raises(SystemExit):
        parser.parse_args(["dlq", "list", "--limit", "0"])


# -- on the broker, with the worker ------------------------------------------------------------


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"p-{uuid.uuid4()}"})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts
        }
    finally:
        consumer.close()


def _cli(capsys: Any, bootstrap: str, *argv: str) -> str:
    capsys.readouterr()
    assert main(["--bootstrap", bootstrap, "dlq", *argv]) == 0
    return capsys.readouterr().out


@pytest.mark.e2e
def test_list_then_replay_after_a_fix_and_again_without_duplicates(
    fresh_kafka: Any, tmp_path: Path, capsys: Any
) -> None:
    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 2)
    codec = Codec()
    stream = SyntheticStream("late", n_features=3, seed=7)
    events = [codec.encode("PredictionEvent", p) for p, _ in stream.events(N)]
    _produce(bootstrap, topics.PREDICTIONS, [(b"late", v) for v in events])
    _produce(bootstrap, topics.PREDICTIONS, [(b"late", b"garbage")])

    data = tmp_path / "data"
    log = tmp_path / "worker.log"
    app_id = f"worker-{uuid.uuid4().hex[:8]}"

    def run_worker(known: str) -> Any:
        env = worker_env(bootstrap, data, app_id, DRIFTLINE_KNOWN_MODELS=known)
        return start_worker(env, log)

    # 1. a worker that does not know model "late" yet: 20 unknown_model letters, 1 garbage
    worker = run_worker('["known"]')
    try:
        wait_for(lambda: lag(bootstrap, app_id) == 0, 240, "the worker to catch up", worker, log)
    finally:
        assert stop_worker(worker) in (0, -signal.SIGTERM), log.read_text()[-3000:]

    listed = _cli(capsys, bootstrap, "list", "--reason", "unknown_model", "--limit", "1000")
    assert f"{N} dead letter(s)" in listed
    entries = [line for line in listed.splitlines() if "  unknown_model  " in line]
    assert len(entries) == N and all(f"{topics.PREDICTIONS}[" in e for e in entries)
    assert listed.count("PredictionEvent {") == N and '"model_id":"late"' in listed
    garbage = _cli(capsys, bootstrap, "list", "--reason", topics.NOT_CONFLUENT_FRAMED)
    assert "utf-8: 'garbage'" in garbage and "1 dead letter(s)" in garbage
    assert "1 dead letter(s)" in _cli(capsys, bootstrap, "list", "--limit", "1")
    assert "0 dead letter(s)" in _cli(capsys, bootstrap, "list", "--since", "2099-01-01T00:00")

    before = _ends(bootstrap, topics.PREDICTIONS)
    dry = _cli(capsys, bootstrap, "replay", "--reason", "unknown_model", "--dry-run")
    assert dry.strip() == f"would replay {N} dead letter(s): {N} to {topics.PREDICTIONS}"
    assert _ends(bootstrap, topics.PREDICTIONS) == before  # nothing produced

    # 2. the fix: the model is registered; replay, then replay again by mistake
    worker = run_worker('["known", "late"]')
    try:
        for _ in range(2):
            out = _cli(capsys, bootstrap, "replay", "--reason", "unknown_model")
            assert out.strip() == f"replayed {N} dead letter(s): {N} to {topics.PREDICTIONS}"
            wait_for(lambda: lag(bootstrap, app_id) == 0, 240, "the replay", worker, log)
    finally:
        assert stop_worker(worker) in (0, -signal.SIGTERM), log.read_text()[-3000:]

    # the second replay was recognised by the events' ids and refused as duplicates
    duplicates = read_dead_letters(bootstrap, reasons=[topics.DUPLICATE])
    assert len(duplicates) == N
    assert {d.value for d in duplicates} == set(events)
    counts = query_store(
        data,
        {
            "late": "SELECT count(), uniqExact(event_id) FROM predictions FINAL "
            "WHERE model_id = 'late'",
            "rows": "SELECT count() FROM predictions WHERE model_id = 'late'",
        },
    )
    assert counts["late"] == [[N, N]]
    assert counts["rows"] == [[N]]  # not even a duplicate row waiting for a merge
    # a plain replay leaves the duplicates alone (they were processed once already)
    out = _cli(capsys, bootstrap, "replay", "--dry-run")
    assert out.strip() == f"would replay {N + 1} dead letter(s): {N + 1} to {topics.PREDICTIONS}"
