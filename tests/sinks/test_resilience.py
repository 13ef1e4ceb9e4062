"""wait_until and the Kafka error throttle: bounded logs, backoff, stop and timeout."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from driftline.sinks.resilience import ThrottledKafkaErrors, backoff_delays, wait_until

LOG = logging.getLogger("test.resilience")


def test_backoff_is_capped_exponential() -> None:
    delays = backoff_delays(0.1, 1.0)
    assert [round(next(delays), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    with pytest.raises(ValueError):
        backoff_delays(0, 1.0).__next__()


def test_waits_until_the_check_passes_with_bounded_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    up_at = time.monotonic() + 1.0
    calls = []

    def check() -> bool:
        calls.append(time.monotonic())
        if time.monotonic() < up_at:
            raise ConnectionRefusedError("refused")
        return True

    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert wait_until(check, what="the thing", log=LOG, interval_s=0.01, max_interval_s=0.05,
                          log_interval_s=0.4)  # fmt: skip
    messages = [r.getMessage() for r in caplog.records]
    assert len(calls) > 15  # tried often...
    assert len(messages) <= 5, messages  # ...logged seldom: start, ~2 reminders, end
    assert messages[0].startswith("waiting for the thing: ConnectionRefusedError")
    assert any(m.startswith("still waiting for the thing (down") for m in messages)
    assert messages[-1].startswith("the thing is available after")


def test_stop_ends_the_wait_at_once() -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert not wait_until(lambda: False, what="never", log=LOG, interval_s=5, stop=stop)
    assert time.monotonic() - started < 1.0


def test_timeout() -> None:
    started = time.monotonic()
    assert not wait_until(lambda: False, what="never", log=LOG, interval_s=0.05, timeout_s=0.3)
    assert 0.25 < time.monotonic() - started < 1.0


def test_kafka_errors_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    class Error:
        def __init__(self, name: str) -> None:
            self._name = name

        def name(self) -> str:
            return self._name

        def str(self) -> str:
            return f"{self._name} happened"

        def fatal(self) -> bool:
            return False

    throttle = ThrottledKafkaErrors(LOG, "consumer", interval_s=60)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        for _ in range(500):
            throttle(Error("_TRANSPORT"))
        throttle(Error("_ALL_BROKERS_DOWN"))
    assert [r.getMessage() for r in caplog.records] == [
        "consumer: _TRANSPORT happened",
        "consumer: _ALL_BROKERS_DOWN happened",
    ]
    assert throttle.last_error == "_ALL_BROKERS_DOWN happened"
