"""A binary classifier's traffic for the CBPE tests (tests/streams/test_estimates.py,
tests/sinks/test_performance_estimates.py): calibrated scores, late labels, an optional
concept change."""

from __future__ import annotations

import numpy as np
from driftline.schemas import Codec, event_id, topics
from driftline.streams.processor import SourceMessage

CODEC = Codec()
WINDOW_MS = 1_000  # one prediction per ms: 1,000 a window
START_MS = 1_790_000_000_000
LAG = 300  # labels arrive 300 predictions late


def traffic(
    model: str, n: int, change_at: int | None = None, version_at: int | None = None
) -> tuple[list[SourceMessage], np.ndarray]:
    """A binary model with calibrated positive-class scores (P(y = 1 | p) = p); from
    ``change_at`` on, a third of the labels flip (concept drift: P(y | p) changes, p does not).
    From ``version_at`` on, version "2" serves: the same predictions, but underconfident
    scores ``0.5 + (p - 0.5) / 2`` (read through version 1's calibration they understate its
    accuracy). Returns the messages (each outcome ``LAG`` predictions after its prediction)
    and whether each prediction was right."""
    out: list[SourceMessage] = []
    offsets = {topics.PREDICTIONS: 0, topics.OUTCOMES: 0}
    outcomes, correct = [], np.zeros(n, dtype=bool)

    def add(topic: str, name: str, record: dict) -> None:
        value = CODEC.encode(name, record)
        out.append(SourceMessage(topic, 0, offsets[topic], model.encode(), value))
        offsets[topic] += 1

    for i in range(n):
        g = np.random.default_rng([11, i])
        p = float(g.random())
        y = g.random() < p
        if change_at is not None and i >= change_at and g.random() < 1 / 3:
            y = not y
        predicted = "1" if p >= 0.5 else "0"
        correct[i] = (predicted == "1") == y
        pid = event_id("test-estimates", model, str(i))
        second = version_at is not None and i >= version_at
        add(topics.PREDICTIONS, "PredictionEvent", {
            "event_id": pid, "model_id": model, "model_version": "2" if second else "1",
            "event_time": START_MS + i, "numeric_features": {"x": p}, "categorical_features": {},
            "segments": {}, "prediction_label": predicted,
            "prediction_score": 0.5 + (p - 0.5) / 2 if second else p, "prediction_value": None,
            "probabilities": None,
        })  # fmt: skip
        outcomes.append({
            "event_id": event_id("test-estimates-o", pid), "prediction_id": pid,
            "model_id": model, "event_time": START_MS + i + LAG, "label": "1" if y else "0",
            "value": None,
        })  # fmt: skip
        if i >= LAG:
            add(topics.OUTCOMES, "OutcomeEvent", outcomes[i - LAG])
    return out, correct
