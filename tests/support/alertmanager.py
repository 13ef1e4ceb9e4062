"""A real Prometheus Alertmanager (Debian's prometheus-alertmanager binary) for one test."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from driftline.local_kafka import free_port
from support.binaries import require_binary

WAIT = 30.0


@contextmanager
def running_alertmanager(work_dir: Path) -> Iterator[str]:
    """Start Alertmanager (no cluster, a receiver that drops notifications) with its state
    under ``work_dir``; yields its base URL and stops it when the block ends."""
    binary = require_binary("prometheus-alertmanager", "/usr/bin/prometheus-alertmanager")
    config = work_dir / "alertmanager.yml"
    config.write_text("route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={work_dir / 'alertmanager-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT
        while True:
            if process.poll() is not None:
                assert process.stderr is not None
                raise RuntimeError(f"alertmanager exited: {process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("alertmanager did not become ready")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
