"""The model_versions table (migration 0008) and the lineage read on it (sinks/lineage.py),
on a real embedded store: rows of both kinds merge into one version, replays change nothing,
and the lineage follows ids from drift through alert and request to version and verdict."""

from __future__ import annotations

from driftline.schemas import event_id
from driftline.schemas.model_versions import make_published
from driftline.sinks import Store
from driftline.sinks.lineage import model_lineage, model_versions, published_row, serving_row

T0 = 1_760_000_000_000
M = "credit"


def _snapshot(store: Store) -> list[dict]:
    return model_versions(store, M)


def test_published_and_serving_rows_merge_and_replays_change_nothing(embedded_store) -> None:
    store = embedded_store
    record = make_published(M, "2", published_at=T0, artifact_uri="s3://m/2",
                            metrics={"auc": 0.9}, previous_version="1")  # fmt: skip
    serving = [serving_row(M, "1", None, T0 - 50_000, T0 - 1_000),
               serving_row(M, "2", "1", T0 + 1_000, T0 + 9_000),
               serving_row(M, "2", "1", T0 + 500, T0 + 5_000)]  # fmt: skip
    # serving first: the batch's keys come from its first row, so every row has them all
    store.insert_rows("model_versions", [serving[0], published_row(record)])
    store.insert_rows("model_versions", serving[1:])
    before = _snapshot(store)
    one, two = before
    assert one["version"] == "1" and not one["published"] and one["previous_version"] is None
    assert two["published"] and two["published_event_id"] == record["event_id"]
    assert two["metrics"] == {"auc": 0.9} and two["artifact_uri"] == "s3://m/2"
    assert (two["first_seen"], two["last_seen"]) == (T0 + 500, T0 + 9_000)
    assert two["previous_version"] == "1" and two["published_at"] == T0
    # a replayed epoch and a merge: the same answer
    store.insert_rows("model_versions", serving + [published_row(record)])
    store.command(f"OPTIMIZE TABLE {store.database}.model_versions FINAL")
    assert _snapshot(store) == before


def test_lineage_follows_ids_through_an_alert(embedded_store) -> None:
    store = embedded_store
    drift = {"event_id": event_id("drift", M), "model_id": M, "model_version": "1",
             "stream_kind": "ERROR", "stream_name": "error", "detector": "ADWIN",
             "detected_at": T0, "position": 7, "statistic": None, "p_value": None,
             "threshold": 0.002, "evidence": {}, "source_event_id": "o"}  # fmt: skip
    alert_id = event_id("alert", M)
    store.insert_rows("alerts", [{
        "fingerprint": "f", "rule_id": "r-1", "rule_version": 1, "alertname": "ErrDrift",
        "model_id": M, "severity": "critical", "state": "firing", "labels": {},
        "annotations": {}, "value": None, "starts_at": T0, "ends_at": None,
        "updated_at": T0 + 60_000, "trigger_event_ids": [drift["event_id"]],
        "event_id": alert_id, "silenced": 0, "silence_ids": [], "acknowledged": 0,
        "notify": [], "inhibited_by": None,
    }])  # fmt: skip
    request = {"event_id": event_id("retraining", M, alert_id), "model_id": M,
               "model_version": "1", "requested_at": T0 + 60_000, "reason": "rule",
               "trigger_event_ids": [alert_id], "window_start": T0,
               "window_end": T0 + 60_000, "priority": "HIGH", "policy": "rule:r-1"}  # fmt: skip
    store.insert_rows("drift_events", [drift])
    store.insert_rows("retraining_requests", [request])
    record = make_published(M, "5", published_at=T0 + 70_000,
                            retraining_request_id=request["event_id"])  # fmt: skip
    store.insert_rows("model_versions", [published_row(record)])
    (chain,) = [c for c in model_lineage(store, M)["versions"] if c["version"]["version"] == "5"]
    assert [a["event_id"] for a in chain["alerts"]] == [alert_id]
    assert [d["event_id"] for d in chain["drift_events"]] == [drift["event_id"]]
    assert not chain["serving"] and not chain["complete"]
    store.insert_rows("model_versions", [serving_row(M, "5", "2", T0 + 80_000, T0 + 90_000)])
    store.insert_rows("model_verdicts", [{
        "event_id": "v", "model_id": M, "version": "5", "previous_version": "2",
        "verdict": "BETTER", "metric": "accuracy", "test": "two_proportion_z", "value": 0.9,
        "previous_value": 0.7, "n_labels": 500, "n_previous": 500, "statistic": 9.0,
        "p_value": 1e-9, "alpha": 0.01, "decided_at": T0 + 95_000,
        "published_event_id": record["event_id"], "evidence": {}, "rollback_event_id": None,
        "rollback_to": None,
    }])  # fmt: skip
    (chain,) = [c for c in model_lineage(store, M)["versions"] if c["version"]["version"] == "5"]
    assert chain["complete"] and chain["verdicts"][0]["verdict"] == "BETTER"
