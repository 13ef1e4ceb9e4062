"""Doctests of every module of the package, collected by pytest under the module's real name.

pytest's own ``--doctest-modules`` imports a file by its path (``schemas/topics.py`` as
``schemas.topics``), so each module would exist twice beside ``driftline.schemas.topics``:
two detector registries, two faust apps, Prometheus metrics registered twice. The component
folders map onto ``driftline.<component>`` (pyproject's ``package-dir``), so this plugin
collects their files with pytest's doctest collector but imports each by its real name.
Loaded from pyproject (``-p support.doctests``); the folders are in ``testpaths``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest
from _pytest.doctest import DoctestModule

#: top-level folder -> the package it is (pyproject.toml, [tool.setuptools] package-dir)
COMPONENTS = {
    "driftline": "driftline",
    "schemas": "driftline.schemas",
    "detectors": "driftline.detectors",
    "sinks": "driftline.sinks",
    "streams": "driftline.streams",
    "api": "driftline.api",
}


def module_name(path: Path, root: Path) -> str | None:
    """``driftline.<component>.<module>`` of a source file, or None outside the package."""
    try:
        parts = list(path.relative_to(root).with_suffix("").parts)
    except ValueError:
        return None
    if len(parts) < 2 or parts[0] not in COMPONENTS:
        return None
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([COMPONENTS[parts[0]], *parts[1:]])


class PackageDoctests(DoctestModule):
    """pytest's doctest collector, importing the module by its package name."""

    def _getobj(self) -> ModuleType:
        name = module_name(self.path, self.config.rootpath)
        assert name is not None, self.path
        return importlib.import_module(name)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix != ".py" or file_path.name == "__main__.py":
        return None
    if module_name(file_path, parent.config.rootpath) is None:
        return None
    return PackageDoctests.from_parent(parent, path=file_path)
