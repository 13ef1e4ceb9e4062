"""Stopping the pieces in any order: each exits on SIGTERM within its documented grace (README,
"Running the pieces": 15 s), says so, and logs a bounded number of lines while what it depends
on is gone; the API's ``/ready`` turns 503 when the broker or the store goes away.

Real processes throughout: a local Kafka broker of the test's own, ``driftline worker``
(serving its embedded store over HTTP), ``driftline api`` reading that store, ``driftline
deliver``. Lines are counted, never timed; the waits only bound how long a failure takes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.kafka import start_broker

from driftline.local_kafka import LocalKafka, free_port

GRACE_S = 15.0  # README: every piece exits within 15 s of SIGTERM
OUTAGE_S = 10.0  # how long a dependency stays away while lines are counted
# Per process while a dependency is gone for OUTAGE_S: a warning when it goes, at most one
# per kind of error per 30 s, /ready changes. Per attempt would be ~100 lines in 10 s.
MAX_LINES_DURING_OUTAGE = 12
MAX_LINES_WHILE_STOPPING = 15


def _ready(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


def _wait(predicate: object, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)  # every wait ends on an event: polled briskly
    raise AssertionError(f"timed out waiting for {what}")


class Pieces:
    """A broker, a worker, the API and delivery, each a real process with its own log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.broker: LocalKafka = start_broker(root / "kafka")
        self.worker_port, self.api_port, store_port = free_port(), free_port(), free_port()
        self.env = dict(
            os.environ,
            DRIFTLINE_KAFKA_BOOTSTRAP=self.broker.bootstrap,
            DRIFTLINE_DATA_DIR=str(root / "data"),
            DRIFTLINE_WORKER_ID=f"shutdown-{root.name}",
            DRIFTLINE_WORKER_WEB_PORT=str(self.worker_port),
            DRIFTLINE_CLICKHOUSE_HTTP_PORT=str(store_port),
            DRIFTLINE_API_PORT=str(self.api_port),
        )
        self.processes: dict[str, subprocess.Popen] = {}
        self.start("worker", "worker")
        self.start("api", "api", DRIFTLINE_CLICKHOUSE_URL=f"http://default:@127.0.0.1:{store_port}")
        self.start("deliver", "deliver", "--group-id", f"shutdown-delivery-{root.name}")

    def start(self, name: str, *argv: str, **env: str) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the child writes to it
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "driftline.cli", *argv],
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self, name: str) -> list[str]:
        return (self.root / f"{name}.log").read_text(errors="replace").splitlines()

    def lines(self) -> dict[str, int]:
        return {name: len(self.log(name)) for name in self.processes}

    def wait_ready(self) -> None:
        _wait(lambda: _ready(self.api_port)[0] == 200 and _ready(self.worker_port)[0] == 200,
              "the API and the worker to be ready", timeout=180)  # fmt: skip
        # delivery says when it consumes
        _wait(lambda: any("delivering" in line for line in self.log("deliver")),
              "delivery to start")  # fmt: skip

    def stop(self, name: str) -> dict[str, int]:
        """Stop one piece (SIGTERM, or the broker's own stop); the lines each process logged
        meanwhile."""
        before = self.lines()
        if name == "broker":
            self.broker.stop()
        else:
            process = self.processes[name]
            os.killpg(process.pid, signal.SIGTERM)
            try:
                code = process.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                tail = "\n".join(self.log(name)[-30:])
                raise AssertionError(
                    f"{name} still running {GRACE_S} s after SIGTERM\n{tail}"
                ) from None
            assert code == 0, f"{name} exited with {code}\n" + "\n".join(self.log(name)[-30:])
        after = self.lines()
        return {n: after[n] - before[n] for n in after}

    def outage(self) -> dict[str, int]:
        """Lines each remaining process logs during OUTAGE_S."""
        before = self.lines()
        time.sleep(OUTAGE_S)
        after = self.lines()
        return {n: after[n] - before[n] for n in after if self.processes[n].poll() is None}

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.broker.stop()


@pytest.fixture
def pieces(tmp_path: Path) -> Iterator[Pieces]:
    running = Pieces(tmp_path)
    try:
        running.wait_ready()
        yield running
    finally:
        running.close()


def _bounded(counts: dict[str, int], limit: int, pieces: Pieces, when: str) -> None:
    for name, n in counts.items():
        assert n <= limit, f"{name} logged {n} lines {when}:\n" + "\n".join(pieces.log(name)[-n:])


def _said_stopped(pieces: Pieces) -> None:
    assert "stopped (exit code 0)" in pieces.log("worker")[-1]
    assert "control plane and store closed" in pieces.log("api")[-1]


def test_broker_first(pieces: Pieces) -> None:
    _bounded(pieces.stop("broker"), MAX_LINES_WHILE_STOPPING, pieces, "as the broker stopped")
    _wait(lambda: _ready(pieces.api_port)[0] == 503, "the API's /ready to say 503")
    status, body = _ready(pieces.api_port)
    assert status == 503 and any("Kafka" in p or "broker" in p for p in body["problems"]), body
    _bounded(pieces.outage(), MAX_LINES_DURING_OUTAGE, pieces, "while the broker was down")
    for name in ("worker", "api", "deliver"):
        _bounded(pieces.stop(name), MAX_LINES_WHILE_STOPPING, pieces, f"while {name} stopped")
    _said_stopped(pieces)


def test_worker_first(pieces: Pieces) -> None:
    _bounded(pieces.stop("worker"), MAX_LINES_WHILE_STOPPING, pieces, "as the worker stopped")
    # The API read the worker's store: gone with it, and /ready says so.
    _wait(lambda: _ready(pieces.api_port)[0] == 503, "the API's /ready to say 503")
    status, body = _ready(pieces.api_port)
    assert any("ClickHouse" in p for p in body["problems"]), body
    _bounded(pieces.outage(), MAX_LINES_DURING_OUTAGE, pieces, "while the store was gone")
    for name in ("api", "deliver", "broker"):
        _bounded(pieces.stop(name), MAX_LINES_WHILE_STOPPING, pieces, f"while {name} stopped")
    _said_stopped(pieces)


def test_api_first(pieces: Pieces) -> None:
    for name in ("api", "deliver", "worker", "broker"):
        _bounded(pieces.stop(name), MAX_LINES_WHILE_STOPPING, pieces, f"while {name} stopped")
    _said_stopped(pieces)


@pytest.mark.parametrize("after", ["embedded store in", "alert rules:", "assigned partitions"])
def test_a_worker_stopped_at_any_moment_of_its_start_exits_cleanly(
    kafka_broker: LocalKafka, tmp_path: Path, after: str
) -> None:
    """SIGTERM right after each startup step: exit code 0 (never killed by the signal)."""
    from e2e_support import start_worker, stop_worker, worker_env

    log = tmp_path / "worker.log"
    env = worker_env(kafka_broker.bootstrap, tmp_path / "data", f"stop-{os.getpid()}-{time.time_ns()}")
    worker = start_worker(env, log)
    try:
        _wait(lambda: after in log.read_text() or worker.poll() is not None, f"'{after}'")
    finally:
        code = stop_worker(worker)
    assert code == 0, log.read_text()[-3000:]
