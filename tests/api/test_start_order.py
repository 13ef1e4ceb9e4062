"""``driftline api`` and ``driftline deliver`` started before the broker and the store, as real
processes: they wait instead of exiting, ``/ready`` says what is missing and follows the
dependencies as they come and go, their logs stay short, and SIGTERM ends them promptly even
with the broker gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from driftline.local_kafka import LocalKafka, free_port, port_open

pytestmark = pytest.mark.e2e

USER = "tester:tester"


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "driftline.cli", *args],
        env=env,
        stdout=open(log, "ab"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def eventually(what: str, check: Callable[[], bool], timeout: float, *procs: Any) -> float:
    """Seconds until ``check`` held; fails after ``timeout`` or if a process died."""
    started = time.monotonic()
    while not check():
        for proc, log in procs:
            assert proc.poll() is None, f"{log.name} exited while waiting for {what}:\n" + (
                log.read_text()[-3000:]
            )
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.2)
    return time.monotonic() - started


def ready(base: str) -> tuple[int, list[str]]:
    try:
        response = httpx.get(f"{base}/ready", timeout=5)
    except httpx.TransportError:
        return 0, ["no answer"]
    return response.status_code, response.json().get("problems", [])


def terminate(proc: subprocess.Popen) -> float:
    """SIGTERM; seconds until the process exited (killed after 30 s)."""
    started = time.monotonic()
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return time.monotonic() - started


def test_api_and_delivery_start_before_their_dependencies(tmp_path: Path) -> None:
    kafka_port, controller_port, ch_port, api_port = (free_port() for _ in range(4))
    env = dict(
        os.environ,
        DRIFTLINE_DATA_DIR=str(tmp_path / "data"),
        DRIFTLINE_KAFKA_BOOTSTRAP=f"127.0.0.1:{kafka_port}",
        DRIFTLINE_CLICKHOUSE_URL=f"http://{USER}@127.0.0.1:{ch_port}",
        DRIFTLINE_TOPIC_PARTITIONS="2",
    )
    base = f"http://127.0.0.1:{api_port}"
    api_log, deliver_log, ch_log = tmp_path / "api.log", tmp_path / "deliver.log", tmp_path / "ch.log"
    broker = LocalKafka(data_dir=tmp_path / "kafka", port=kafka_port, controller_port=controller_port)
    ch_data = tmp_path / "ch"
    ch: subprocess.Popen | None = None

    def start_clickhouse() -> subprocess.Popen:
        proc = spawn(["--data-dir", str(ch_data), "clickhouse", "serve", "--port", str(ch_port),
                      "--user", USER], dict(os.environ), ch_log)  # fmt: skip
        eventually("the ClickHouse endpoint", lambda: port_open("127.0.0.1", ch_port), 60,
                   (proc, ch_log))  # fmt: skip
        return proc

    api = spawn(["api", "--port", str(api_port), "--loglevel", "warning"], env, api_log)
    deliver = spawn(["deliver", "--loglevel", "info"], env, deliver_log)
    procs = ((api, api_log), (deliver, deliver_log))
    try:
        # Up and answering, though neither the broker nor the store exists yet.
        eventually("/health", lambda: _status(f"{base}/health") == 200, 60, *procs)
        code, problems = ready(base)
        assert code == 503, problems
        assert any("Kafka" in p for p in problems) and any("ClickHouse" in p for p in problems)
        time.sleep(3)  # still waiting, not exited
        assert api.poll() is None and deliver.poll() is None

        broker.start()
        eventually("the API to see the broker",
                   lambda: not any("Kafka" in p or "control plane" in p for p in ready(base)[1]),
                   60, *procs)  # fmt: skip
        assert ready(base)[0] == 503  # the store is still missing
        eventually("delivery to start", lambda: "delivering driftline.alerts" in
                   deliver_log.read_text(), 60, *procs)  # fmt: skip

        ch = start_clickhouse()
        eventually("/ready 200", lambda: ready(base)[0] == 200, 60, *procs)

        # The store goes away and comes back.
        os.killpg(ch.pid, signal.SIGKILL)
        ch.wait()
        took = eventually("/ready 503 without the store",
                          lambda: any("ClickHouse" in p for p in ready(base)[1]), 15, *procs)
        assert took < 5, took
        ch = start_clickhouse()
        eventually("/ready 200 again", lambda: ready(base)[0] == 200, 30, *procs)

        # The broker goes away: 503 within seconds, and the logs stay quiet.
        broker.stop()
        took = eventually("/ready 503 without the broker",
                          lambda: any("Kafka" in p for p in ready(base)[1]), 30, *procs)
        assert took < 10, took
        lines = {log: len(log.read_text().splitlines()) for _, log in procs}
        time.sleep(6)
        for _, log in procs:
            grown = len(log.read_text().splitlines()) - lines[log]
            assert grown <= 6, f"{log.name} logged {grown} lines in 6 s:\n{log.read_text()[-3000:]}"

        # SIGTERM with the broker gone.
        for proc, log in procs:
            took = terminate(proc)
            assert took < 6, f"{log.name} took {took:.1f} s to stop:\n{log.read_text()[-3000:]}"
            # uvicorn re-raises the SIGTERM it handled once it has shut down: -15 is its clean exit
            assert proc.returncode in (0, -signal.SIGTERM), log.read_text()[-3000:]
        assert "waiting for Kafka" in deliver_log.read_text()
        assert "waiting for Kafka" in api_log.read_text()
        assert "waiting for ClickHouse" in api_log.read_text()
    finally:
        for proc in (api, deliver, ch):
            if proc is not None:
                terminate(proc)
        broker.stop()


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return 0
