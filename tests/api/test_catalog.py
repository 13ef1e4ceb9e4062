"""The api's copy of project facts agrees with the project, and api imports stay in bounds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import driftline.detectors  # noqa: F401 - registers every detector class
from driftline.api.catalog import DETECTORS, METRICS, STREAM_KINDS
from driftline.detectors.base import REGISTRY
from driftline.schemas import load_schema

API = Path(__file__).resolve().parents[2] / "api"


def test_detector_names_equal_the_registry() -> None:
    assert sorted(DETECTORS) == sorted(REGISTRY)


def test_window_test_names_equal_the_monitor_signals() -> None:
    from driftline.api.catalog import WINDOW_TESTS
    from driftline.detectors.monitor import SIGNAL_TESTS

    assert WINDOW_TESTS == SIGNAL_TESTS
    assert not set(WINDOW_TESTS) & set(REGISTRY)  # a rule's detector name means one thing


def test_stream_kinds_equal_the_drift_event_enum() -> None:
    schema = load_schema("DriftEvent")
    field = next(f for f in schema["fields"] if f["name"] == "stream_kind")
    assert tuple(field["type"]["symbols"]) == STREAM_KINDS


def test_metrics_are_what_the_dry_run_computes() -> None:
    from driftline.schemas.alert_lifecycle import metric_value
    from driftline.schemas.rules import ESTIMATED_METRICS

    sums = [4.0] * 7  # every slot of the lifecycle's metric sums
    for metric in METRICS:
        if metric in ESTIMATED_METRICS:  # CBPE estimates: detector_stats rows, not sums
            continue
        value, _ = metric_value(metric, sums)
        assert value is not None, metric


def test_estimated_metrics_are_the_ones_the_workers_write() -> None:
    from driftline.api.catalog import ESTIMATORS
    from driftline.schemas.rules import ESTIMATED_METRICS, ESTIMATOR
    from driftline.streams.estimates import ESTIMATED_METRICS as WRITTEN

    assert set(ESTIMATED_METRICS) <= set(METRICS)
    assert tuple(WRITTEN) == ESTIMATED_METRICS
    assert ESTIMATORS == (ESTIMATOR,)
    assert not set(ESTIMATORS) & set(REGISTRY)  # a rule's detector name means one thing


def _module_level_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in tree.body:  # module level only: call-time imports in functions are allowed
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_api_imports_only_schemas_and_sinks_of_the_project() -> None:
    for path in API.rglob("*.py"):
        for name in _module_level_imports(path):
            if name.startswith("driftline"):
                assert name.startswith(("driftline.schemas", "driftline.sinks")), (path, name)
    # Anywhere in the file (functions included), never streams, detectors or core; except the
    # pure profile code of detectors.reference, imported at call time (reference uploads build
    # and check a profile exactly as the SDK and CLI do), and detectors.monitor's settings
    # checks, likewise (a model's own monitoring settings are checked by the monitor itself).
    forbidden = re.compile(
        r"^\s*(from|import)\s+driftline\.(streams|detectors(?!\.(reference|monitor)\b)|cli"
        r"|worker|client|admin)\b",
        re.M,
    )
    for path in API.rglob("*.py"):
        assert not forbidden.search(path.read_text()), path
