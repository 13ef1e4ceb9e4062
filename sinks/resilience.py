"""Waiting out outages: capped exponential backoff, ``wait_until``, and quiet Kafka clients.

Every driftline process depends on a broker and/or a ClickHouse store that may start after it
or go away for a while. The rule everywhere: a dependency that is down is waited for, with
bounded logging (one line when the wait starts, one per ``log_interval_s`` while it lasts, one
when it ends), never a crash and never a line per attempt.

This lives in sinks/ because it is the lowest layer that streams/, api/ and the core all may
import (DESIGN.md's layering); nothing here knows about ClickHouse.

No retry library is installed in the project's environment (neither tenacity nor backoff), so
this module is the one small helper the project keeps; ``ServerStore`` takes its delays from
:func:`backoff_delays` too.

>>> import itertools
>>> list(itertools.islice(backoff_delays(0.5, 4.0), 6))
[0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
>>> wait_until(lambda: True, what="something already there")
True
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["backoff_delays", "wait_until", "ThrottledKafkaErrors", "quiet_kafka_config"]

_log = logging.getLogger(__name__)


def backoff_delays(initial_s: float, max_s: float, factor: float = 2.0) -> Iterator[float]:
    """Endless capped exponential delays: ``initial_s``, ``initial_s * factor``, ... ``max_s``."""
    if initial_s <= 0 or max_s < initial_s or factor < 1:
        raise ValueError(f"need 0 < initial_s <= max_s and factor >= 1, got "
                         f"{initial_s}, {max_s}, {factor}")  # fmt: skip
    delay = initial_s
    while True:
        yield delay
        delay = min(delay * factor, max_s)


def wait_until(
    check: Callable[[], Any],
    *,
    what: str,
    log: logging.Logger | None = None,
    interval_s: float = 0.5,
    max_interval_s: float = 10.0,
    log_interval_s: float = 30.0,
    stop: threading.Event | None = None,
    timeout_s: float | None = None,
) -> bool:
    """Call ``check`` until it returns a truthy value; True then, False if ``stop`` was set or
    ``timeout_s`` passed first.

    Attempts back off exponentially from ``interval_s`` to ``max_interval_s``. An exception
    from ``check`` counts as "not yet" and its text goes into the next log line, so a check may
    simply try the real operation (``lambda: store.migrate() or True``). Logging is bounded:
    "waiting for <what>" at the first failure, "still waiting for <what> (down 35 s)" at most
    once per ``log_interval_s``, and "<what> is available after 41 s" at the end. ``stop`` ends
    the wait at once (the sleep is ``stop.wait``), so a SIGTERM handler that sets it is obeyed
    within milliseconds rather than after the current backoff.
    """
    log = log or _log
    stop = stop or threading.Event()
    started = time.monotonic()
    last_logged: float | None = None
    delays = backoff_delays(interval_s, max(interval_s, max_interval_s))
    while not stop.is_set():
        error = ""
        try:
            if check():
                if last_logged is not None:
                    log.info("%s is available after %.0f s", what, time.monotonic() - started)
                return True
        except Exception as exc:  # "not yet": the dependency is down or refusing
            error = f": {type(exc).__name__}: {exc}"
        now = time.monotonic()
        if last_logged is None:
            log.warning("waiting for %s%s", what, error)
            last_logged = now
        elif now - last_logged >= log_interval_s:
            log.warning("still waiting for %s (down %.0f s)%s", what, now - started, error)
            last_logged = now
        delay = next(delays)
        if timeout_s is not None:
            left = started + timeout_s - now
            if left <= 0:
                return False
            delay = min(delay, left)
        stop.wait(delay)
    return False


class ThrottledKafkaErrors:
    """A librdkafka ``error_cb`` that logs each kind of error at most once per ``interval_s``
    (librdkafka reports a failed connection on every reconnect attempt) and remembers when the
    client last saw one, for readiness checks.

    Pass it with :func:`quiet_kafka_config`.
    """

    def __init__(self, log: logging.Logger, name: str, interval_s: float = 30.0) -> None:
        self.log = log
        self.name = name
        self.interval_s = interval_s
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._logged: dict[str, tuple[float, int]] = {}  # error name -> (logged at, suppressed)
        self._lock = threading.Lock()

    def __call__(self, error: Any) -> None:
        name = error.name() if hasattr(error, "name") else type(error).__name__
        text = error.str() if hasattr(error, "str") else str(error)
        now = time.monotonic()
        with self._lock:
            self.last_error, self.last_error_at = text, now
            logged_at, suppressed = self._logged.get(name, (None, 0))
            if logged_at is not None and now - logged_at < self.interval_s:
                self._logged[name] = (logged_at, suppressed + 1)
                return
            self._logged[name] = (now, 0)
        more = (
            f" ({suppressed} more like it in the last {now - logged_at:.0f} s)"
            if (logged_at is not None and suppressed)
            else ""
        )
        # Fatal errors end the client; everything else librdkafka retries by itself.
        level = logging.ERROR if getattr(error, "fatal", lambda: False)() else logging.WARNING
        self.log.log(level, "%s: %s%s", self.name, text, more)


def quiet_kafka_config(log: logging.Logger, name: str, interval_s: float = 30.0) -> dict[str, Any]:
    """confluent-kafka settings for a client that tolerates a missing broker quietly.

    librdkafka's own log lines (stderr, one per failed connect and per closed connection) are
    limited to critical ones (``log_level`` 2); errors reach Python logging through a
    :class:`ThrottledKafkaErrors` instead, at most one line per kind per ``interval_s``.
    Reconnects back off up to 5 s rather than hammering a broker that is restarting.
    """
    return {
        "log_level": 2,
        "log.connection.close": False,
        "error_cb": ThrottledKafkaErrors(log, name, interval_s),
        "reconnect.backoff.ms": 200,
        "reconnect.backoff.max.ms": 5000,
    }
