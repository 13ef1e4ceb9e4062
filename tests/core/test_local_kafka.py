"""The local broker is a real Kafka: topics, produce, consume, restart with data kept."""

from __future__ import annotations

import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from driftline.local_kafka import LocalKafka, free_port


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        for _ in range(60):
            for message in consumer.consume(1000, 0.5):
                if message.error() is None:
                    values.append(message.value())
            if len(values) >= expected:
                break
    finally:
        consumer.close()
    return values


def test_broker_round_trip_and_restart_keeps_data(tmp_path):
    broker = LocalKafka(tmp_path / "kafka", port=free_port(), controller_port=free_port()).start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for future in admin.create_topics([NewTopic("t.roundtrip", 3, 1)]).values():
            future.result(30)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
        for i in range(500):
            producer.produce("t.roundtrip", key=str(i % 7), value=f"v{i}".encode())
        assert producer.flush(30) == 0
        assert sorted(_consume_all(broker.bootstrap, "t.roundtrip", 500)) == sorted(
            f"v{i}".encode() for i in range(500)
        )
    finally:
        broker.stop()
    assert not broker.running()

    restarted = LocalKafka(broker.data_dir, port=broker.port, controller_port=broker.controller_port)
    restarted.start()
    try:
        assert len(_consume_all(restarted.bootstrap, "t.roundtrip", 500)) == 500
    finally:
        restarted.stop()
