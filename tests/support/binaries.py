"""External programs some tests drive (Alertmanager, Chromium): found, or the test stops.

Under ``CI=true`` a missing binary fails the test, so a CI image that lost a package cannot
turn a suite green by skipping; on a developer machine it skips, saying what to install.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

#: What installs each binary (Debian packages; scripts/setup.sh installs them).
INSTALL_HINTS = {
    "prometheus-alertmanager": "apt-get install prometheus-alertmanager (scripts/setup.sh)",
    "chromium": "apt-get install chromium",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def find_binary(name: str, *candidates: str) -> str | None:
    """``name`` on PATH, else the first of ``candidates`` (absolute paths) that exists."""
    found = shutil.which(name)
    if found:
        return found
    return next((c for c in candidates if Path(c).exists()), None)


def require_binary(name: str, *candidates: str) -> str:
    """The path of ``name``; fails the calling test under CI when it is missing, skips it
    (with the reason) elsewhere."""
    found = find_binary(name, *candidates)
    if found is not None:
        return found
    hint = INSTALL_HINTS.get(name, f"install {name}")
    message = f"{name} is not installed ({hint})"
    if in_ci():
        pytest.fail(f"{message}; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(message)
