"""Deliveries keep the order of an alert's states (driftline/delivery/ordering.py): a state is
never sent after a newer one of its fingerprint, across retries and a restart of the service.

The end-to-end test runs the real broker, a real webhook receiver that fails the first try of
every event (so every delivery is retried), the real Alertmanager behind a proxy that fails
every other request and records what reached Alertmanager, and stops the service abruptly
halfway (deliveries in flight cancelled, their offsets uncommitted) before a second one
takes over.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from driftline.schemas import topics
from support.alertmanager import running_alertmanager
from support.receiver import WebhookReceiver

from driftline.admin import ensure_topics
from driftline.delivery import (
    ControlPlaneFollower,
    DeliveryConfig,
    DeliveryService,
    RetryPolicy,
    encode_alert,
    normalize_alert,
    verify,
)
from driftline.delivery.ordering import AlertOrder, state_key

SECRET = "order-secret-0123456789"
WAIT = 60.0  # upper bound for "eventually": a failure shows as a timeout, never a pass


def subscription(ident: str, url: str) -> tuple[str, bytes]:
    value = {
        "kind": "subscription",
        "id": ident,
        "version": 1,
        "created_at": "2026-01-01T00:00:00.000Z",
        "updated_at": "2026-01-01T00:00:00.000Z",
        "updated_by": "test",
        "data": {"name": ident, "url": url, "secret": SECRET, "enabled": True},
    }
    return f"subscription:{ident}", json.dumps(value).encode()


def alert_state(fp: str, model: str, status: str, starts: int, at: int, sub: str) -> dict:
    return normalize_alert(
        {
            "event_id": f"{fp}-{status}-{starts}-{at}",
            "fingerprint": fp,
            "rule_id": "r-order",
            "rule_name": "Drift",
            "status": status,
            "severity": "critical",
            "model_id": model,
            "starts_at": starts,
            "ends_at": at if status == "RESOLVED" else None,
            "updated_at": at,
            "notify": [sub],
        }
    )


def episodes(fp: str, model: str, sub: str, t0: int) -> list[dict]:
    """Two episodes of one alert: FIRING, a repeat FIRING, RESOLVED, FIRING, RESOLVED."""
    return [
        alert_state(fp, model, "FIRING", t0, t0, sub),
        alert_state(fp, model, "FIRING", t0, t0 + 1000, sub),
        alert_state(fp, model, "RESOLVED", t0, t0 + 2000, sub),
        alert_state(fp, model, "FIRING", t0 + 3000, t0 + 3000, sub),
        alert_state(fp, model, "RESOLVED", t0 + 3000, t0 + 4000, sub),
    ]


def assert_in_state_order(seen: dict[str, list[tuple[int, int, int]]]) -> None:
    """Per fingerprint, what went on the wire never steps back to an older state."""
    for fp, keys in seen.items():
        assert keys == sorted(keys), f"{fp}: states sent out of order: {keys}"


# -- the order book alone ---------------------------------------------------------------------


def test_order_book_drops_stale_states_and_keeps_duplicates() -> None:
    order = AlertOrder(capacity=2)
    first = alert_state("a", "m", "FIRING", 10, 10, "s")
    resolved = alert_state("a", "m", "RESOLVED", 10, 20, "s")
    again = alert_state("a", "m", "FIRING", 30, 30, "s")
    assert order.observe(first) and order.observe(resolved)
    assert order.observe(resolved)  # a duplicate of the newest state is still sent
    assert not order.observe(first) and order.superseded(first)
    assert order.observe(again) and order.superseded(resolved)  # a new episode is newer
    # FIRING and RESOLVED at the same instant: RESOLVED is the later state
    assert state_key(alert_state("b", "m", "RESOLVED", 5, 9, "s")) > state_key(
        alert_state("b", "m", "FIRING", 5, 9, "s")
    )
    order.observe(alert_state("c", "m", "FIRING", 1, 1, "s"))
    order.observe(alert_state("d", "m", "FIRING", 1, 1, "s"))
    assert len(order) == 2 and not order.superseded(first)  # "a" was forgotten first
    with pytest.raises(ValueError):
        AlertOrder(capacity=0)


def _service(url: str, policy: RetryPolicy, **config: Any) -> DeliveryService:
    follower = ControlPlaneFollower()
    follower.apply(*subscription("s", url))

    class Letters:
        def __init__(self) -> None:
            self.letters: list[Any] = []

        async def send(self, *args: Any) -> None:
            self.letters.append(args)

    return DeliveryService(
        DeliveryConfig(bootstrap="unused:9092", policy=policy, **config),
        follower=follower,
        dead_letters=Letters(),
    )


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(SECRET)
    try:
        yield r
    finally:
        r.close()


def test_late_firing_after_its_resolved_is_not_sent(receiver: WebhookReceiver) -> None:
    service = _service(receiver.url("/hook"), RetryPolicy(max_tries=2, backoff_base=0.01))
    firing = alert_state("fp1", "m", "FIRING", 10, 10, "s")
    resolved = alert_state("fp1", "m", "RESOLVED", 10, 20, "s")

    async def scenario() -> None:
        await service.deliver(resolved, _source())
        assert await service.deliver(firing, _source()) == []  # e.g. a replayed dead letter

    asyncio.run(scenario())
    assert [r["event_id"] for r in receiver.to("/hook")] == [resolved["event_id"]]
    assert service.stats["superseded"] == 1 and service.dead_letters.letters == []


def test_retries_of_an_older_state_stop_once_a_newer_one_is_known(
    receiver: WebhookReceiver,
) -> None:
    # FIRING's first try is held by the receiver until RESOLVED is known, then refused (500);
    # FIRING must not be tried again, and RESOLVED goes out after it, not beside it.
    receiver.script["/hook"] = [500]
    gate = receiver.gates["/hook"] = threading.Event()
    policy = RetryPolicy(max_tries=5, backoff_base=0.01, backoff_max=0.02)
    service = _service(receiver.url("/hook"), policy)
    firing = alert_state("fp2", "m", "FIRING", 10, 10, "s")
    resolved = alert_state("fp2", "m", "RESOLVED", 10, 20, "s")

    async def scenario() -> list[Any]:
        first = asyncio.create_task(service.deliver(firing, _source()))
        assert await asyncio.to_thread(receiver.wait_for, lambda: "/hook" in receiver.entered)
        second = asyncio.create_task(service.deliver(resolved, _source()))
        assert await _eventually(lambda: service.order.superseded(firing))
        gate.set()
        return [*(await first), *(await second)]

    fired, done = asyncio.run(scenario())
    assert fired.superseded and fired.tries == 1 and not fired.ok
    assert done.ok
    sent = [(r["event_id"], r["status"]) for r in receiver.to("/hook")]
    assert sent == [(firing["event_id"], 500), (resolved["event_id"], 200)]
    assert service.dead_letters.letters == []  # superseded is not a failure


def _source() -> Any:
    from driftline.delivery import Source

    return Source(topics.ALERTS, 0, 0, b"m", b"{}")


# -- end to end: broker, flaky receivers, Alertmanager, a restart ----------------------------


class FlakyWebhook:
    """Answers 500 to the first try of every event id and 200 afterwards (signature checked);
    records every request in arrival order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, Any], int]] = []  # (event id, body, status)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                ok = verify(SECRET, raw, self.headers.get("X-Driftline-Signature"))
                event_id = self.headers.get("X-Driftline-Event-Id") or ""
                with outer.lock:
                    tried = any(e == event_id for e, _, _ in outer.requests)
                    status = 401 if not ok else (200 if tried else 500)
                    outer.requests.append((event_id, json.loads(raw), status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def accepted(self) -> set[str]:
        with self.lock:
            return {e for e, _, status in self.requests if status == 200}

    def tried(self) -> set[str]:
        with self.lock:
            return {e for e, _, _ in self.requests}

    def sent_keys(self) -> dict[str, list[tuple[int, int, int]]]:
        out: dict[str, list[tuple[int, int, int]]] = {}
        with self.lock:
            for _, body, _ in self.requests:
                out.setdefault(body["fingerprint"], []).append(state_key(body))
        return out


class FlakyAlertmanagerProxy:
    """In front of the real Alertmanager: refuses every other POST with 503 and forwards the
    rest; records, per fingerprint, the state of each alert Alertmanager accepted."""

    def last_states(self) -> dict[str, tuple[str, str]]:
        with self.lock:
            return {fp: states[-1] for fp, states in self.accepted.items() if states}

    def __init__(self, upstream: str) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.accepted: dict[str, list[tuple[str, str]]] = {}  # fp -> [(startsAt, state)]
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.count += 1
                    refuse = outer.count % 2 == 1
                if refuse:
                    status = 503
                else:
                    status = httpx.post(
                        upstream + self.path,
                        content=raw,
                        headers={"Content-Type": "application/json"},
                        timeout=10,
                    ).status_code
                    if status == 200:
                        now = datetime.now(UTC)
                        with outer.lock:
                            for alert in json.loads(raw):
                                # RESOLVED is posted with its (past) end, FIRING with
                                # endsAt = now + 4 x the resend interval
                                ends = datetime.fromisoformat(
                                    alert["endsAt"].replace("Z", "+00:00")
                                )
                                state = "R" if ends <= now else "F"
                                outer.accepted.setdefault(
                                    alert["labels"]["fingerprint"], []
                                ).append((alert["startsAt"], state))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


@pytest.mark.e2e
def test_states_stay_in_order_across_retries_and_a_restart(
    fresh_kafka: Any, tmp_path: Path
) -> None:
    # A broker of its own: reading the alerts topic from the earliest offset on the shared
    # broker delivers every earlier test's alerts to their (now dead) subscriptions first.
    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, partitions=2)
    tag = uuid.uuid4().hex[:8]
    hook = FlakyWebhook()
    sub = f"order-{tag}"
    _produce(bootstrap, topics.RULES, [(k.encode(), v) for k, v in [subscription(sub, hook.url)]])
    # 8 alerts on 4 models (so on both partitions), each with two episodes
    lives = {
        f"fp-{tag}-{i}": episodes(f"fp-{tag}-{i}", f"m{i % 4}-{tag}", sub, 1_000_000 * (i + 1))
        for i in range(8)
    }
    rounds = [[states[k] for states in lives.values()] for k in range(5)]
    finals = {states[-1]["event_id"] for states in lives.values()}

    def publish(states: list[dict]) -> None:
        _produce(
            bootstrap, topics.ALERTS, [(a["model_id"].encode(), encode_alert(a)) for a in states]
        )

    with running_alertmanager(tmp_path) as alertmanager:
        proxy = FlakyAlertmanagerProxy(alertmanager)
        config = DeliveryConfig(
            bootstrap=bootstrap,
            group_id=f"driftline-delivery-{tag}",
            # enough tries for "every other request fails" (webhook: first try of each)
            policy=RetryPolicy(max_tries=8, timeout=10.0, backoff_base=0.05, backoff_max=0.2),
            alertmanager_url=proxy.url,
            alertmanager_resend_interval=0.5,  # re-sends race with state changes
            auto_offset_reset="earliest",
            commit_interval=0.1,
            drain_timeout=0.0,  # a stop cancels what is in flight: a crash, for the offsets
        )

        async def run_until(service: DeliveryService, started: list[dict], done: Any) -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(service.run(stop))
            try:
                for states in started:
                    await asyncio.to_thread(publish, states)
                    # the next state arrives while this one's first try failed: a retry race
                    ids = {a["event_id"] for a in states}
                    assert await _eventually(lambda ids=ids: ids <= hook.tried() or task.done())
                assert await _eventually(lambda: done() or task.done())
            finally:
                stop.set()
                await task

        # First run: rounds 1-3 (FIRING, repeat, RESOLVED), stopped once a RESOLVED is in.
        first = DeliveryService(config)
        asyncio.run(run_until(first, rounds[:3], lambda: bool(hook.accepted() & {
            a["event_id"] for a in rounds[2]})))  # fmt: skip
        # While it is down the next episode starts; a second service takes over.
        publish(rounds[3])
        second = DeliveryService(config)
        ends = {a["fingerprint"]: (_rfc3339(a["starts_at"]), "R") for a in rounds[4]}
        asyncio.run(run_until(
            second, rounds[4:], lambda: finals <= hook.accepted() and proxy.last_states() == ends
        ))  # fmt: skip

        assert finals <= hook.accepted(), "the final RESOLVED of every alert was delivered"
        assert_in_state_order(hook.sent_keys())
        # Alertmanager: states it accepted are in order per alert (startsAt orders episodes,
        # and within one a RESOLVED is last), and nothing is left active.
        for fp, accepted in proxy.accepted.items():
            assert accepted == sorted(accepted), f"{fp}: {accepted}"
        active = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=10).json()
        assert [a for a in active if a["labels"].get("fingerprint") in lives] == []
        assert set(proxy.accepted) == set(lives)


def _rfc3339(ms: int) -> str:
    from driftline.delivery.alertmanager import _rfc3339 as rfc3339

    return rfc3339(ms)


async def _eventually(predicate: Any, timeout: float = WAIT) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
