"""The control plane on the real broker: record format on the wire, tombstones, and a lost
race between two writers (API replicas)."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from conftest import auth
from driftline.api import ControlPlane, InMemoryControlPlane
from driftline.api.control_plane import MUST_NOT_EXIST, NotFound, VersionConflict
from driftline.schemas import topics


def _raw_records(bootstrap: str, key: str) -> list[tuple[bytes | None, dict[str, bytes]]]:
    """Every record of ``key`` on the rules topic, straight from Kafka."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "enable.partition.eof": True}
    )
    try:
        partitions = consumer.list_topics(topics.RULES, timeout=10).topics[topics.RULES].partitions
        consumer.assign([TopicPartition(topics.RULES, p, 0) for p in partitions])
        found, eof = [], set()
        while len(eof) < len(partitions):
            msg = consumer.poll(10)
            assert msg is not None, "no end of partition within 10 s"
            if msg.error():
                eof.add(msg.partition())
            elif msg.key() == key.encode():
                found.append((msg.value(), dict(msg.headers() or [])))
        return found
    finally:
        consumer.close()


def test_record_format_on_the_topic(control_plane: ControlPlane) -> None:
    ident = uuid.uuid4().hex
    control_plane.put("rule", ident, {"name": "a"}, actor="alice", expect=MUST_NOT_EXIST)
    control_plane.put("rule", ident, {"name": "b"}, actor="bob", expect=1)
    control_plane.delete("rule", ident, actor="carol", expect=2)

    records = _raw_records(control_plane.bootstrap, f"rule:{ident}")
    assert [r[0] is None for r in records] == [False, False, True]
    first = json.loads(records[0][0])
    assert set(first) == {"kind", "id", "version", "created_at", "updated_at", "updated_by", "data"}
    assert (first["kind"], first["id"], first["version"], first["data"]) == (
        "rule",
        ident,
        1,
        {"name": "a"},
    )
    assert first["updated_at"].endswith("Z")
    second = json.loads(records[1][0])
    assert (second["version"], second["updated_by"], second["created_at"]) == (
        2,
        "bob",
        first["created_at"],
    )
    tombstone_headers = records[2][1]
    assert tombstone_headers == {
        "driftline.kind": b"rule",
        "driftline.version": b"3",
        "driftline.updated_by": b"carol",
        "driftline.op": b"delete",
    }


def test_version_checks(control_plane: ControlPlane) -> None:
    ident = uuid.uuid4().hex
    control_plane.put("silence", ident, {"x": 1}, actor="t", expect=MUST_NOT_EXIST)
    with pytest.raises(VersionConflict):
        control_plane.put("silence", ident, {"x": 2}, actor="t", expect=MUST_NOT_EXIST)
    with pytest.raises(VersionConflict):
        control_plane.put("silence", ident, {"x": 2}, actor="t", expect=5)
    with pytest.raises(NotFound):
        control_plane.put("silence", uuid.uuid4().hex, {"x": 2}, actor="t", expect=1)
    assert control_plane.put("silence", ident, {"x": 3}, actor="t").version == 2  # unconditional


def test_a_replica_that_loses_a_race_gets_409_and_repairs_the_log(
    control_plane: ControlPlane,
) -> None:
    """Two API processes both at version 1 write version 2: the first on the topic wins in
    every view; the loser answers 409 and re-publishes the winner above its own record, so
    compaction (which keeps the last record per key) cannot resurrect the losing write."""
    ident = uuid.uuid4().hex
    control_plane.put("rule", ident, {"name": "v1"}, actor="a", expect=MUST_NOT_EXIST)
    replica = ControlPlane(control_plane.bootstrap).start()
    try:
        assert replica.wait_ready(30)
        assert replica.get("rule", ident).version == 1
        send = replica._send

        def send_after_the_other_replica(key, value, headers):  # type: ignore[no-untyped-def]
            replica._send = send  # once
            control_plane.put("rule", ident, {"name": "winner"}, actor="a", expect=1)
            return send(key, value, headers)

        replica._send = send_after_the_other_replica
        with pytest.raises(VersionConflict, match="concurrently"):
            replica.put("rule", ident, {"name": "loser"}, actor="b", expect=1)

        fresh = ControlPlane(control_plane.bootstrap).start()
        try:
            assert fresh.wait_ready(30)
            for view in (control_plane, replica, fresh):
                assert view.get("rule", ident).data == {"name": "winner"}
        finally:
            fresh.close()
        last = _raw_records(control_plane.bootstrap, f"rule:{ident}")[-1]
        assert json.loads(last[0])["data"] == {"name": "winner"}
    finally:
        replica.close()


def test_in_memory_control_plane_applies_the_same_rules() -> None:
    cp = InMemoryControlPlane()
    cp.put("ack", "f", {"comment": "a"}, actor="t")
    assert cp.put("ack", "f", {"comment": "b"}, actor="t").version == 2
    # An older version arriving late (a lost race, a replay) is ignored.
    from driftline.api.control_plane import Record, encode_value

    old = Record("ack", "f", 1, "t0", "t0", "x", {"comment": "old"})
    cp._apply("ack:f", encode_value(old), 0, 99)
    assert cp.get("ack", "f").data == {"comment": "b"}
    cp._apply("ack:f", b"{not json", 0, 100)
    assert cp.get("ack", "f").data == {"comment": "b"}
    cp._apply("ack:f", None, 0, 101)
    assert cp.get("ack", "f") is None


def test_a_write_the_view_never_sees_is_a_503(control_plane: ControlPlane, tokens) -> None:  # type: ignore[no-untyped-def]
    from api_factories import drift_rule
    from driftline.api import ApiConfig, create_app
    from fastapi.testclient import TestClient

    stalled = ControlPlane(control_plane.bootstrap, write_timeout=0.5).start()
    try:
        assert stalled.wait_ready(30)
        stalled.follower.close()  # the reader stops: the view will not see the next write
        client = TestClient(
            create_app(ApiConfig(), control_plane=stalled), headers=auth(tokens["write"])
        )
        response = client.post("/v1/rules", json=drift_rule())
        assert response.status_code == 503
        assert "did not see its own write" in response.json()["detail"]
        assert client.get("/ready").status_code == 503
    finally:
        stalled.close()
