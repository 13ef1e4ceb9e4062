"""The control-plane contract every reader shares (schemas/control_plane.py, silences.py,
topics.py): one record format, one "higher version wins" view, one silence semantics, one
topic spec, and one follower, tested once here and on the real broker."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource
from driftline.schemas import topics
from driftline.schemas.control_plane import (
    CompactedTopicFollower,
    Record,
    Unavailable,
    VersionedView,
    encode_value,
)
from driftline.schemas.rules import RuleBook
from driftline.schemas.silences import Silence, SilenceError, parse_time_ms

from driftline.admin import ensure_topics
from driftline.delivery.subscriptions import ControlPlaneFollower as DeliveryView

STAMP = "2026-01-01T00:00:00.000Z"


def _silence(ident: str, data: dict, version: int = 1) -> tuple[str, bytes]:
    return f"silence:{ident}", encode_value(
        Record("silence", ident, version, STAMP, STAMP, "t", data)
    )


def test_the_view_keeps_the_highest_version_and_skips_what_is_not_a_record() -> None:
    view = VersionedView()
    r2 = Record("rule", "a", 2, STAMP, STAMP, "t", {"n": 2})
    assert view.apply("rule:a", encode_value(r2), 0, 5)
    assert not view.apply("rule:a", encode_value(Record("rule", "a", 1, STAMP, STAMP, "t", {})))
    assert not view.apply("rule:a", b"{not json")
    assert not view.apply("rule:b", encode_value(r2))  # value says rule:a: not this key's
    assert (view.get("rule", "a").data, view.get("rule", "a").offset) == ({"n": 2}, 5)
    assert view.apply(b"rule:a", None) and not view.apply(b"rule:a", None)
    assert len(view) == 0


def test_one_silence_semantics() -> None:
    ok = {"matchers": [{"name": "model_id", "value": "churn", "op": "="}],
          "ends_at": "2026-01-02T00:00:00"}  # fmt: skip
    s = Silence.from_record("s", 1, ok)
    # no zone is UTC; no starts_at is active from the start of time
    assert s.ends_ms == parse_time_ms("2026-01-02T00:00:00Z") and s.active(0)
    assert s.mutes({"model_id": "churn"}, s.ends_ms - 1)
    assert not s.mutes({"model_id": "churn"}, s.ends_ms)
    for broken in (
        {**ok, "ends_at": None},  # delivery used to read this as "forever"
        {**ok, "matchers": []},  # would mute everything
        {**ok, "matchers": [{"name": "model_id", "value": "x", "op": "=="}]},  # unknown op
        {**ok, "ends_at": "tomorrow"},
    ):
        with pytest.raises(SilenceError):
            Silence.from_record("s", 1, broken)


def test_workers_and_delivery_read_the_same_silences() -> None:
    """The same records through the workers' RuleBook and the delivery view: the same usable
    silences, the same ones skipped."""
    records = [
        _silence(
            "ok",
            {
                "matchers": [{"name": "team", "value": "ml*", "op": "=~"}],
                "starts_at": STAMP,
                "ends_at": "2026-01-02T00:00:00Z",
            },
        ),  # fmt: skip
        _silence("no-end", {"matchers": [{"name": "team", "value": "ml"}]}),
        _silence(
            "bad-op",
            {
                "matchers": [{"name": "team", "value": "ml", "op": "~"}],
                "ends_at": "2026-01-02T00:00:00Z",
            },
        ),  # fmt: skip
    ]
    book, delivery = RuleBook(), DeliveryView()
    for key, value in records:
        book.apply(key, value)
        delivery.apply(key, value)
    assert book.snapshot().silences == tuple(delivery.silences())
    assert [s.id for s in delivery.silences()] == ["ok"]
    at = parse_time_ms("2026-01-01T12:00:00Z")
    assert delivery.silences()[0].mutes({"team": "ml-platform"}, at)


def test_every_topic_has_one_spec() -> None:
    assert set(topics.TOPIC_SPECS) == set(topics.ALL_TOPICS)
    rules = topics.topic_spec(topics.RULES)
    assert (rules.partitions, dict(rules.config)) == (1, {"cleanup.policy": "compact"})
    assert topics.topic_spec(topics.PREDICTIONS).partitions is None  # the deployment's count


# -- on the real broker ------------------------------------------------------------------------


def _rules_topic_layout(bootstrap: str, topic: str) -> tuple[int, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(10)
    return partitions, configs["cleanup.policy"].value


@pytest.mark.e2e
def test_every_creator_makes_the_control_plane_topic_the_same_way(kafka_broker) -> None:
    bootstrap = kafka_broker.bootstrap
    ensure_topics(bootstrap, partitions=2)  # the admin path (done by the session fixture too)
    assert _rules_topic_layout(bootstrap, topics.RULES) == (1, "compact")
    # the API path: a follower that may create its topic (any name is made like the rules)
    name = f"driftline.rules.test-{uuid.uuid4().hex[:8]}"
    with CompactedTopicFollower(bootstrap, lambda *a: None, name, create=True) as follower:
        assert follower.wait_ready(30)
    assert _rules_topic_layout(bootstrap, name) == (1, "compact")


@pytest.mark.e2e
def test_the_follower_reads_from_the_earliest_offset_and_says_when_it_is_ready(kafka_broker):
    bootstrap = kafka_broker.bootstrap
    name = f"driftline.rules.test-{uuid.uuid4().hex[:8]}"
    # a reader that may not create the topic waits for it, then names it in its error
    with pytest.raises(Unavailable, match=name):
        CompactedTopicFollower(bootstrap, lambda *a: None, name).start(timeout=1.0)
    producer = Producer({"bootstrap.servers": bootstrap})
    with CompactedTopicFollower(bootstrap, lambda *a: None, name, create=True) as creator:
        assert creator.wait_ready(30)
    for i in range(5):
        record = Record("rule", "a", i + 1, STAMP, STAMP, "t", {"i": i})
        producer.produce(name, key=b"rule:a", value=encode_value(record))
    assert producer.flush(30) == 0
    view = VersionedView()
    with CompactedTopicFollower(bootstrap, view.apply, name) as follower:
        assert follower.wait_ready(30) and follower.ready()
        assert view.get("rule", "a").data == {"i": 4} and follower.lag() == 0
        # later records arrive without a restart
        producer.produce(name, key=b"rule:a", value=None)
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 30
        while view.get("rule", "a") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert view.get("rule", "a") is None
    assert not follower.ready()  # closed
