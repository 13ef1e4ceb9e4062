"""The fault-injection suite (issue 9): helpers beside this file import by name, and the
recovery times the tests measured are summed up at the end of the run (for the README)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Test helpers beside this file (faults_support) import by name from the test modules here.
# Appended, not prepended: tests/api imports its own conftest by name, which a folder put
# first on sys.path would shadow.
sys.path.append(str(Path(__file__).parent))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from faults_support import FIGURES

    if not FIGURES:
        return
    terminalreporter.section("driftline fault injection: recovery times (s)")
    for what, values in sorted(FIGURES.items()):
        shown = ", ".join(f"{v:.2f}" for v in values)
        terminalreporter.write_line(f"{what}: {shown}")
