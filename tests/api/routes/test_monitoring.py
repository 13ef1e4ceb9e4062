"""PUT/GET/DELETE /v1/models/{model}/monitoring: a model's own budget and window settings.

The API's side through the real app over the in-memory control plane (fast): validation by
the monitor's own checks, scopes, versions, the round trip and the record the workers read
(parsed here by the workers' own RuleBook and MonitorConfigs). The worker end, through the
real broker and a worker process, is test_settings_reach_a_running_worker below."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import auth
from driftline.api import ApiConfig, ControlPlane, InMemoryControlPlane, create_app, crud
from driftline.api.tables import audit_row
from driftline.detectors.budget import FalseAlarmBudget
from driftline.detectors.monitor import MONITOR_SETTINGS, MonitorConfig
from driftline.schemas import monitoring
from driftline.schemas.control_plane import encode_value
from driftline.streams.rulebook import MonitorConfigs, RuleBook
from fastapi.testclient import TestClient

# The workers' defaults in these tests: not the built-in ones, so "effective" shows they are
# the API's configured defaults that fill in.
DEFAULTS = MonitorConfig(window_size=3000, events_per_day=500_000.0)


def _app(cp: InMemoryControlPlane, **config: Any) -> Any:
    return create_app(ApiConfig(monitor_defaults=DEFAULTS.settings(), **config), control_plane=cp)


@pytest.fixture
def memory() -> tuple[TestClient, InMemoryControlPlane, dict[str, str]]:
    cp = InMemoryControlPlane()
    tokens = {
        scope: crud.create_api_key(control_plane=cp, name=scope, scopes=[scope], actor="t")[0]
        for scope in ("read", "write")
    }
    return TestClient(_app(cp), headers=auth(tokens["write"])), cp, tokens


def test_round_trip_defaults_fill_in_and_the_worker_reads_the_record(memory) -> None:  # noqa: ANN001
    client, cp, _ = memory
    before = client.get("/v1/models/churn/monitoring")
    assert before.status_code == 200 and "ETag" not in before.headers
    assert before.json()["version"] is None and before.json()["settings"] == {}
    assert before.json()["effective"]["window_size"] == 3000

    body = {"false_alarms": 1, "days": 90, "window_size": 2000, "max_window_seconds": 3600}
    created = client.put("/v1/models/churn/monitoring", json=body)
    assert created.status_code == 201, created.text
    assert created.headers["ETag"] == '"1"'
    got = client.get("/v1/models/churn/monitoring").json()
    assert got == created.json()
    assert got["version"] == 1 and got["updated_by"].endswith("/write")
    assert got["settings"] == body
    assert got["effective"] == {
        "false_alarms": 1.0,
        "days": 90.0,
        "events_per_day": 500_000.0,  # the default, left out of the body
        "window_size": 2000,
        "max_window_seconds": 3600.0,
        "auto_reference_events": 10_000,
        "windows_per_day": 500_000 / 2000 + 86_400 / 3600,
    }

    # What a worker makes of the record: the same effective settings, the other model none.
    record = cp.get("monitoring", "churn")
    book = RuleBook()
    assert book.apply(record.key, encode_value(record))
    configs = MonitorConfigs(DEFAULTS, book)
    assert configs("churn").settings() == {
        k: v for k, v in got["effective"].items() if k != "windows_per_day"
    }
    assert configs("churn").budget == FalseAlarmBudget(1.0, 90.0)
    assert configs("fraud") is DEFAULTS

    # PUT replaces: what is left out now goes back to the default.
    replaced = client.put("/v1/models/churn/monitoring", json={"window_size": 500})
    assert replaced.status_code == 200
    assert replaced.json()["settings"] == {"window_size": 500}
    assert replaced.json()["effective"]["days"] == DEFAULTS.budget.days
    assert replaced.json()["created_at"] == got["created_at"]

    # any model id, headers included (they are latin-1: the id goes percent-encoded)
    odd = client.put("/v1/models/Āb c/monitoring", json={})
    assert odd.status_code == 201 and odd.headers["Location"] == "/v1/models/%C4%80b%20c/monitoring"
    assert client.get(odd.headers["Location"]).json()["model_id"] == "Āb c"

    assert client.delete("/v1/models/churn/monitoring").status_code == 204
    assert cp.get("monitoring", "churn") is None
    assert client.get("/v1/models/churn/monitoring").json()["version"] is None
    assert client.delete("/v1/models/churn/monitoring").status_code == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"window_size": 50}, "greater than or equal to 100"),
        ({"window_size": 2000.5}, "valid integer"),
        ({"days": 0}, "greater than 0"),
        ({"false_alarms": -1}, "greater than 0"),
        ({"events_per_day": "lots"}, "valid number"),
        ({"days": "30"}, "valid number"),
        # the request's fields allow it, the monitor's own checks do not
        ({"max_window_seconds": 0.0001}, "max_window_seconds must be at least 0.001"),
        ({"days": 40_000}, "less than or equal to 36500"),
        ({"windows": 3}, "Extra inputs are not permitted"),
        ({"window_size": True}, "valid integer"),
    ],
)
def test_bad_settings_are_422_naming_the_setting_and_write_nothing(
    memory, body: dict, message: str  # noqa: ANN001
) -> None:
    client, cp, _ = memory
    response = client.put("/v1/models/churn/monitoring", json=body)
    assert response.status_code == 422, response.text
    assert message in response.text
    assert cp.get("monitoring", "churn") is None


def test_scopes_versions_and_known_models(memory) -> None:  # noqa: ANN001
    client, cp, tokens = memory
    reader = TestClient(client.app, headers=auth(tokens["read"]))
    assert reader.put("/v1/models/m/monitoring", json={}).status_code == 403
    assert reader.get("/v1/models/m/monitoring").status_code == 200
    assert reader.delete("/v1/models/m/monitoring").status_code == 403
    assert TestClient(client.app).get("/v1/models/m/monitoring").status_code == 401

    # conditional writes, as for every entity (docs/api.md, Conventions)
    assert client.put("/v1/models/m/monitoring", json={"version": 3}).status_code == 409
    assert client.put("/v1/models/m/monitoring", json={}, headers={"If-Match": '"1"'}).status_code == 412
    assert client.put("/v1/models/m/monitoring", json={"version": 0}).status_code == 201
    assert client.put("/v1/models/m/monitoring", json={"version": 0}).status_code == 409
    assert client.put("/v1/models/m/monitoring", json={"days": 60, "version": 1}).status_code == 200
    stale = client.put("/v1/models/m/monitoring", json={}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert client.delete("/v1/models/m/monitoring", headers={"If-Match": '"1"'}).status_code == 412
    assert cp.get("monitoring", "m").data == {"days": 60}

    known = TestClient(_app(cp, known_models=frozenset({"churn"})), headers=auth(tokens["write"]))
    assert known.put("/v1/models/churn/monitoring", json={}).status_code == 201
    unknown = known.put("/v1/models/fraud/monitoring", json={"days": 60})
    assert unknown.status_code == 404 and "DRIFTLINE_KNOWN_MODELS" in unknown.text
    assert cp.get("monitoring", "fraud") is None


def test_a_record_not_written_by_the_api_is_skipped_by_workers_and_api() -> None:
    cp = InMemoryControlPlane()
    token, _ = crud.create_api_key(control_plane=cp, name="r", scopes=["read"], actor="t")
    cp.put("monitoring", "odd", {"window_size": "big"}, actor="someone")
    cp.put("monitoring", "zero", {"window_size": 0}, actor="someone")
    client = TestClient(_app(cp), headers=auth(token))
    odd = client.get("/v1/models/odd/monitoring")
    assert odd.status_code == 404 and "cannot use" in odd.text
    assert client.get("/v1/models/zero/monitoring").status_code == 404

    book = RuleBook()
    for ident in ("odd", "zero"):
        record = cp.get("monitoring", ident)
        book.apply(record.key, encode_value(record))
    assert book.monitoring("odd") is None  # not settings at all: left out
    configs = MonitorConfigs(DEFAULTS, book)
    assert configs("zero") is DEFAULTS  # settings the monitor refuses: the defaults


def test_the_names_agree_and_writes_are_audited() -> None:
    assert monitoring.FIELDS == MONITOR_SETTINGS
    assert set(MonitorConfig().settings()) == set(MONITOR_SETTINGS)
    cp = InMemoryControlPlane()
    record = crud.set_monitoring(
        control_plane=cp, model_id="m", settings={"days": 7, "window_size": None},
        defaults=DEFAULTS.settings(), actor="t", expect=None,
    )  # fmt: skip
    assert record.data == {"days": 7}  # nulls are not stored: the default applies
    row = audit_row(record, op="upsert")
    assert (row["kind"], row["id"], row["version"]) == ("monitoring", "m", 1)


def test_the_api_and_the_workers_read_the_same_defaults() -> None:
    """``driftline api`` passes ``Settings.monitor_settings()`` as the defaults; the worker
    builds its MonitorConfig from the same settings: they must agree."""
    from driftline.settings import load_settings
    from driftline.worker import monitor_config

    settings = load_settings(
        monitor_window_size=700, monitor_max_window_seconds=120.5, monitor_false_alarms=2,
        monitor_false_alarm_days=45, monitor_events_per_day=3e5,
        monitor_auto_reference_events=900,
    )  # fmt: skip
    assert crud.effective_monitoring(settings.monitor_settings(), {}) == monitor_config(settings)


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.e2e
def test_settings_reach_a_running_worker(fresh_kafka, tmp_path: Path) -> None:  # noqa: ANN001
    """Real broker, API and worker process, embedded ClickHouse: a window size set through the
    API while the worker runs is used for that model from its next window on (and its alpha
    follows its budget), while another model keeps the worker's default."""
    from e2e_support import lag, query_store, start_worker, stop_worker, wait_for, worker_env

    from driftline.admin import ensure_topics
    from driftline.client import DriftlineProducer

    bootstrap = fresh_kafka.bootstrap
    ensure_topics(bootstrap, 1)
    control_plane = ControlPlane(bootstrap).start()
    assert control_plane.wait_ready(30)
    token, _ = crud.create_api_key(control_plane=control_plane, name="ci", scopes=["write"],
                                   actor="tests")  # fmt: skip
    # the API and the worker share their defaults, as in a deployment (DRIFTLINE_MONITOR_*)
    defaults = MonitorConfig(window_size=500, auto_reference_events=500)
    client = TestClient(
        create_app(ApiConfig(monitor_defaults=defaults.settings()), control_plane=control_plane),
        headers=auth(token),
    )
    app_id = f"worker-{uuid.uuid4().hex[:8]}"
    env = worker_env(bootstrap, tmp_path / "data", app_id,
                     DRIFTLINE_MONITOR_WINDOW_SIZE="500",
                     DRIFTLINE_MONITOR_AUTO_REFERENCE_EVENTS="500")  # fmt: skip
    log = tmp_path / "worker.log"
    start = 1_790_000_000_000
    sent = 0

    worker = start_worker(env, log)
    try:
        with DriftlineProducer(bootstrap) as producer:

            def send(n: int) -> None:
                # both models, the same stationary traffic
                nonlocal sent
                g = np.random.default_rng(sent)
                times = start + 10 * (sent + np.arange(n))
                for model in ("small", "other"):
                    producer.log_predictions(
                        model, pd.DataFrame({"x": g.normal(0.0, 1.0, n)}), event_time=times
                    )
                assert producer.flush(60) == 0
                sent += n
                wait_for(lambda: lag(bootstrap, app_id) == 0, 240, "the worker to catch up",
                         worker, log)  # fmt: skip

            # the first 500 events are the reference, then one window of 500: none left open
            send(1000)
            put = client.put("/v1/models/small/monitoring", json={"window_size": 200})
            assert put.status_code == 201, put.text
            # the worker says when its control-plane reader applied the record
            wait_for(lambda: "monitoring settings of model 'small' loaded, v1" in log.read_text(),
                     60, "the worker to load the settings", worker, log)  # fmt: skip
            send(1000)
    finally:
        assert stop_worker(worker) in (0, -signal.SIGTERM), log.read_text()[-3000:]
        client.close()
        control_plane.close()

    rows = query_store(tmp_path / "data", {
        "windows": "SELECT model_id, first_position, last_position, any(threshold) "
                   "FROM feature_drift FINAL WHERE test = 'ks' "
                   "GROUP BY model_id, first_position, last_position ORDER BY 1, 2",
    })  # fmt: skip
    windows: dict[str, list[tuple[int, int, float]]] = {}
    for model, first, last, alpha in rows["windows"]:
        windows.setdefault(model, []).append((int(first), int(last), float(alpha)))
    # positions count the model's events from 0; windows start after its 500 reference events
    assert [(a, b) for a, b, _ in windows["other"]] == [(500, 999), (1000, 1499), (1500, 1999)]
    assert [(a, b) for a, b, _ in windows["small"]] == [
        (500, 999), (1000, 1199), (1200, 1399), (1400, 1599), (1600, 1799), (1800, 1999)
    ]
    # alpha follows the model's budget: the same budget over 2.5 times the windows a day
    old, new = defaults, defaults.with_settings(window_size=200)
    before = windows["small"][0][2]
    assert windows["other"][0][2] == before
    expected = before * old.windows_per_day() / new.windows_per_day()
    assert all(alpha == pytest.approx(expected, rel=1e-9) for _, _, alpha in windows["small"][1:])
