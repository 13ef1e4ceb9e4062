"""Alert rules on window drift by segment: the rule's segment glob against the DriftEvent's
``evidence["segment"]`` (or a ``drift_events`` row's ``segment`` column), and the segment as a
label alerts can be grouped by."""

from __future__ import annotations

import json

import pytest
from driftline.schemas.alert_lifecycle import AlertEvaluator, MemoryKV
from driftline.schemas.rules import Rule, RuleBook, drift_segment


def _drift(ident: str, segment: str | None, t: int = 1000) -> dict:
    evidence = {"window_index": "3"} | ({"segment": segment} if segment is not None else {})
    return {"event_id": ident, "model_id": "m", "model_version": "1", "stream_kind": "FEATURE",
            "stream_name": "x", "detector": "ks", "detected_at": t, "position": 4999,
            "evidence": evidence}  # fmt: skip


def _rule(**signal: str) -> dict:
    return {"name": "drift", "models": ["m"], "for": "0s",
            "signal": {"kind": "drift", "stream_kind": "FEATURE", **signal},
            "condition": {"type": "drift_detected"}}  # fmt: skip


@pytest.mark.parametrize(
    ("pattern", "matched"),
    [
        (None, {"all", "eu", "us", "web"}),  # a rule without a segment takes every window
        ("*", {"all", "eu", "us", "web"}),
        ("", {"all"}),
        ("region=eu", {"eu"}),
        ("region=*", {"eu", "us"}),
    ],
)
def test_a_rule_targets_segments_by_glob(pattern: str | None, matched: set[str]) -> None:
    rule = Rule.from_record("r", 1, _rule(**({} if pattern is None else {"segment": pattern})))
    drifts = {"all": _drift("a", None), "eu": _drift("b", "region=eu"),
              "us": _drift("c", "region=us"), "web": _drift("d", "channel=web")}  # fmt: skip
    assert {name for name, d in drifts.items() if rule.matches_drift(d)} == matched
    # a drift_events row read back from ClickHouse carries the column instead
    row = {k: v for k, v in drifts["eu"].items() if k != "evidence"} | {"segment": "region=eu"}
    assert rule.matches_drift(row) == ("eu" in matched)
    assert drift_segment(row) == drift_segment(drifts["eu"]) == "region=eu"


def test_alerts_group_by_segment_when_the_rule_asks() -> None:
    book = RuleBook()
    data = _rule() | {"group_by": ["model_id", "segment"]}
    record = {"kind": "rule", "id": "r1", "version": 1, "created_at": "", "updated_at": "",
              "updated_by": "", "data": data}  # fmt: skip
    assert book.apply(b"rule:r1", json.dumps(record).encode())
    drifts = [_drift("a", "region=eu", 1000), _drift("b", "region=us", 2000), _drift("c", None, 3000)]
    out = AlertEvaluator(book).evaluate_drifts(drifts, MemoryKV(), {"m": 0})
    firing = [a for a in out.alerts if a["status"] == "FIRING"]
    assert sorted(a["labels"]["segment"] for a in firing) == ["", "region=eu", "region=us"]
    assert len({a["fingerprint"] for a in firing}) == 3
