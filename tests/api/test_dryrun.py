"""The dry-run is the workers' lifecycle over history: the same drift events, fed to the
worker's evaluator batch by batch and to the dry-run's replay in one pass, give the same
episodes (the end-to-end version, a live worker against the API's dry-run, is in
tests/e2e/test_alerting_e2e.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from api_factories import drift_rule
from driftline.api.dryrun import firings, rulebook_of
from driftline.api.models import RuleCreate
from driftline.schemas.alert_lifecycle import AlertEvaluator, MemoryKV

T0 = 1_700_000_000_000
MIN = 60_000


def _drift(n: int, t: int, stream: str = "f00") -> dict:
    return {"event_id": f"d{n}", "model_id": "m", "model_version": "1",
            "stream_kind": "FEATURE", "stream_name": stream, "detector": "ADWIN",
            "detected_at": t, "position": 500, "statistic": None, "p_value": None,
            "threshold": None, "evidence": {}, "source_event_id": f"p{n}"}  # fmt: skip


def test_dry_run_equals_the_worker_on_the_same_events() -> None:
    rule = RuleCreate.model_validate(
        drift_rule(models=["m"], repeat_interval="10m", cooldown="5m", **{"for": "2m"},
                   signal={"kind": "drift", "stream_kind": "FEATURE", "stream_name": "f*"})
    )  # fmt: skip
    times = [0, 1, 3, 4, 20, 21, 22, 40, 41, 42, 43, 70]
    drifts = [_drift(i, T0 + t * MIN, f"f0{i % 2}") for i, t in enumerate(times)]
    parsed, book = rulebook_of(rule)

    worker, kv = AlertEvaluator(book), MemoryKV()
    live = []
    for i in range(0, len(drifts), 3):  # the worker sees them a few at a time
        live += worker.evaluate_drifts(drifts[i : i + 3], kv, {"m": 0}).alerts
    end = T0 + 75 * MIN
    live += worker.advance({"m": end}, kv, {"m": 0}).alerts

    replayed = AlertEvaluator(book).replay(drifts=drifts, until={"m": end}).alerts
    assert [a["event_id"] for a in replayed] == [a["event_id"] for a in live]
    found = firings(replayed, parsed, T0)
    assert len(found) == 4
    assert found == firings(live, parsed, T0)
    first = found[0]
    assert (first.starts_at, first.at, first.resolved_at) == (
        datetime.fromtimestamp(T0 / 1000, UTC),
        datetime.fromtimestamp((T0 + 2 * MIN) / 1000, UTC),
        datetime.fromtimestamp((T0 + 14 * MIN) / 1000, UTC),
    )
