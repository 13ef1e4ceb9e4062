"""A model's lineage from ClickHouse: every version with the chain of ids that led to it and
what came of it — drift → alert → retraining request → published version → serving → verdict.

Read side only (the workers wrote every row); ``driftline lineage`` and
``GET /v1/models/{model}/lineage`` both show this, so it lives in the lowest layer both import.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

__all__ = ["model_lineage", "model_versions", "published_row", "serving_row"]

_VERSIONS = """
SELECT version, max(published), anyLast(published_event_id), anyLast(artifact_uri),
       anyLast(retraining_request_id), anyLast(declared_previous), anyLast(metrics_json),
       anyLast(tags_json), anyLast(publisher), min(published_at), anyLast(previous_version),
       min(first_seen), max(last_seen)
FROM model_versions WHERE model_id = {model:String}
GROUP BY version
ORDER BY min(coalesce(first_seen, published_at)), version
"""
_NAMES = (
    "version", "published", "published_event_id", "artifact_uri", "retraining_request_id",
    "declared_previous", "metrics", "tags", "publisher", "published_at", "previous_version",
    "first_seen", "last_seen",
)  # fmt: skip


def published_row(record: dict[str, Any]) -> dict[str, Any]:
    """The ``model_versions`` row of a published version."""
    return {
        "model_id": record["model_id"],
        "version": record["version"],
        "published": 1,
        "published_event_id": record["event_id"],
        "artifact_uri": record.get("artifact_uri") or "",
        "training_window_start": record.get("training_window_start"),
        "training_window_end": record.get("training_window_end"),
        "retraining_request_id": record.get("retraining_request_id"),
        "declared_previous": record.get("previous_version"),
        "metrics_json": json.dumps(record.get("metrics") or {}, sort_keys=True),
        "tags_json": json.dumps(record.get("tags") or {}, sort_keys=True),
        "reference_profile_id": record.get("reference_profile_id"),
        "publisher": record.get("publisher") or "",
        "published_at": record["published_at"],
        "previous_version": None,
        "first_seen": None,
        "last_seen": None,
    }


# every row has every column: a batch of rows is inserted with the first row's keys
_ROW_COLUMNS = tuple(published_row({"model_id": "", "version": "", "event_id": "",
                                    "published_at": 0}))  # fmt: skip


def serving_row(
    model_id: str, version: str, previous: str | None, first_seen: int, last_seen: int
) -> dict[str, Any]:
    """The ``model_versions`` row of a version seen serving (predictions made with it)."""
    row = dict.fromkeys(_ROW_COLUMNS)
    row.update(model_id=model_id, version=version, published=0, previous_version=previous,
               first_seen=first_seen, last_seen=last_seen)  # fmt: skip
    return row


def _ms(value: Any) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def model_versions(store: Any, model_id: str) -> list[dict[str, Any]]:
    """Every version of a model: published fields and when it served (oldest first)."""
    out = []
    for row in store.query(_VERSIONS, {"model": model_id}):
        item = dict(zip(_NAMES, row, strict=True))
        item["published"] = bool(item["published"])
        item["metrics"] = json.loads(item["metrics"]) if item["metrics"] else {}
        item["tags"] = json.loads(item["tags"]) if item["tags"] else {}
        for name in ("published_at", "first_seen", "last_seen"):
            item[name] = _ms(item[name])
        # what served before it; the publisher's word when it never served
        item["previous_version"] = item["previous_version"] or item.pop("declared_previous")
        item.pop("declared_previous", None)
        out.append(item)
    return out


def _rows(store: Any, sql: str, names: tuple[str, ...], params: dict[str, Any]) -> list[dict]:
    out = []
    for row in store.query(sql, params):
        item = dict(zip(names, row, strict=True))
        out.append({k: _ms(v) if isinstance(v, datetime) else v for k, v in item.items()})
    return out


def model_lineage(store: Any, model_id: str) -> dict[str, Any]:
    """The chain per version; ``complete`` when drift, request, publication, serving and a
    verdict are all linked by id."""
    params = {"model": model_id}
    versions = model_versions(store, model_id)
    requests = {
        r["event_id"]: r
        for r in _rows(
            store,
            "SELECT event_id, model_version, requested_at, policy, reason, trigger_event_ids "
            "FROM retraining_requests FINAL WHERE model_id = {model:String}",
            ("event_id", "model_version", "requested_at", "policy", "reason", "trigger_event_ids"),
            params,
        )
    }
    drifts = {
        d["event_id"]: d
        for d in _rows(
            store,
            "SELECT event_id, model_version, stream_kind, stream_name, detector, detected_at "
            "FROM drift_events FINAL WHERE model_id = {model:String}",
            ("event_id", "model_version", "stream_kind", "stream_name", "detector", "detected_at"),
            params,
        )
    }
    alerts = _rows(
        store,
        "SELECT event_id, fingerprint, alertname, state, trigger_event_ids "
        "FROM alerts FINAL WHERE model_id = {model:String}",
        ("event_id", "fingerprint", "alertname", "state", "trigger_event_ids"),
        params,
    )
    verdicts = _rows(
        store,
        "SELECT event_id, version, previous_version, verdict, metric, value, previous_value, "
        "p_value, decided_at, published_event_id, rollback_event_id, rollback_to "
        "FROM model_verdicts FINAL WHERE model_id = {model:String} ORDER BY decided_at",
        ("event_id", "version", "previous_version", "verdict", "metric", "value",
         "previous_value", "p_value", "decided_at", "published_event_id", "rollback_event_id",
         "rollback_to"),
        params,
    )  # fmt: skip
    chains = []
    for version in versions:
        request = requests.get(version["retraining_request_id"] or "")
        causes_drift: list[dict[str, Any]] = []
        causes_alerts: list[dict[str, Any]] = []
        if request is not None:
            triggers = set(request["trigger_event_ids"])
            # an alert rule's request names its alert; the built-in policy names the drift
            causes_alerts = [a for a in alerts if a["event_id"] in triggers]
            for alert in causes_alerts:
                triggers |= set(alert["trigger_event_ids"])
            causes_drift = [drifts[i] for i in sorted(triggers) if i in drifts]
        mine = [v for v in verdicts if v["version"] == version["version"]]
        chains.append(
            {
                "version": version,
                "drift_events": causes_drift,
                "alerts": causes_alerts,
                "retraining_request": request,
                "serving": version["first_seen"] is not None,
                "verdicts": mine,
                "complete": bool(
                    causes_drift and request and version["published"]
                    and version["first_seen"] is not None and mine
                ),
            }
        )  # fmt: skip
    return {"model_id": model_id, "versions": chains}
