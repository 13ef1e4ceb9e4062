"""Restoring a partition's checkpoint while the broker is gone gives way to a stop."""

from __future__ import annotations

import threading
import time

import pytest
from driftline.streams.checkpoint import Checkpoints, RestoreInterrupted

from driftline.local_kafka import free_port


def test_a_stop_interrupts_a_restore_that_waits_for_the_broker() -> None:
    # nothing listens on this port: the restore retries until the worker stops
    checkpoints = Checkpoints(f"127.0.0.1:{free_port()}", "driftline-test-changelog", producer=None)
    stopping = threading.Event()
    threading.Timer(1.0, stopping.set).start()
    started = time.monotonic()
    with pytest.raises(RestoreInterrupted):
        checkpoints.restore(0, stopping=stopping)
    # bounded only so that a failure ends: the product's bound is the README's 15 s grace
    assert time.monotonic() - started < 14.0
