"""Alert delivery: webhooks (signatures, retries, dead letters, isolation), silences,
Alertmanager (the real binary) and the SSE feed, on the real broker where Kafka is involved.

The webhook receiver is a real HTTP server on 127.0.0.1 that checks every signature and
dedups on the event id, as docs/delivery.md tells subscribers to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from driftline.schemas import topics
from support.alertmanager import running_alertmanager
from support.receiver import WebhookReceiver

from driftline.admin import ensure_topics
from driftline.delivery import (
    ALERTMANAGER_FAILED,
    WEBHOOK_FAILED,
    AlertmanagerForwarder,
    ControlPlaneFollower,
    DeliveryConfig,
    DeliveryService,
    Dispatcher,
    RetryPolicy,
    Source,
    add_delivery_command,
    encode_alert,
    normalize_alert,
)
from driftline.delivery.service import OffsetLedger
from driftline.delivery.subscriptions import Subscription, matching_subscriptions
from driftline.local_kafka import free_port

SECRET = "test-secret-0123456789"
FAST = RetryPolicy(max_tries=3, timeout=20.0, backoff_base=0.01, backoff_max=0.05)
WAIT = 30.0  # upper bound for "eventually": a failure shows as a timeout, never a pass


# -- a webhook receiver (tests/support/receiver.py) ---------------------------------------

Receiver = WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(SECRET)
    try:
        yield r
    finally:
        r.close()


class ListSink:
    """Dead letters kept in memory (the Kafka sink is tested on the broker below)."""

    def __init__(self) -> None:
        self.letters: list[tuple[Source, str, str, list[tuple[str, str]]]] = []

    async def send(self, source: Source, reason: str, detail: str, extra: Any = ()) -> None:
        self.letters.append((source, reason, detail, list(extra)))


def subscription_record(
    ident: str, url: str, *, secret: str = SECRET, version: int = 1, **data: Any
) -> tuple[str, bytes]:
    """A control-plane record as the API writes it (api/control_plane.py)."""
    value = {
        "kind": "subscription",
        "id": ident,
        "version": version,
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z",
        "updated_by": "test",
        "data": {"name": ident, "url": url, "secret": secret, "enabled": True, **data},
    }
    return f"subscription:{ident}", json.dumps(value).encode()


def make_alert(**fields: Any) -> dict[str, Any]:
    now = int(time.time() * 1000)
    alert = {
        "event_id": f"ev-{uuid.uuid4().hex[:12]}",
        "fingerprint": f"fp-{uuid.uuid4().hex[:12]}",
        "rule_id": "r-1",
        "rule_version": 1,
        "rule_name": "PredictionDrift",
        "status": "FIRING",
        "severity": "critical",
        "model_id": "churn",
        "labels": {"team": "ml"},
        "annotations": {"summary": "drift on churn"},
        "starts_at": now - 60_000,
        "ends_at": None,
        "updated_at": now,
        "value": 0.42,
        "trigger_event_ids": ["d-1"],
        "silenced": False,
        "silence_ids": [],
        "acknowledged": False,
        "notify": [],
        "inhibited_by": None,
    }
    alert.update(fields)
    return normalize_alert(alert)


def service_with(*records: tuple[str, bytes], policy: RetryPolicy = FAST, **config: Any):
    follower = ControlPlaneFollower()
    for key, value in records:
        follower.apply(key, value)
    sink = ListSink()
    service = DeliveryService(
        DeliveryConfig(bootstrap="unused:9092", policy=policy, **config),
        follower=follower,
        dead_letters=sink,
    )
    return service, sink


SOURCE = Source(topics.ALERTS, 0, 7, b"churn", b"{}")


# -- matching ---------------------------------------------------------------------------------


def test_matching_needs_notify_and_filters_narrow() -> None:
    plain = Subscription.from_data("a", 1, {"url": "http://x", "secret": SECRET})
    crit = Subscription.from_data(
        "b", 1, {"url": "http://x", "filters": {"models": ["churn*"], "severities": ["critical"]}}
    )
    team = Subscription.from_data(
        "c", 1, {"url": "http://x", "filters": {"labels": {"team": "ml"}}}
    )
    off = Subscription.from_data("d", 1, {"url": "http://x", "enabled": False})
    subs = [plain, crit, team, off]

    def ids(**fields: Any) -> list[str]:
        return [s.id for s in matching_subscriptions(subs, make_alert(**fields))]

    everyone = ["a", "b", "c", "d"]
    assert ids() == []  # nobody named: nobody told, whatever the filters
    assert ids(notify=everyone) == ["a", "b", "c"]  # disabled: never
    assert ids(notify=everyone, severity="info") == ["a", "c"]
    assert ids(notify=everyone, model_id="fraud", labels={}) == ["a"]
    assert ids(notify=["b"], model_id="churn-eu") == ["b"]


def test_follower_applies_versions_and_tombstones() -> None:
    follower = ControlPlaneFollower()
    follower.apply(*subscription_record("s", "http://one", version=2))
    follower.apply(*subscription_record("s", "http://old", version=1))  # lost race: ignored
    assert [s.url for s in follower.subscriptions()] == ["http://one"]
    follower.apply(*subscription_record("s", "http://two", version=3))
    assert [s.url for s in follower.subscriptions()] == ["http://two"]
    follower.apply("subscription:s", None)
    assert follower.subscriptions() == []
    follower.apply("rule:r-1", b'{"kind": "rule"}')  # other kinds are not ours
    follower.apply("subscription:x", b"not json")  # malformed: skipped, not fatal
    assert follower.subscriptions() == []


# -- webhooks ---------------------------------------------------------------------------------


def test_delivered_once_with_valid_signature(receiver: Receiver) -> None:
    service, sink = service_with(subscription_record("s1", receiver.url("/s1")))
    alert = make_alert(notify=["s1"])
    outcomes = asyncio.run(service.deliver(alert, SOURCE))

    assert [o.ok for o in outcomes] == [True]
    [request] = receiver.to("/s1")
    assert request["signature_ok"] and request["status"] == 200
    headers = request["headers"]
    assert headers["X-Driftline-Event-Id"] == alert["event_id"]
    assert headers["X-Driftline-Signature"].startswith("sha256=")
    assert int(headers["X-Driftline-Timestamp"]) > 0
    body = request["body"]
    assert body["idempotency_key"] == body["event_id"] == alert["event_id"]
    assert body["fingerprint"] == alert["fingerprint"] and body["status"] == "FIRING"
    assert body["subscription_id"] == "s1" and body["labels"] == {"team": "ml"}
    assert sink.letters == []


def test_payload_v2_says_what_drifted_and_where_to_look(receiver: Receiver) -> None:
    service, _ = service_with(subscription_record("s1", receiver.url("/s1")), public_url=PUBLIC)
    alert = make_alert(notify=["s1"], annotations=EVIDENCE)
    asyncio.run(service.deliver(alert, SOURCE))

    [request] = receiver.to("/s1")
    body, fp = request["body"], alert["fingerprint"]
    assert request["signature_ok"]
    assert (body["schema"], body["version"]) == ("driftline.webhook.v2", 2)
    assert body["annotations"] == EVIDENCE  # version 1 fields are all still there
    assert body["summary"] == EVIDENCE["summary"]
    assert body["description"] == EVIDENCE["description"]
    assert body["model"] == {"id": "churn", "version": "7"}
    assert body["rule"] == {"id": "r-1", "name": "PredictionDrift", "version": 1,
                            "severity": "critical"}  # fmt: skip
    assert body["drift"] == {
        "stream": "feature:age",
        "detector": "PSI",
        "test": None,
        "statistic": 0.31,
        "p_value": 0.004,
        "before": 41.2,
        "after": 35.9,
        "drift_event_id": "d-1",
    }
    assert body["window"] == {"start": 1763900000000, "end": 1763903600000}
    assert body["links"] == {
        "dashboard": f"{PUBLIC}/ui/models/churn",
        "alert": f"{PUBLIC}/v1/alerts/{fp}",
        "history": f"{PUBLIC}/v1/alerts/history?fingerprint={fp}",
    }


def test_payload_v2_without_evidence_falls_back_to_the_episode() -> None:
    from driftline.delivery.webhook import webhook_payload

    alert = make_alert(annotations={}, status="RESOLVED", ends_at=123, model_id="a b/c")
    body = webhook_payload(alert, "s1")  # no public URL: the API's local default
    assert body["window"] == {"start": alert["starts_at"], "end": 123}
    assert body["drift"]["statistic"] is None and body["model"]["version"] is None
    assert body["links"]["dashboard"] == "http://localhost:8000/ui/models/a%20b%2Fc"


def test_wrong_secret_is_refused_and_final(receiver: Receiver) -> None:
    # The receiver knows another secret: 401 is a 4xx, final after one try, dead-lettered.
    receiver.secrets["/s1"] = "another-secret-0123456789"
    service, sink = service_with(subscription_record("s1", receiver.url("/s1")))
    [outcome] = asyncio.run(service.deliver(make_alert(notify=["s1"]), SOURCE))
    assert not outcome.ok and outcome.status == 401 and outcome.tries == 1
    assert len(receiver.to("/s1")) == 1
    [(source, reason, detail, extra)] = sink.letters
    assert reason == WEBHOOK_FAILED and "HTTP 401" in detail and source == SOURCE
    assert extra == [("driftline.subscription.id", "s1")]


def test_retried_after_500s_and_429_then_delivered(receiver: Receiver) -> None:
    receiver.script["/flaky"] = [500, 429]
    service, sink = service_with(subscription_record("flaky", receiver.url("/flaky")))
    alert = make_alert(notify=["flaky"])
    [outcome] = asyncio.run(service.deliver(alert, SOURCE))
    assert outcome.ok and outcome.tries == 3
    assert [r["status"] for r in receiver.to("/flaky")] == [500, 429, 200]
    # Same body and signature on every try; the receiver counts the event once.
    assert len({json.dumps(r["body"], sort_keys=True) for r in receiver.to("/flaky")}) == 1
    assert receiver.accepted["/flaky"] == {alert["event_id"]}
    assert sink.letters == []


def test_always_failing_target_is_dead_lettered_after_max_tries(receiver: Receiver) -> None:
    receiver.script["/down"] = [503] * 10
    service, sink = service_with(subscription_record("down", receiver.url("/down")))
    [outcome] = asyncio.run(service.deliver(make_alert(notify=["down"]), SOURCE))
    assert not outcome.ok and outcome.tries == FAST.max_tries
    assert len(receiver.to("/down")) == FAST.max_tries
    [(_, reason, detail, _)] = sink.letters
    assert reason == WEBHOOK_FAILED and f"tries={FAST.max_tries}" in detail and "503" in detail


def test_connection_refused_is_retried_then_dead_lettered() -> None:
    url = f"http://127.0.0.1:{free_port()}/nobody"
    service, sink = service_with(subscription_record("gone", url))
    [outcome] = asyncio.run(service.deliver(make_alert(notify=["gone"]), SOURCE))
    assert not outcome.ok and outcome.tries == FAST.max_tries and outcome.status is None
    assert "ConnectError" in (outcome.error or "")
    assert [letter[1] for letter in sink.letters] == [WEBHOOK_FAILED]


def test_hanging_target_does_not_delay_others(receiver: Receiver) -> None:
    gate = receiver.gates["/slow"] = threading.Event()
    service, sink = service_with(
        subscription_record("slow", receiver.url("/slow")),
        subscription_record("fast", receiver.url("/fast")),
    )

    async def scenario() -> None:
        first = make_alert(notify=["slow", "fast"])
        both = asyncio.create_task(service.deliver(first, SOURCE))
        # The fast target gets the alert while the slow one is parked on our gate ...
        ok = await asyncio.to_thread(
            receiver.wait_for, lambda: "/fast" in receiver.accepted and "/slow" in receiver.entered
        )
        assert ok, "fast target never received the alert, or the slow one never got it"
        assert not gate.is_set()
        assert receiver.to("/slow") == [] and not both.done()
        # ... and further alerts to it are delivered too, while the slow one still hangs.
        second = make_alert(notify=["fast"])
        assert [o.ok for o in await service.deliver(second, SOURCE)] == [True]
        assert receiver.accepted["/fast"] == {first["event_id"], second["event_id"]}
        assert not both.done()
        gate.set()
        outcomes = await both
        assert sorted(o.target for o in outcomes if o.ok) == ["subscription:fast",
                                                              "subscription:slow"]  # fmt: skip

    asyncio.run(scenario())
    assert sink.letters == []


def test_hanging_target_times_out_and_is_dead_lettered(receiver: Receiver) -> None:
    receiver.gates["/hang"] = threading.Event()  # never set during the test
    policy = RetryPolicy(max_tries=2, timeout=0.3, backoff_base=0.01, backoff_max=0.01)
    service, sink = service_with(subscription_record("hang", receiver.url("/hang")), policy=policy)
    [outcome] = asyncio.run(service.deliver(make_alert(notify=["hang"]), SOURCE))
    assert not outcome.ok and outcome.tries == 2 and outcome.status is None
    assert [letter[1] for letter in sink.letters] == [WEBHOOK_FAILED]


def test_full_target_queue_dead_letters_instead_of_waiting(receiver: Receiver) -> None:
    gate = receiver.gates["/jam"] = threading.Event()
    service, sink = service_with(subscription_record("jam", receiver.url("/jam")))
    service.dispatcher.per_target_concurrency = 1
    service.dispatcher.max_queue_per_target = 1

    async def scenario() -> None:
        stuck = asyncio.create_task(service.deliver(make_alert(notify=["jam"]), SOURCE))
        await asyncio.to_thread(receiver.entered.setdefault("/jam", threading.Event()).wait, WAIT)
        [overflow] = await service.deliver(make_alert(notify=["jam"]), SOURCE)
        assert not overflow.ok and overflow.error == "target queue full"
        gate.set()
        assert [o.ok for o in await stuck] == [True]

    asyncio.run(scenario())
    assert [letter[1] for letter in sink.letters] == [WEBHOOK_FAILED]


def test_silenced_inhibited_and_pending_alerts_are_not_delivered(receiver: Receiver) -> None:
    silence = {
        "kind": "silence",
        "id": "sil-1",
        "version": 1,
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z",
        "updated_by": "test",
        "data": {
            "matchers": [{"name": "model_id", "value": "fraud-*", "op": "=~"}],
            "starts_at": "2020-01-01T00:00:00Z",
            "ends_at": "2999-01-01T00:00:00Z",
        },
    }
    service, sink = service_with(
        subscription_record("s1", receiver.url("/s1")),
        ("silence:sil-1", json.dumps(silence).encode()),
    )

    async def scenario() -> list[list[Any]]:
        return [
            await service.deliver(make_alert(notify=["s1"], silenced=True), SOURCE),
            await service.deliver(make_alert(notify=["s1"], model_id="fraud-eu"), SOURCE),
            await service.deliver(make_alert(notify=["s1"], inhibited_by="fp-x"), SOURCE),
            await service.deliver(make_alert(notify=["s1"], status="PENDING"), SOURCE),
            # the control: the same alert, not silenced, is delivered
            await service.deliver(make_alert(notify=["s1"]), SOURCE),
        ]

    results = asyncio.run(scenario())
    assert [len(r) for r in results] == [0, 0, 0, 0, 1]
    assert len(receiver.to("/s1")) == 1
    assert service.stats["skipped_silenced"] == 2 and service.stats["skipped_inhibited"] == 1
    assert sink.letters == []


def test_offset_ledger_commits_only_past_contiguous_done_offsets() -> None:
    ledger = OffsetLedger()
    for offset in (10, 11, 12):
        ledger.add(offset)
    ledger.done(11)
    assert ledger.committable is None  # 10 is still in delivery
    ledger.done(10)
    assert ledger.committable == 12 and len(ledger) == 1
    ledger.done(99)  # not ours (a partition that was revoked and re-assigned): ignored
    ledger.done(12)
    assert ledger.committable == 13 and len(ledger) == 0


def test_unreachable_alertmanager_is_dead_lettered() -> None:
    service, sink = service_with(alertmanager_url=f"http://127.0.0.1:{free_port()}")
    [outcome] = asyncio.run(service.deliver(make_alert(), SOURCE))
    assert not outcome.ok and outcome.tries == FAST.max_tries
    [(source, reason, detail, _)] = sink.letters
    assert reason == ALERTMANAGER_FAILED and source == SOURCE and "/api/v2/alerts" in detail


# -- the service on the real broker -----------------------------------------------------------


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def _read_all(bootstrap: str, topic: str, until: Any, timeout: float = WAIT) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(out) and time.monotonic() < deadline:
            out.extend(m for m in consumer.consume(100, 0.2) if m.error() is None)
    finally:
        consumer.close()
    return out


@pytest.mark.e2e
def test_service_end_to_end_on_the_broker(kafka_broker: Any, receiver: Receiver) -> None:
    bootstrap = kafka_broker.bootstrap
    ensure_topics(bootstrap, partitions=2)
    receiver.script["/down"] = [500] * 10
    gate = receiver.gates["/slow"] = threading.Event()
    tag = uuid.uuid4().hex[:8]
    good, down, slow = f"good-{tag}", f"down-{tag}", f"slow-{tag}"
    _produce(
        bootstrap,
        topics.RULES,
        [
            (k.encode(), v)
            for k, v in (
                subscription_record(good, receiver.url("/good")),
                subscription_record(down, receiver.url("/down")),
                subscription_record(slow, receiver.url("/slow")),
            )
        ],
    )
    hanging = make_alert(notify=[slow])
    delivered = make_alert(notify=[good])
    failing = make_alert(notify=[down], model_id="fraud")
    silenced = make_alert(notify=[good], silenced=True)
    _produce(
        bootstrap,
        topics.ALERTS,
        [
            # first on its partition: the alerts after it must not wait for it
            (b"churn", encode_alert(hanging)),
            (b"churn", encode_alert(delivered)),
            (b"fraud", encode_alert(failing)),
            (b"churn", encode_alert(silenced)),
            (b"churn", b"\x07not an alert"),
        ],
    )
    group = f"driftline-delivery-{tag}"
    config = DeliveryConfig(
        bootstrap=bootstrap,
        group_id=group,
        policy=RetryPolicy(max_tries=2, timeout=10.0, backoff_base=0.01, backoff_max=0.02),
        auto_offset_reset="earliest",
        commit_interval=0.1,
    )
    service = DeliveryService(config)

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        ok = await asyncio.to_thread(
            receiver.wait_for,
            lambda: (
                "/good" in receiver.accepted
                and len(receiver.to("/down")) == 2
                and "/slow" in receiver.entered
            ),
        )
        # every record but the hanging one processed (including the two dead letters) ...
        for _ in range(300):
            if service.stats["dead_lettered"] + service.stats["undecodable"] >= 2:
                break
            await asyncio.sleep(0.1)
        # ... while the slow target still holds the first alert: nothing waited for it
        assert not gate.is_set() and receiver.to("/slow") == []
        gate.set()
        stop.set()
        await task
        assert ok, f"deliveries missing: {receiver.requests}"

    asyncio.run(run())
    assert receiver.accepted["/good"] == {delivered["event_id"]}  # the silenced one is not there
    assert receiver.accepted["/slow"] == {hanging["event_id"]}  # delivered during the drain

    def from_alerts(messages: list[Any]) -> list[Any]:
        return [m for m in messages if ("driftline.source.topic", topics.ALERTS.encode())
                in (m.headers() or [])]  # fmt: skip

    letters = from_alerts(_read_all(bootstrap, topics.DLQ, lambda out: len(from_alerts(out)) >= 2))
    ours = {}
    for m in letters:
        h = {k: v.decode() for k, v in m.headers() or []}
        if h.get("driftline.source.topic") == topics.ALERTS:
            ours[h["driftline.reason"]] = (h, m)
    headers, message = ours[WEBHOOK_FAILED]
    assert message.value() == encode_alert(failing)  # the original bytes, untouched
    assert "tries=2" in headers["driftline.detail"] and "HTTP 500" in headers["driftline.detail"]
    assert headers["driftline.subscription.id"] == down
    assert int(headers["driftline.source.partition"]) >= 0
    assert int(headers["driftline.source.offset"]) >= 0
    assert topics.UNDECODABLE in ours

    # At-least-once: everything handled, so the group has committed to the end of the topic.
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = probe.list_topics(topics.ALERTS, timeout=10).topics[topics.ALERTS].partitions
        committed = probe.committed([TopicPartition(topics.ALERTS, p) for p in parts], timeout=10)
        for tp in committed:
            low, high = probe.get_watermark_offsets(tp, timeout=10)
            if high > low:  # an empty partition has nothing to commit
                assert tp.offset == high, (tp, high)
    finally:
        probe.close()


_CLI = """
import argparse, sys
from driftline.delivery import add_delivery_command
from driftline.settings import Settings
parser = argparse.ArgumentParser()
add_delivery_command(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[2:])
sys.exit(args.handler(args, Settings(kafka_bootstrap=sys.argv[1], topic_partitions=2)))
"""


@pytest.mark.e2e
def test_deliver_command_runs_and_stops_on_sigterm(
    kafka_broker: Any, receiver: Receiver, tmp_path: Path
) -> None:
    import signal
    import sys

    bootstrap = kafka_broker.bootstrap
    ensure_topics(bootstrap, partitions=2)
    sub = f"cli-{uuid.uuid4().hex[:8]}"
    _produce(bootstrap, topics.RULES, [(k.encode(), v) for k, v in
                                        [subscription_record(sub, receiver.url("/cli"))]])  # fmt: skip
    group = f"driftline-delivery-{sub}"
    process = subprocess.Popen(
        [sys.executable, "-c", _CLI, bootstrap, "deliver", "--group-id", group, "--max-tries", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        # A new group starts at the end of the topic: publish until one alert gets through.
        alerts: list[dict[str, Any]] = []
        while not receiver.wait_for(lambda: "/cli" in receiver.accepted, timeout=1.0):
            assert process.poll() is None, process.stdout.read().decode()[-3000:]
            assert len(alerts) < WAIT, "the command never delivered"
            alerts.append(make_alert(notify=[sub]))
            _produce(bootstrap, topics.ALERTS, [(b"churn", encode_alert(alerts[-1]))])
        process.send_signal(signal.SIGTERM)
        assert process.wait(WAIT) == 0, process.stdout.read().decode()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert receiver.accepted["/cli"] <= {a["event_id"] for a in alerts}


# -- Alertmanager (the real binary) -----------------------------------------------------------

@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    # the real binary (tests/support/alertmanager.py): fails under CI=true when missing
    with running_alertmanager(tmp_path) as url:
        yield url


def _am_alerts(url: str, fingerprint: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{url}/api/v2/alerts", timeout=10).json()
    return [a for a in alerts if a["labels"].get("fingerprint") == fingerprint]


# What the worker's evaluator puts in an AlertEvent's annotations (built here directly).
EVIDENCE = {
    "summary": "drift on churn",
    "description": "feature age drifted (PSI 0.31 > 0.2) on churn v7",
    "model_version": "7",
    "stream": "feature:age",
    "detector": "PSI",
    "statistic": "0.31",
    "p_value": "0.004",
    "before": "41.2",
    "after": "35.9",
    "window_start": "1763900000000",
    "window_end": "1763903600000",
    "drift_event_id": "d-1",
}
PUBLIC = "https://driftline.example.com"


def test_alertmanager_receives_firing_then_resolved(alertmanager: str) -> None:
    service, sink = service_with(alertmanager_url=alertmanager, public_url=PUBLIC)
    firing = make_alert(labels={"team": "ml", "severity": "overridden"}, annotations=EVIDENCE)

    asyncio.run(service.deliver(firing, SOURCE))
    [am] = _am_alerts(alertmanager, firing["fingerprint"])
    assert am["labels"] == {
        "team": "ml",
        "alertname": "PredictionDrift",
        "model_id": "churn",
        "severity": "critical",
        "fingerprint": firing["fingerprint"],
    }
    # labels identify the alert, annotations describe it; the link leads to the evidence
    fp = firing["fingerprint"]
    assert am["annotations"] == {
        **EVIDENCE,
        "value": "0.42",
        "dashboard_url": f"{PUBLIC}/ui/models/churn",
        "alert_url": f"{PUBLIC}/v1/alerts/{fp}",
        "history_url": f"{PUBLIC}/v1/alerts/history?fingerprint={fp}",
    }
    assert am["generatorURL"] == f"{PUBLIC}/ui/models/churn"
    assert am["status"]["state"] == "active"
    assert service.alertmanager is not None
    assert list(service.alertmanager.firing) == [firing["fingerprint"]]

    # a re-send keeps it there; RESOLVED (ends in the past) takes it out of the active list
    outcome = asyncio.run(service.alertmanager.resend_once())
    assert outcome is not None and outcome.ok
    resolved = {**firing, "status": "RESOLVED", "ends_at": firing["updated_at"] + 1,
                "updated_at": firing["updated_at"] + 1, "event_id": "ev-resolved"}  # fmt: skip
    asyncio.run(service.deliver(resolved, SOURCE))
    assert service.alertmanager.firing == {}
    assert _am_alerts(alertmanager, firing["fingerprint"]) == []
    assert sink.letters == []


def test_alertmanager_forwarder_posts_batches(alertmanager: str) -> None:
    async def scenario() -> None:
        dispatcher = Dispatcher(FAST)
        forwarder = AlertmanagerForwarder(alertmanager, dispatcher, resend_interval=60)
        alerts = [make_alert(model_id=f"m{i}") for i in range(3)]
        for alert in alerts:
            assert (await forwarder.forward(alert)).ok
        assert await forwarder.forward(make_alert(status="PENDING")) is None
        forwarder.firing.clear()
        await dispatcher.aclose()
        for alert in alerts:
            [am] = _am_alerts(alertmanager, alert["fingerprint"])
            assert am["labels"]["model_id"] == alert["model_id"]

    asyncio.run(scenario())


# -- CLI and docstrings -----------------------------------------------------------------------


def test_deliver_command_parses_its_options() -> None:
    parser = argparse.ArgumentParser()
    add_delivery_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["deliver", "--alertmanager-url", "http://am:9093", "--max-tries", "3", "--timeout", "2.5"]
    )
    assert (args.alertmanager_url, args.max_tries, args.timeout) == ("http://am:9093", 3, 2.5)
    assert callable(args.handler)
    defaults = parser.parse_args(["deliver"])
    assert (defaults.alertmanager_url, defaults.max_tries, defaults.timeout) == (None, 5, 10.0)


@pytest.mark.e2e
def test_firing_alerts_are_rebuilt_on_assignment(kafka_broker: Any, alertmanager: str) -> None:
    """A restarted service keeps re-sending what was firing before it started."""
    bootstrap = kafka_broker.bootstrap
    ensure_topics(bootstrap, partitions=2)
    tag = uuid.uuid4().hex[:8]
    still = make_alert(model_id=f"a-{tag}")
    gone = make_alert(model_id=f"b-{tag}")
    resolved = {**gone, "status": "RESOLVED", "event_id": f"r-{tag}", "ends_at": gone["updated_at"]}
    muted = make_alert(model_id=f"c-{tag}", silenced=True)
    _produce(
        bootstrap,
        topics.ALERTS,
        [(a["model_id"].encode(), encode_alert(a)) for a in (still, gone, resolved, muted)],
    )
    # The group has handled all of it already (a previous run of the service).
    group = f"driftline-delivery-{tag}"
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        parts = committer.list_topics(topics.ALERTS, timeout=10).topics[topics.ALERTS].partitions
        ends = []
        for p in parts:
            _, high = committer.get_watermark_offsets(TopicPartition(topics.ALERTS, p), timeout=10)
            ends.append(TopicPartition(topics.ALERTS, p, high))
        committer.commit(offsets=ends, asynchronous=False)
    finally:
        committer.close()

    service = DeliveryService(
        DeliveryConfig(
            bootstrap=bootstrap,
            group_id=group,
            alertmanager_url=alertmanager,
            policy=FAST,
            alertmanager_resend_interval=3600,
        )  # fmt: skip
    )

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        try:
            assert service.alertmanager is not None
            for _ in range(int(WAIT * 10)):
                if still["fingerprint"] in service.alertmanager.firing or task.done():
                    break
                await asyncio.sleep(0.1)
            firing = service.alertmanager.firing
            assert still["fingerprint"] in firing
            assert gone["fingerprint"] not in firing and muted["fingerprint"] not in firing
            outcome = await service.alertmanager.resend_once()
            assert outcome is not None and outcome.ok
        finally:
            stop.set()
            await task

    asyncio.run(scenario())
    assert len(_am_alerts(alertmanager, still["fingerprint"])) == 1
    assert _am_alerts(alertmanager, gone["fingerprint"]) == []
