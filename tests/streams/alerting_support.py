"""Control-plane records for the alerting tests, written the way the API writes them.

Rules and silences go through the API's own models (``RuleCreate``, ``SilenceCreate``) and
record encoder, so a field the worker reads under another name than the API writes fails here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from driftline.api.control_plane import Record, encode_value
from driftline.api.models import RuleCreate, SilenceCreate, dump
from driftline.streams.processor import BatchResult, ModelActivity
from driftline.streams.rulebook import RuleBook

T0 = 1_700_000_000_000
MIN = 60_000
STAMP = "2026-01-01T00:00:00.000Z"


def iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def record(kind: str, ident: str, data: dict[str, Any], version: int = 1) -> bytes:
    return encode_value(Record(kind, ident, version, STAMP, STAMP, "tester", data))


def rule_data(**fields: Any) -> dict[str, Any]:
    fields.setdefault("name", "feature drift")
    fields.setdefault("models", ["m"])
    fields.setdefault("signal", {"kind": "drift", "stream_kind": "FEATURE"})
    fields.setdefault("condition", {"type": "drift_detected"})
    return dump(RuleCreate.model_validate(fields))


def put_rule(book: RuleBook, ident: str, version: int = 1, **fields: Any) -> None:
    assert book.apply(f"rule:{ident}".encode(), record("rule", ident, rule_data(**fields), version))


def put_silence(
    book: RuleBook, ident: str, matchers: list[dict[str, str]], starts: int, ends: int
) -> None:
    model = SilenceCreate.model_validate(
        {"matchers": matchers, "starts_at": iso(starts), "ends_at": iso(ends)}
    )
    data = dump(model)
    data["created_by"] = "tester"
    assert book.apply(f"silence:{ident}".encode(), record("silence", ident, data))


def put_ack(book: RuleBook, fp: str, at: int) -> None:
    data = {"fingerprint": fp, "comment": "on it", "acked_by": "tester", "acked_at": iso(at)}
    assert book.apply(f"ack:{fp}".encode(), record("ack", fp, data))


def drift(
    n: int,
    t: int,
    *,
    model: str = "m",
    kind: str = "FEATURE",
    name: str = "age",
    detector: str = "ADWIN",
    position: int = 1000,
) -> dict[str, Any]:
    return {
        "event_id": f"d{n}",
        "model_id": model,
        "model_version": "1",
        "stream_kind": kind,
        "stream_name": name,
        "detector": detector,
        "detected_at": t,
        "position": position,
        "statistic": None,
        "p_value": None,
        "threshold": 0.002,
        "evidence": {},
        "source_event_id": f"p{n}",
    }


def batch(
    *drifts: dict[str, Any],
    clock: int | None = None,
    model: str = "m",
    joined: list[dict[str, Any]] | None = None,
) -> BatchResult:
    """A BatchResult with these drift events; ``clock`` adds a prediction at that event time
    (what moves a model's clock when nothing drifts)."""
    result = BatchResult()
    result.drift_events.extend(drifts)
    rows = list(joined or ())
    if clock is None and not rows:
        return result
    correct = [r.get("correct") for r in rows]
    result.activity[model] = ModelActivity(
        model_version="1",
        prediction_times=np.array([] if clock is None else [clock], dtype=np.int64),
        outcome_times=np.array([r["outcome_time"] for r in rows], dtype=np.int64),
        joined_time=np.array([r["outcome_time"] for r in rows], dtype=np.int64),
        joined_correct=np.array([-1 if c is None else c for c in correct], dtype=np.int8),
        joined_error=np.array([np.nan if r.get("error") is None else r["error"] for r in rows]),
        joined_squared=np.array(
            [np.nan if r.get("squared_error") is None else r["squared_error"] for r in rows]
        ),
    )
    return result


def joined(n: int, t: int, correct: bool, model: str = "m") -> dict[str, Any]:
    return {
        "prediction_id": f"p{n}",
        "outcome_id": f"o{n}",
        "model_id": model,
        "model_version": "1",
        "prediction_time": t - 1000,
        "outcome_time": t,
        "correct": int(correct),
        "error": float(not correct),
        "squared_error": float(not correct),
    }
