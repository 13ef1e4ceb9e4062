"""Closing the loop with real processes: a real broker, a worker serving its ClickHouse over
HTTP, the example trainer (examples/trainer), and this test as the producing service.

The served model (version 1, a river tree of the concept x0 + x1 <= 8) meets a new concept
(x0 + x1 <= 3): its error stream drifts, and two retraining requests go out: the worker's
built-in ``error-drift`` policy (window: the hour before the drift, mostly the *old* concept:
a bad retrain) and an alert rule's ``retrain`` action (window: the minute after the change: a
good one). A trainer takes the rule's request and publishes version 2; predictions switch to
it; the worker re-baselines and, after enough labels, calls it BETTER than version 1. A second
trainer takes the built-in request and publishes version 3; predictions switch to it; the
verdict is WORSE, with a RollbackRecommended naming version 2 and an AlertEvent from a verdict
rule (the BETTER verdict raises none). ``driftline lineage`` shows
both chains complete: drift -> (alert ->) request -> published version -> serving -> verdict.
Nothing here asserts a time: every wait ends on an event.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np
import pytest
from driftline.api import ControlPlane, crud
from driftline.api.models import RuleCreate
from driftline.schemas import event_id, topics
from e2e_support import decode_all, lag, read_topic, stop_worker, worker_env

from driftline.admin import ensure_topics
from driftline.local_kafka import free_port, port_open
from driftline.synthetic import publish

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TRAINER = ROOT / "examples" / "trainer" / "trainer.py"
MODEL = "loan"
STEP_MS = 50  # event time between predictions
LABEL_LAG = 40  # outcomes arrive 40 steps after their predictions
CHANGE = 2000  # theta 8 -> 3
CHUNK = 500
MAX_STEPS = 20_000
MIN_LABELS = 300  # labelled predictions of a new version before its verdict
WAIT = 180.0  # an upper bound for "eventually"; no timing is asserted


def _sea(seed: int, i: int, theta: float) -> tuple[dict[str, float], str]:
    x = np.random.default_rng([seed, i]).uniform(0.0, 10.0, 3)
    return {f"x{j}": float(v) for j, v in enumerate(x)}, str(x[0] + x[1] <= theta).lower()


def old_concept_model() -> Any:
    from river import tree

    model = tree.HoeffdingTreeClassifier(grace_period=100)
    for i in range(5000):
        model.learn_one(*_sea(1, i, 8.0))
    return model


class Serving:
    """Duck-types SyntheticStream for ``driftline.synthetic.publish``: step i's prediction by
    the version serving from the step it was put in service, and its outcome."""

    def __init__(self, model: Any) -> None:
        self.start_ms = int(time.time() * 1000) - 9000 * STEP_MS
        self.versions: list[tuple[int, str, Any]] = [(0, "1", model)]
        self._cache: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}

    def serve(self, from_step: int, version: str, model: Any) -> None:
        self.versions.append((from_step, version, model))

    def step(self, i: int) -> tuple[dict[str, Any], dict[str, Any]]:
        if i not in self._cache:
            _, version, model = [v for v in self.versions if v[0] <= i][-1]
            features, actual = _sea(7, i, 3.0 if i >= CHANGE else 8.0)
            prediction_id = event_id("versions-e2e", MODEL, str(i))
            at = self.start_ms + i * STEP_MS
            prediction = {
                "event_id": prediction_id, "model_id": MODEL, "model_version": version,
                "event_time": at, "numeric_features": features, "categorical_features": {},
                "segments": {}, "prediction_label": model.predict_one(features),
                "prediction_score": None, "prediction_value": None, "probabilities": None,
            }  # fmt: skip
            outcome = {
                "event_id": event_id("versions-e2e-outcome", prediction_id),
                "prediction_id": prediction_id, "model_id": MODEL,
                "event_time": at + LABEL_LAG * STEP_MS, "label": actual, "value": None,
            }  # fmt: skip
            self._cache[i] = (prediction, outcome)
        return self._cache[i]


class Processes:
    """Child processes with their logs; stopped (SIGTERM to the group) in reverse order."""

    def __init__(self, tmp_path: Path, stack: ExitStack) -> None:
        self.tmp_path = tmp_path
        self.stack = stack
        self.running: dict[str, tuple[subprocess.Popen, Path]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = self.tmp_path / f"{name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.running[name] = (process, log)
        self.stack.callback(stop_worker, process)
        return process

    def check(self) -> None:
        for name, (process, log) in self.running.items():
            # a trainer run with --max-requests ends by itself, with 0
            if process.poll() not in (None, 0) or (
                process.poll() == 0 and not name.startswith("trainer")
            ):
                raise AssertionError(
                    f"{name} exited with {process.returncode}\n{log.read_text()[-3000:]}"
                )

    def tails(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{log.read_text()[-2500:]}" for name, (_, log) in self.running.items()
        )


def wait_until(predicate: Callable[[], Any], what: str, procs: Processes) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        procs.check()
        time.sleep(0.3)
    raise AssertionError(f"timed out after {WAIT}s waiting for {what}\n{procs.tails()}")


def load_artifact(record: dict[str, Any]) -> Any:
    with open(url2pathname(urlsplit(record["artifact_uri"]).path), "rb") as f:
        return pickle.load(f)  # noqa: S301 - written by this test's trainer


def create_rules(bootstrap: str) -> tuple[str, str]:
    """The alert rule whose retrain action asks for the good retrain, and a rule on WORSE
    verdicts (through the control plane, as the API would)."""
    control_plane = ControlPlane(bootstrap).start()
    try:
        assert control_plane.wait_ready(60)
        rule = RuleCreate.model_validate(
            {
                "name": "LoanErrorDrift",
                "models": [MODEL],
                "signal": {"kind": "drift", "stream_kind": "ERROR", "stream_name": "*",
                           "detector": "*"},
                "condition": {"type": "drift_detected"},
                "severity": "critical",
                "for": "1m",
                "repeat_interval": "2m",
                # the minute the alert waited through: data of the new concept only
                "actions": [{"type": "retrain", "priority": "HIGH", "lookback": "1m"}],
            }
        )  # fmt: skip
        verdict_rule = RuleCreate.model_validate(
            {"name": "LoanVersionWorse", "models": [MODEL], "severity": "critical",
             "signal": {"kind": "verdict"}, "condition": {"type": "verdict_is", "outcome": "WORSE"}}
        )  # fmt: skip
        return (
            crud.create_rule(control_plane=control_plane, rule_in=rule, actor="e2e").id,
            crud.create_rule(control_plane=control_plane, rule_in=verdict_rule, actor="e2e").id,
        )
    finally:
        control_plane.close()


def test_retrain_publish_rebaseline_verdicts_rollback_and_lineage(fresh_kafka, tmp_path):
    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 2)
    rule_id, verdict_rule_id = create_rules(bootstrap)
    with ExitStack() as stack:
        procs = Processes(tmp_path, stack)
        app_id = f"worker-{uuid.uuid4().hex[:8]}"
        ch_port = free_port()
        procs.start(
            "worker",
            [sys.executable, "-m", "driftline.cli", "worker"],
            worker_env(
                bootstrap, tmp_path / "data", app_id,
                DRIFTLINE_TOPIC_PARTITIONS="2",
                DRIFTLINE_VERDICT_MIN_LABELS=str(MIN_LABELS),
                DRIFTLINE_CLICKHOUSE_HTTP_PORT=str(ch_port),
                DRIFTLINE_CLICKHOUSE_HTTP_USERS='{"writer": "w-secret"}',
                DRIFTLINE_CLICKHOUSE_HTTP_READONLY_USERS='{"reader": "r-secret"}',
            ),
        )  # fmt: skip
        wait_until(lambda: port_open("127.0.0.1", ch_port), "the ClickHouse endpoint", procs)
        # the trainers and `driftline lineage` read as a read-only user
        reader_url = f"http://reader:r-secret@127.0.0.1:{ch_port}"
        models_dir = tmp_path / "models"

        def trainer(name: str, policy: str, max_requests: int) -> None:
            procs.start(
                name,
                [sys.executable, str(TRAINER), "--models-dir", str(models_dir),
                 "--bootstrap", bootstrap, "--clickhouse-url", reader_url,
                 "--group-id", f"trainer-{name}", "--policy", policy,
                 "--max-requests", str(max_requests)],
                dict(os.environ),
            )  # fmt: skip

        # the good trainer: the rule's request (it passes over the built-in one first)
        trainer("trainer-good", "rule:*", 2)
        serving = Serving(old_concept_model())
        sent = 0

        def publish_chunk() -> None:
            nonlocal sent
            assert sent < MAX_STEPS, f"stuck after {sent} steps\n{procs.tails()}"
            publish(bootstrap, serving, CHUNK, start=sent, outcome_lag=LABEL_LAG)
            sent += CHUNK
            wait_until(lambda: lag(bootstrap, app_id) == 0, "the worker to catch up", procs)

        def versions_published() -> dict[str, dict[str, Any]]:
            return {r["version"]: r for r in decode_all(read_topic(bootstrap, topics.MODELS))}

        def verdict_records() -> list[dict[str, Any]]:
            """ModelVerdicts (their RollbackRecommended records are the ones with to_version)."""
            return [r for r in decode_all(read_topic(bootstrap, topics.VERDICTS))
                    if "verdict" in r]  # fmt: skip

        # -- version 1 drifts; publish until the good retrain is published as version 2
        while "2" not in versions_published():
            publish_chunk()
        v2 = versions_published()["2"]
        requests = {r["event_id"]: r for r in decode_all(read_topic(bootstrap, topics.RETRAINING))}
        good_request = requests[v2["retraining_request_id"]]
        assert good_request["policy"] == f"rule:{rule_id}"
        assert good_request["window_start"] >= serving.start_ms + CHANGE * STEP_MS

        # -- version 2 serves: re-baselined, then judged against version 1
        serving.serve(sent, "2", load_artifact(v2))
        while not [v for v in verdict_records() if v["version"] == "2"]:
            publish_chunk()
        (better,) = [v for v in verdict_records() if v["version"] == "2"]
        print(f"version 2 vs 1: {better['value']:.3f} vs {better['previous_value']:.3f}, "
              f"p={better['p_value']:.2g}")  # fmt: skip
        assert better["verdict"] == "BETTER", better
        assert better["previous_version"] == "1" and better["n_labels"] == MIN_LABELS
        assert better["published_event_id"] == v2["event_id"]

        # -- the bad retrain (the built-in request's window: the old concept) as version 3
        trainer("trainer-bad", "error-drift", 1)
        wait_until(lambda: "3" in versions_published(), "the bad retrain", procs)
        v3 = versions_published()["3"]
        assert requests[v3["retraining_request_id"]]["policy"] == "error-drift"
        serving.serve(sent, "3", load_artifact(v3))
        while not [v for v in verdict_records() if v["version"] == "3"]:
            publish_chunk()
        (worse,) = [v for v in verdict_records() if v["version"] == "3"]
        print(f"version 3 vs 2: {worse['value']:.3f} vs {worse['previous_value']:.3f}, "
              f"p={worse['p_value']:.2g}; steps published: {sent}")  # fmt: skip
        assert worse["verdict"] == "WORSE" and worse["previous_version"] == "2", worse
        (rollback,) = [r for r in decode_all(read_topic(bootstrap, topics.VERDICTS))
                       if "to_version" in r]  # fmt: skip
        assert (rollback["from_version"], rollback["to_version"]) == ("3", "2")
        assert rollback["verdict_event_id"] == worse["event_id"]

        # the WORSE verdict raised an alert through the verdict rule; the BETTER one did not
        # (the worker has caught up: the verdict and its alert come out of the same batch)
        verdict_alerts = [a for a in decode_all(read_topic(bootstrap, topics.ALERTS))
                          if a["rule_id"] == verdict_rule_id]  # fmt: skip
        assert [(a["status"], a["trigger_event_ids"]) for a in verdict_alerts] == [
            ("FIRING", [worse["event_id"]])
        ], verdict_alerts
        assert verdict_alerts[0]["annotations"]["rollback_to"] == "2"

        # re-baselining: version 3 has error detectors of its own, and, worse from its first
        # prediction, made no drift on them (detectors carried over from version 2 would have
        # seen its error jump; the verdict is what catches it)
        drifts = decode_all(read_topic(bootstrap, topics.DRIFT))
        error_drifts = {d["model_version"] for d in drifts if d["stream_kind"] == "ERROR"}
        assert "1" in error_drifts and "3" not in error_drifts

        # -- lineage, through the CLI on the worker's endpoint, as the read-only user
        def lineage() -> dict[str, Any] | None:
            result = subprocess.run(
                [sys.executable, "-m", "driftline.cli", "lineage", "--model", MODEL, "--json",
                 "--clickhouse-url", reader_url],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
            data = json.loads(result.stdout)
            chains = {c["version"]["version"]: c for c in data["versions"]}
            done = all(chains.get(v, {}).get("complete") for v in ("2", "3"))
            return chains if done else None

        chains = wait_until(lineage, "complete lineage of versions 2 and 3", procs)
        assert chains["2"]["alerts"] and chains["2"]["retraining_request"]["policy"].startswith(
            "rule:"
        )
        assert not chains["3"]["alerts"]  # the built-in policy answers the drift directly
        assert chains["3"]["verdicts"][0]["rollback_to"] == "2"
        assert chains["3"]["version"]["previous_version"] == "2"
        assert not chains["1"]["complete"]  # the first version was never asked for
