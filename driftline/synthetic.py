"""Synthetic prediction/outcome streams with a known change, for the demo, tests and benchmarks.

Records follow the Avro contract (``schemas/*.avsc``) with times in epoch milliseconds.

>>> stream = SyntheticStream("churn", n_features=3, seed=7, change_at=100)
>>> prediction, outcome = next(iter(stream.events(1)))
>>> sorted(prediction["numeric_features"]), outcome["prediction_id"] == prediction["event_id"]
(['f00', 'f01', 'f02'], True)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.schemas import event_id

DAY_MS = 86_400_000


def yesterday_ms() -> int:
    """Midnight UTC a day ago: recent enough for the tables' TTLs, stable within a day so two
    processes building the same stream agree."""
    return (time.time_ns() // 1_000_000 // DAY_MS - 1) * DAY_MS


@dataclass
class SyntheticStream:
    """A binary classifier's traffic: ``n_features`` Gaussian features, one prediction per step.

    From ``change_at`` on (if given) feature ``f00`` shifts by ``feature_shift`` standard
    deviations and the model's error rate rises from ``error_before`` to ``error_after``, as if
    the world moved under a model that stayed the same.
    """

    model_id: str
    n_features: int = 20
    seed: int = 0
    change_at: int | None = None
    feature_shift: float = 2.0
    error_before: float = 0.1
    error_after: float = 0.45
    step_ms: int = 10
    label_delay_ms: int = 2_000
    model_version: str = "1"
    start_ms: int = field(default_factory=yesterday_ms)

    def events(self, n: int, start: int = 0) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Steps ``start .. start+n-1``: (prediction, its outcome). Same seed, same events."""
        for i in range(start, start + n):
            yield self.step(i)

    def step(self, i: int) -> tuple[dict[str, Any], dict[str, Any]]:
        rng = np.random.default_rng([self.seed, i])
        changed = self.change_at is not None and i >= self.change_at
        features = rng.normal(0.0, 1.0, self.n_features)
        if changed:
            features[0] += self.feature_shift
        score = float(rng.random())
        predicted = "yes" if score >= 0.5 else "no"
        wrong = rng.random() < (self.error_after if changed else self.error_before)
        actual = ("no" if predicted == "yes" else "yes") if wrong else predicted
        time_ms = self.start_ms + i * self.step_ms
        prediction_id = event_id("synthetic", self.model_id, str(self.seed), str(i))
        prediction = {
            "event_id": prediction_id,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "event_time": time_ms,
            "numeric_features": {f"f{j:02d}": float(v) for j, v in enumerate(features)},
            "categorical_features": {"plan": "basic" if i % 3 else "pro"},
            "segments": {"region": ("eu", "us", "apac")[i % 3]},
            "prediction_label": predicted,
            "prediction_score": score,
            "prediction_value": None,
            "probabilities": {"yes": score, "no": 1.0 - score},
        }
        outcome = {
            "event_id": event_id("synthetic-outcome", prediction_id),
            "prediction_id": prediction_id,
            "model_id": self.model_id,
            "event_time": time_ms + self.label_delay_ms,
            "label": actual,
            "value": None,
        }
        return prediction, outcome


def publish(
    bootstrap: str,
    stream: SyntheticStream,
    n: int,
    *,
    start: int = 0,
    outcome_lag: int = 50,
    codec: Any = None,
) -> int:
    """Publish steps ``start .. start+n-1`` to the real topics: each prediction, and the
    outcome of the prediction ``outcome_lag`` steps earlier (labels arrive late). Returns the
    number of messages acknowledged by the broker."""
    from confluent_kafka import Producer

    from driftline.schemas import Codec, topics

    codec = codec or Codec()
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 20,
            "compression.type": "lz4",
            # Java clients' partitioner: predictions and outcomes of a model stay co-partitioned
            # whichever client produced them
            "partitioner": "murmur2_random",
        }
    )
    delivered = 0

    def on_delivery(error: Any, _message: Any) -> None:
        nonlocal delivered
        if error is None:
            delivered += 1

    def send(topic: str, schema: str, record: dict[str, Any]) -> None:
        while True:
            try:
                producer.produce(
                    topic,
                    key=record["model_id"].encode(),
                    value=codec.encode(schema, record),
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                producer.poll(0.05)

    for i in range(start, start + n):
        send(topics.PREDICTIONS, "PredictionEvent", stream.step(i)[0])
        if i - outcome_lag >= 0:
            send(topics.OUTCOMES, "OutcomeEvent", stream.step(i - outcome_lag)[1])
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(60)
    return delivered
