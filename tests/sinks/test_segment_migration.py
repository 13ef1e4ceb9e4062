"""Migration 0011 on a store that already holds window-test rows and drift events: the rows
read as all traffic, the segment joins the feature_drift / data_quality key (so a segment's
window no longer collapses with an all-traffic window of the same end, index, feature and
test), and drift_events reads a DriftEvent's evidence['segment'] back as a column."""

from __future__ import annotations

from pathlib import Path

import pytest
from driftline.sinks import EmbeddedStore, load_migrations
from driftline.sinks import base as sinks_base


def _window_row(**extra: object) -> dict:
    return {"model_id": "m", "model_version": "1", "window_index": 2,
            "window_start": 1_790_000_000_000, "window_end": 1_790_000_050_000,
            "first_position": 2000, "last_position": 2499, "stream_kind": "FEATURE",
            "feature": "x", "column_kind": "numeric", "test": "ks", "statistic": 0.2,
            "p_value": 1e-9, "threshold": 1e-7, "n_reference": 2000, "n_current": 500,
            "insufficient_data": 0, "drifted": 1, "reference_id": "r", "reference_version": "",
            "reference_source": "first_events", **extra}  # fmt: skip


def _drift(ident: str, evidence: dict) -> dict:
    return {"event_id": ident, "model_id": "m", "model_version": "1", "stream_kind": "FEATURE",
            "stream_name": "x", "detector": "ks", "detected_at": 1_790_000_050_000,
            "position": 2499, "statistic": 0.2, "p_value": 1e-9, "threshold": 1e-7,
            "evidence": evidence, "source_event_id": "p"}  # fmt: skip


def test_0011_upgrades_a_store_with_rows(chdb_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with EmbeddedStore(chdb_path, "upgrade_0011", ttl_days=None) as store:
        before = [m for m in load_migrations() if m.version < 11]
        monkeypatch.setattr(sinks_base, "load_migrations", lambda: before)
        store.migrate()
        store.insert("feature_drift", {k: [v] for k, v in _window_row().items()})
        store.insert("drift_events", {k: [v] for k, v in _drift("old", {"window_index": "2"}).items()})
        monkeypatch.undo()
        assert store.migrate() == [m.name for m in load_migrations() if m.version >= 11]
        # the old row is all traffic; a segment window of the same end and index is its own row
        store.insert_rows("feature_drift", [_window_row(segment="region=eu", window_index=2)])
        rows = store.query("SELECT segment, first_position FROM feature_drift FINAL ORDER BY segment")
        assert rows == [("", 2000), ("region=eu", 2000)]
        key = store.query(
            "SELECT sorting_key FROM system.tables WHERE database = 'upgrade_0011' AND name = 'data_quality'"
        )
        assert key == [("model_id, window_end, window_index, feature, test, segment",)]
        store.insert_rows("drift_events", [_drift("new", {"segment": "region=eu"})])
        got = store.query("SELECT event_id, segment FROM drift_events FINAL ORDER BY event_id")
        assert got == [("new", "region=eu"), ("old", "")]
