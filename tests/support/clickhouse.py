"""``driftline clickhouse serve`` in a process of its own: the ClickHouse HTTP endpoint the
server-store tests talk to, which the outage and fault tests kill, stall and restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from driftline.local_kafka import free_port, port_open

DEFAULT_USER = "tester:tester"


class StoreServer:
    """``driftline clickhouse serve`` over one data dir on one port (``user`` is
    ``name:password``): started, killed and restarted on the same data and port."""

    def __init__(self, data_dir: Path, port: int | None = None, user: str = DEFAULT_USER) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.user = user
        self.process: subprocess.Popen | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    def url(self, port: int | None = None) -> str:
        return f"http://{self.user}@127.0.0.1:{port or self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def start(self, port: int | None = None, timeout: float = 90.0) -> float:
        """Serve (on ``port``, default the store's own); returns the seconds until it listens."""
        port = port or self.port
        started = time.monotonic()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it until it ends
        self.process = subprocess.Popen(
            [sys.executable, "-m", "driftline.cli", "--data-dir", str(self.data_dir),
             "clickhouse", "serve", "--port", str(port), "--user", self.user],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        # polled tightly: recovery is measured from the moment the store listens
        while not port_open("127.0.0.1", port):
            if self.process.poll() is not None:
                raise RuntimeError(f"the store exited:\n{self.log_path.read_text()[-3000:]}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the store did not start within {timeout} s; see {self.log_path}")
            time.sleep(0.05)
        return time.monotonic() - started

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:  # never leak a server past the test
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.process = None

    def query(self, sql: str, port: int | None = None) -> list[list[Any]]:
        """Rows of ``sql`` over ClickHouse's HTTP protocol (plain urllib: no client state that
        could outlive a restart)."""
        user, password = self.user.split(":")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port or self.port}/?database=driftline",
            data=f"{sql} FORMAT JSONCompact".encode(),
            headers={"X-ClickHouse-User": user, "X-ClickHouse-Key": password},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["data"]

    def count(self, sql: str, port: int | None = None) -> int:
        return int(self.query(sql, port)[0][0])
