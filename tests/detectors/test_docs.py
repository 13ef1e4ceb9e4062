"""docs/detectors.md's parameter tables are generated from the classes; keep them in step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_parameter_tables_match_the_code():
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "detectors_tables.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
