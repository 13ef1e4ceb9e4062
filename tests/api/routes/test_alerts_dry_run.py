"""Everything that reads ClickHouse, against a real embedded store (one per module: chdb allows
one data path per process) and the real broker: dry-runs over drift_events, the metric views
and detector_stats; alerts and acknowledgements; the rule_versions audit trail."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from api_factories import drift_rule, iso, metric_rule, unique
from conftest import auth
from driftline.api import ApiConfig, ControlPlane, create_app
from driftline.sinks import ServerStore, Store
from driftline.sinks.store import open_store
from driftline.sinks.tables import joined_label
from fastapi.testclient import TestClient

# Whole hours, so 5-minute windows line up with the rows below.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


# The API runs on ServerStore (clickhouse-connect) in production and the tests on chdb: run the
# SQL through both clients, on the same engine and data path (chdb allows one per process).
@pytest.fixture(scope="module", params=["embedded", "server-chdb"])
def store(request: pytest.FixtureRequest, chdb_dir: Path) -> Iterator[Store]:
    if request.param == "embedded":
        store: Store = open_store(None, "api_tests", chdb_dir, ttl_days=None)
    else:
        store = ServerStore(f"chdb://{chdb_dir}", "api_tests_server", ttl_days=None)
    try:
        store.migrate()
        yield store
    finally:
        store.close()


@pytest.fixture
def client(control_plane: ControlPlane, store: Store, tokens: dict[str, str]) -> TestClient:
    app = create_app(ApiConfig(), control_plane=control_plane, store=store)
    return TestClient(app, headers=auth(tokens["write"]))


def drift_row(model: str, stream: str, at: datetime, position: int = 500, **extra) -> dict:  # type: ignore[no-untyped-def]
    event_id = f"{model}-{stream}-{ms(at)}"
    return {
        "event_id": event_id,
        "model_id": model,
        "model_version": "1",
        "stream_kind": "FEATURE",
        "stream_name": stream,
        "detector": "ADWIN",
        "detected_at": ms(at),
        "position": position,
        "statistic": 0.3,
        "p_value": None,
        "threshold": None,
        "evidence": {},
        "source_event_id": "p-" + event_id,
        **extra,
    }


def dry_run(client: TestClient, rule: dict, start: datetime, end: datetime) -> dict:
    response = client.post(
        "/v1/rules:dry-run", json={"rule": rule, "start": iso(start), "end": iso(end)}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_drift_dry_run_finds_the_events(client: TestClient, store: Store) -> None:
    model = unique("dr")
    store.insert_rows(
        "drift_events",
        [
            drift_row(model, "f00", T0),
            drift_row(model, "f00", T0 + timedelta(minutes=1)),  # within the cooldown
            drift_row(model, "f01", T0 + timedelta(minutes=5)),
            drift_row(model, "f00", T0 + timedelta(minutes=30)),
            drift_row(model, "f00", T0 + timedelta(minutes=40), position=3),  # too few samples
            drift_row(unique("other"), "f00", T0),
        ],
    )
    window = (T0 - timedelta(hours=1), T0 + timedelta(hours=1))

    def fired(rule: dict) -> list[tuple]:
        result = dry_run(client, rule, *window)
        return [
            (
                f["group"].get("stream_name"),
                datetime.fromisoformat(f["at"]) - T0,
                f["resolved_at"] and datetime.fromisoformat(f["resolved_at"]) - T0,
            )
            for f in result["firings"]
        ]

    minutes = lambda n: timedelta(minutes=n)  # noqa: E731
    # Episodes last until 10 quiet minutes; the one at 00:30 is past the 15m cooldown of the
    # first (resolved 00:11); 00:40 has too few samples to hold, so it only ends the second.
    rule = drift_rule(models=[model], repeat_interval="10m", cooldown="15m", min_samples=100)
    assert fired(rule) == [(None, minutes(0), minutes(11)), (None, minutes(30), minutes(40))]
    result = dry_run(client, rule, *window)
    assert result["firings"][0]["group"] == {"model_id": model}
    assert result["firings"][0]["event_ids"] == [
        f"{model}-f00-{ms(T0)}",
        f"{model}-f00-{ms(T0 + minutes(1))}",
    ]
    assert result["evaluated"] == 4  # the f00 events (f01 and other models filtered out)
    # A longer cooldown swallows the second episode.
    assert len(fired({**rule, "cooldown": "30m"})) == 1
    # With for: 5m each episode fires 5 minutes in, having seen 2 drifts by then.
    assert fired({**rule, "for": "5m"}) == [
        (None, minutes(5), minutes(11)),
        (None, minutes(35), minutes(40)),
    ]
    assert dry_run(client, {**rule, "for": "5m"}, *window)["firings"][0]["value"] == 2
    # The default 4h quiet period: one episode, still firing at the end of the range.
    assert fired(drift_rule(models=[model], min_samples=100)) == [(None, minutes(0), None)]

    # Any stream (a glob), one group per stream.
    any_stream = drift_rule(
        models=[model],
        repeat_interval="10m",
        min_samples=100,
        signal={"kind": "drift", "stream_kind": "FEATURE", "stream_name": "f0*", "detector": "*"},
        group_by=["model_id", "stream_name"],
    )
    assert fired(any_stream) == [
        ("f00", minutes(0), minutes(11)),
        ("f01", minutes(5), minutes(15)),
        ("f00", minutes(30), minutes(40)),
    ]

    # Selector globs pick the models out of the history.
    by_glob = drift_rule(models=None, model_selector={"model_id": model[:5] + "*"})
    result = dry_run(client, by_glob, T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert result["would_fire"] and result["warnings"] == []
    # A label the workers do not know matches no model there, so none in the dry-run either.
    unknown = drift_rule(models=None, model_selector={"model_id": model[:5] + "*", "team": "x"})
    result = dry_run(client, unknown, T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    assert not result["would_fire"] and any("team" in w for w in result["warnings"])

    # Outside the range: nothing.
    quiet = dry_run(client, rule, T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    assert quiet == {**quiet, "would_fire": False, "firings": [], "evaluated": 0}

    # A saved rule dry-runs the same way.
    saved = client.post("/v1/rules", json=rule).json()
    response = client.post(
        f"/v1/rules/{saved['id']}/dry-run",
        json={"start": iso(T0 - timedelta(hours=1)), "end": iso(T0 + timedelta(hours=1))},
    )
    assert response.status_code == 200 and len(response.json()["firings"]) == 2


def test_drift_dry_run_targets_a_segment(client: TestClient, store: Store) -> None:
    """Window drift of a segment carries it in evidence['segment'] (docs/drift.md, "Segments");
    drift_events reads it back as a column, and a rule's segment glob picks it out."""
    model = unique("seg")
    store.insert_rows(
        "drift_events",
        [
            drift_row(model, "x", T0, evidence={"segment": "region=eu"}, detector="ks"),
            drift_row(model, "x", T0 + timedelta(minutes=1), evidence={"segment": "region=us"}, detector="ks"),
            drift_row(model, "x", T0 + timedelta(minutes=2), detector="ks"),  # all traffic
        ],
    )
    window = (T0 - timedelta(hours=1), T0 + timedelta(hours=1))

    def triggers(segment: str | None) -> list[list[str]]:
        signal = {"kind": "drift", "stream_kind": "FEATURE", "stream_name": "x", "detector": "ks"}
        if segment is not None:
            signal["segment"] = segment
        rule = drift_rule(models=[model], signal=signal, group_by=["model_id", "segment"])
        result = dry_run(client, rule, *window)
        return sorted((f["group"]["segment"], *f["event_ids"]) for f in result["firings"])

    eu, us, whole = (f"{model}-x-{ms(T0 + timedelta(minutes=m))}" for m in (0, 1, 2))
    assert triggers("region=eu") == [("region=eu", eu)]
    assert triggers("region=*") == [("region=eu", eu), ("region=us", us)]
    assert triggers("") == [("", whole)]
    assert triggers(None) == [("", whole), ("region=eu", eu), ("region=us", us)]


def _labels(model: str, start: datetime, n: int, correct: int) -> list[dict]:
    rows = []
    for i in range(n):
        at = ms(start) + i * 1000
        prediction = {"event_id": f"p-{model}-{at}", "model_id": model, "model_version": "1",
                      "event_time": at, "prediction_label": "yes"}  # fmt: skip
        outcome = {"event_id": f"o-{model}-{at}", "event_time": at + 500,
                   "label": "yes" if i < correct else "no"}  # fmt: skip
        rows.append(joined_label(prediction, outcome))
    return rows


def test_metric_dry_run_fires_when_accuracy_drops(client: TestClient, store: Store) -> None:
    model = unique("acc")
    store.insert_rows("joined_labels", _labels(model, T0, 20, 20))  # 00:00-00:05 all right
    store.insert_rows("joined_labels", _labels(model, T0 + timedelta(minutes=5), 20, 10))
    store.insert_rows("joined_labels", _labels(model, T0 + timedelta(minutes=10), 4, 0))
    rule = metric_rule(models=[model], model_selector=None, **{"for": "0s"})
    result = dry_run(client, rule, T0, T0 + timedelta(minutes=30))
    # The workers' ticks (every window / 20 = 15 s) over the trailing 5 minutes, on minute
    # sums: from 00:05:15 the window holds only the 50% minute; from 00:10:15 only the
    # 4-label minute, below min_samples=10, so it resolves.
    assert result["would_fire"] is True
    seconds = lambda n: timedelta(seconds=n)  # noqa: E731
    assert [
        (datetime.fromisoformat(f["at"]), f["value"], datetime.fromisoformat(f["resolved_at"]))
        for f in result["firings"]
    ] == [(T0 + seconds(315), 0.5, T0 + seconds(615))]
    assert result["firings"][0]["group"] == {"model_id": model}
    assert result["evaluated"] == 3  # minute rows read
    # Held for 10 minutes is more than the 5 bad minutes: no firing.
    assert not dry_run(client, {**rule, "for": "10m"}, T0, T0 + timedelta(minutes=30))["would_fire"]
    # Label coverage: no predictions were stored, so there is nothing to divide by.
    coverage = {**rule, "signal": {"kind": "metric", "metric": "label_coverage", "window": "5m"}}
    assert dry_run(client, coverage, T0, T0 + timedelta(minutes=30))["firings"] == []
    # Prediction count reads windows without traffic as zero: it holds from the first tick
    # after the model's first data (00:00 + 30 s, the 10m window's tick), as on the workers.
    count = {
        **rule,
        "min_samples": 0,
        "signal": {"kind": "metric", "metric": "prediction_count", "window": "10m"},
        "condition": {"type": "threshold", "op": "<", "value": 1},
    }
    result = dry_run(client, count, T0, T0 + timedelta(minutes=30))
    assert [(datetime.fromisoformat(f["at"]), f["resolved_at"]) for f in result["firings"]] == [
        (T0 + timedelta(seconds=30), None)
    ]


def test_statistic_dry_run_reads_detector_stats(client: TestClient, store: Store) -> None:
    model = unique("st")
    rows = [
        {"model_id": model, "stream_kind": "FEATURE", "stream_name": "f00", "detector": "KSWIN",
         "time": ms(T0 + timedelta(minutes=i)), "n_values": 100 * (i + 1), "estimate": 0.1,
         "statistic": 0.1, "p_value": p, "drift": int(p < 0.01)}
        for i, p in enumerate([0.5, 0.2, 0.004, 0.001, 0.3, 0.002])
    ]  # fmt: skip
    store.insert_rows("detector_stats", rows)
    rule = metric_rule(
        models=[model],
        model_selector=None,
        signal={
            "kind": "statistic",
            "stream_kind": "FEATURE",
            "stream_name": "f00",
            "detector": "KSWIN",
            "field": "p_value",
        },  # fmt: skip
        condition={"type": "threshold", "op": "<", "value": 0.01},
        min_samples=0,
        **{"for": "1m"},
    )
    result = dry_run(client, rule, T0, T0 + timedelta(hours=1))
    # 00:02 starts holding, fires at 00:03 (held 1m); 00:05 starts again, no minute follows.
    assert [datetime.fromisoformat(f["at"]) for f in result["firings"]] == [
        T0 + timedelta(minutes=3)
    ]
    assert result["firings"][0]["value"] == 0.001


def test_verdict_dry_run_reads_model_verdicts(client: TestClient, store: Store) -> None:
    model = unique("vd")

    def verdict(version: str, kind: str, minutes: int) -> dict:
        ident = f"{model}-verdict-{version}"
        worse = kind == "WORSE"
        return {"event_id": ident, "model_id": model, "version": version,
                "previous_version": str(int(version) - 1), "verdict": kind,
                "metric": "accuracy", "test": "two_proportion_z", "value": 0.7,
                "previous_value": 0.9, "n_labels": 500, "n_previous": 500, "statistic": -5.0,
                "p_value": 1e-6, "alpha": 0.01, "decided_at": ms(T0 + timedelta(minutes=minutes)),
                "published_event_id": None, "evidence": {},
                "rollback_event_id": f"{ident}-rollback" if worse else None,
                "rollback_to": str(int(version) - 1) if worse else None}  # fmt: skip

    # version 2 is worse (fires), version 3 better (resolves), version 4 worse again
    store.insert_rows(
        "model_verdicts", [verdict("2", "WORSE", 5), verdict("3", "BETTER", 20),
                           verdict("4", "WORSE", 40)],
    )  # fmt: skip
    rule = drift_rule(models=[model], signal={"kind": "verdict"},
                      condition={"type": "verdict_is", "outcome": "WORSE"})  # fmt: skip
    result = dry_run(client, rule, T0, T0 + timedelta(hours=1))
    assert result["evaluated"] == 3
    got = [(datetime.fromisoformat(f["at"]),
            f["resolved_at"] and datetime.fromisoformat(f["resolved_at"]), f["event_ids"])
           for f in result["firings"]]  # fmt: skip
    assert got == [
        (T0 + timedelta(minutes=5), T0 + timedelta(minutes=20), [f"{model}-verdict-2"]),
        (T0 + timedelta(minutes=40), None, [f"{model}-verdict-4"]),
    ]
    better = dry_run(client, {**rule, "condition": {"type": "verdict_is", "outcome": "BETTER"}},
                     T0, T0 + timedelta(hours=1))  # fmt: skip
    assert [f["event_ids"] for f in better["firings"]] == [[f"{model}-verdict-3"]]


def test_dry_run_range_is_checked(client: TestClient) -> None:
    rule = drift_rule()
    response = client.post(
        "/v1/rules:dry-run",
        json={"rule": rule, "start": iso(T0), "end": iso(T0 - timedelta(hours=1))},
    )
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "end"]
    response = client.post(
        "/v1/rules:dry-run",
        json={"rule": rule, "start": iso(T0), "end": iso(T0 + timedelta(days=40))},
    )
    assert response.status_code == 422
    response = client.post(
        "/v1/rules:dry-run",
        json={"rule": {**rule, "severity": "x"}, "start": iso(T0), "end": iso(T0)},
    )
    assert ["body", "rule", "severity"] in [e["loc"] for e in response.json()["detail"]]


def test_without_a_store_history_reads_are_503(
    control_plane: ControlPlane, tokens: dict[str, str]
) -> None:
    client = TestClient(
        create_app(ApiConfig(), control_plane=control_plane), headers=auth(tokens["read"])
    )
    for response in (
        client.get("/v1/alerts"),
        client.get("/v1/alerts/history"),
        client.post(
            "/v1/rules:dry-run",
            json={"rule": drift_rule(), "start": iso(T0), "end": iso(T0 + timedelta(hours=1))},
        ),
    ):
        assert response.status_code == 503
        assert "DRIFTLINE_CLICKHOUSE_URL" in response.json()["detail"]


def alert_row(fingerprint: str, model: str, state: str, at: datetime, **extra) -> dict:  # type: ignore[no-untyped-def]
    return {
        "fingerprint": fingerprint,
        "rule_id": "r-1",
        "rule_version": 1,
        "alertname": "feature drift",
        "model_id": model,
        "severity": "warning",
        "state": state,
        "labels": {"model_id": model, "team": "growth"},
        "annotations": {},
        "value": 0.5,
        "starts_at": ms(T0),
        "ends_at": ms(at) if state == "resolved" else None,
        "updated_at": ms(at),
        "trigger_event_ids": ["e1"],
        "event_id": f"{fingerprint}-{state}",
        "silenced": 0,
        "acknowledged": 0,
        **extra,
    }


def test_alerts_current_state_history_and_ack(client: TestClient, store: Store) -> None:
    model = unique("al")
    fp1, fp2 = unique("fp"), unique("fp")
    store.insert_rows(
        "alerts",
        [
            alert_row(fp1, model, "pending", T0),
            alert_row(fp1, model, "firing", T0 + timedelta(minutes=5)),
            alert_row(fp2, model, "firing", T0),
            alert_row(
                fp2, model, "resolved", T0 + timedelta(minutes=20), silenced=1, silence_ids=["s-1"]
            ),  # fmt: skip
        ],
    )
    current = client.get("/v1/alerts", params={"model": model}).json()
    assert {(a["fingerprint"], a["state"]) for a in current["data"]} == {
        (fp1, "firing"),
        (fp2, "resolved"),
    }
    firing = client.get("/v1/alerts", params={"model": model, "state": "firing"}).json()
    assert [a["fingerprint"] for a in firing["data"]] == [fp1]
    assert firing["data"][0]["labels"] == {"model_id": model, "team": "growth"}
    history = client.get("/v1/alerts/history", params={"fingerprint": fp2}).json()
    assert [a["state"] for a in history["data"]] == ["resolved", "firing"]
    assert [(a["silenced"], a["silence_ids"]) for a in history["data"]] == [
        (True, ["s-1"]),
        (False, []),
    ]
    assert datetime.fromisoformat(history["data"][0]["ends_at"]) == T0 + timedelta(minutes=20)

    ack = client.post(f"/v1/alerts/{fp1}/ack", json={"comment": "on it"})
    assert ack.status_code == 200 and ack.json()["acked_by"].endswith("/test-write")
    alert = client.get(f"/v1/alerts/{fp1}").json()
    assert alert["state"] == "firing" and alert["acknowledgement"]["comment"] == "on it"
    assert client.get(f"/v1/alerts/{unique('fp')}").status_code == 404
    assert client.post(f"/v1/alerts/{fp1}/ack", json={"comment": ""}).status_code == 422


def test_every_change_leaves_an_audit_row(client: TestClient, store: Store) -> None:
    rule = client.post("/v1/rules", json=drift_rule()).json()
    client.patch(f"/v1/rules/{rule['id']}", json={"severity": "critical"})
    client.delete(f"/v1/rules/{rule['id']}")
    rows = store.query(
        "SELECT version, op, updated_by, value FROM rule_versions FINAL WHERE id = {id:String} "
        "ORDER BY version",
        {"id": rule["id"]},
    )
    assert [(v, op) for v, op, _, _ in rows] == [(1, "upsert"), (2, "upsert"), (3, "delete")]
    assert json.loads(rows[1][3])["data"]["severity"] == "critical"
    assert rows[2][2].endswith("/test-write")

    sub = client.post("/v1/subscriptions", json={"name": "n", "url": "https://h.example/x"}).json()
    (value,) = store.query(
        "SELECT value FROM rule_versions FINAL WHERE id = {id:String}", {"id": sub["id"]}
    )[0]
    assert sub["secret"] not in value and json.loads(value)["data"]["secret"] == "****"


def test_alerts_table_created_by_the_api_alone(
    control_plane: ControlPlane, chdb_dir: Path, tokens: dict[str, str]
) -> None:
    """Before any worker migrated the database, the API's own DDL is enough to read alerts
    (the evaluator's extra columns read as their defaults)."""
    bare = open_store(None, "api_bare", chdb_dir, ttl_days=None)  # not migrated
    try:
        client = TestClient(
            create_app(ApiConfig(), control_plane=control_plane, store=bare),
            headers=auth(tokens["read"]),
        )
        assert client.get("/v1/alerts").json() == {"data": [], "count": 0}
        row = alert_row("fp-bare", "m", "firing", T0)
        for extra in ("event_id", "silenced", "acknowledged"):
            row.pop(extra)
        bare.insert("alerts", {k: [v] for k, v in row.items()})
        (alert,) = client.get("/v1/alerts").json()["data"]
        assert (alert["fingerprint"], alert["silenced"], alert["silence_ids"]) == (
            "fp-bare",
            False,
            [],
        )
    finally:
        bare.close()


def test_concurrent_store_reads(client: TestClient) -> None:
    """The thread pool runs requests side by side; the store sees them one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: client.get("/v1/alerts/history").status_code, range(24)))
    assert statuses == [200] * 24
