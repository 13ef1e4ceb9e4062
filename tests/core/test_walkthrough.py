"""The README's walkthrough ("Running the pieces") runs as written, top to bottom.

Its ```sh blocks are taken from README.md itself and run in order in one bash (``set -e``), in
an empty directory, with the virtualenv's bin first on PATH (the README says to activate it):
a real broker, worker, API, delivery, webhook receiver and Debian's Alertmanager on their
default ports. Only what is already promised is checked: the blocks' own waits (the webhook
gets FIRING, Alertmanager shows the alert), the report file, every piece ending cleanly.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.binaries import require_binary

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PORTS = {9092: "Kafka", 19093: "Kafka's controller", 8123: "the worker's store",
         6066: "the worker's status page", 8000: "the API", 9093: "Alertmanager",
         8088: "the webhook receiver"}  # fmt: skip


def walkthrough_blocks() -> list[str]:
    section = README.read_text(encoding="utf-8").split("### Running the pieces", 1)[1]
    section = section.split("\n### ", 1)[0]
    # up to the multi-worker example, which is an illustration of another set-up
    section = section.split("Workers with the same", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_the_walkthrough_has_every_step() -> None:
    script = "\n".join(walkthrough_blocks())
    for step in ("driftline kafka start", "driftline worker", "driftline api-key create",
                 "driftline api ", "prometheus-alertmanager", "--web.listen-address=127.0.0.1:9093",
                 "driftline deliver --alertmanager-url http://127.0.0.1:9093",
                 "/v1/subscriptions", "/v1/rules", "publish(", "FIRING", "driftline report",
                 "kill $WORKER", "driftline kafka stop"):  # fmt: skip
        assert step in script, step


def _in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    alertmanager = require_binary("prometheus-alertmanager")
    busy = [f"{port} ({what})" for port, what in PORTS.items() if _in_use(port)]
    if busy:
        pytest.fail(f"the walkthrough needs its default ports; in use: {', '.join(busy)}")
    script = "set -euo pipefail\n" + "\n".join(walkthrough_blocks())
    (tmp_path / "walkthrough.sh").write_text(script)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                   str(Path(alertmanager).parent), env.get("PATH", "")])  # fmt: skip
    env.update(VIRTUAL_ENV=str(Path(sys.executable).parent.parent))
    for name in list(env):
        if name.startswith("DRIFTLINE_"):
            del env[name]  # the README's defaults, not the test session's settings
    process = subprocess.Popen(
        ["bash", str(tmp_path / "walkthrough.sh")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    finally:
        # whatever a failed step left behind: the script's process group (its background
        # pieces are in it, even after bash exited), and the detached broker
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        subprocess.run([sys.executable, "-m", "driftline.cli", "kafka", "stop"], cwd=tmp_path,
                       env=env, capture_output=True, timeout=120)  # fmt: skip
    logs = "\n".join(
        f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:] for p in tmp_path.glob("*.log")
    )
    assert process.returncode == 0, f"the walkthrough failed:\n{output}\n{logs}"
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert "FIRING" in (tmp_path / "hook.log").read_text()
    worker_log = (tmp_path / "worker.log").read_text()
    assert "ClickHouse HTTP interface on http://127.0.0.1:8123" in worker_log
    assert "alert rule 'ChurnErrorDrift'" in worker_log
    assert "stopped (exit code 0)" in worker_log
    assert "control plane and store closed" in (tmp_path / "api.log").read_text()
    assert "Traceback" not in logs, logs
