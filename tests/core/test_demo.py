"""The README's first command, as a new user runs it (shorter): drift seen, retraining asked."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_detects_drift_and_requests_retraining(tmp_path):
    env = dict(os.environ, DRIFTLINE_DATA_DIR=str(tmp_path / "state"))
    result = subprocess.run(
        [sys.executable, "-m", "driftline.cli", "demo", "--drift-after", "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "DRIFT  sea-classifier: feature stream 'sensor'" in out
    assert "DRIFT  sea-classifier: error stream 'error'" in out
    assert "RETRAIN  sea-classifier" in out
    assert "ClickHouse now holds: predictions=" in out
    # the dashboard was served during the run, with a read-only key to log in with
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/ui  \(log in with the read-only key dl_", out)
