"""Client SDK for producing services: log predictions and outcomes to driftline's topics.

The producer is confluent-kafka's (librdkafka), idempotent and batching, so ``log_*`` calls
return as soon as the event is validated, encoded and queued; delivery is reported through
callbacks that update :attr:`DriftlineProducer.stats`. Call :meth:`flush` (or leave the
``with`` block) before exiting, or queued events are lost.

Example (needs a running broker)::

    from driftline.client import DriftlineProducer

    with DriftlineProducer("127.0.0.1:9092") as producer:
        pid = producer.log_prediction(
            "churn", {"age": 42, "plan": "gold"}, "yes", score=0.83,
            segments={"region": "eu"},
        )
        producer.log_outcome(pid, "churn", label="no")
    print(producer.stats)
"""

from __future__ import annotations

import numbers
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from driftline.schemas import Codec, ConfluentRegistry, topics
from driftline.schemas.validation import (
    DEFAULT_MAX_FEATURES,
    validate_outcome,
    validate_prediction,
)
from driftline.settings import Settings

__all__ = ["DeliveryStats", "DriftlineProducer", "to_millis"]

# Small batches flushed often: monitoring events should reach the workers within ~tens of ms,
# and librdkafka batches per partition anyway. Any of these can be overridden by the caller.
DEFAULT_KAFKA_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "compression.type": "lz4",
    "message.timeout.ms": 120_000,
}


@dataclass
class DeliveryStats:
    """What the broker acknowledged (or refused) so far."""

    delivered: int = 0
    failed: int = 0
    last_error: str | None = None


def to_millis(value: datetime | int | None) -> int:
    """Epoch milliseconds from a datetime (naive means UTC), int millis, or None (now)."""
    if value is None:
        return time.time_ns() // 1_000_000
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"event_time must be a datetime or int epoch millis, got {value!r}")
    return int(value)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"


def _split_features(features: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    numeric: dict[str, float] = {}
    categorical: dict[str, str] = {}
    for name, value in features.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"feature names must be non-empty strings, got {name!r}")
        if value is None:
            continue  # a missing value is an absent feature, not a zero
        if _is_bool(value):
            categorical[name] = "true" if value else "false"
        elif isinstance(value, numbers.Real):
            numeric[name] = float(value)
        elif isinstance(value, str):
            categorical[name] = value
        else:
            raise ValueError(
                f"feature {name!r} must be a number, string, bool or None, "
                f"got {type(value).__name__}"
            )
    return numeric, categorical


# The few client settings whose real names contain underscores (librdkafka's and the Python
# client's own callbacks); every other name is dotted.
_UNDERSCORE_NAMES = frozenset(
    {"log_level", "error_cb", "throttle_cb", "stats_cb", "oauth_cb", "logger", "on_delivery"}
)


def _normalise_kafka_config(config: Mapping[str, Any]) -> dict[str, Any]:
    # librdkafka names use dots, which keyword arguments cannot: accept linger_ms for linger.ms.
    return {
        (k if "." in k or k in _UNDERSCORE_NAMES else k.replace("_", ".")): v
        for k, v in config.items()
    }


class DriftlineProducer:
    """Publish PredictionEvents and OutcomeEvents (Avro, Confluent framing, key = model_id).

    ``kafka_config`` is passed to librdkafka on top of idempotent, batching defaults; dotted
    names may be written with underscores (``linger_ms=5``) or passed as ``**{"linger.ms": 5}``.
    ``max_features`` caps features per prediction (checked before sending).
    """

    def __init__(
        self,
        bootstrap: str,
        codec: Codec | None = None,
        *,
        predictions_topic: str = topics.PREDICTIONS,
        outcomes_topic: str = topics.OUTCOMES,
        max_features: int = DEFAULT_MAX_FEATURES,
        **kafka_config: Any,
    ) -> None:
        self.codec = codec if codec is not None else Codec()
        self.predictions_topic = predictions_topic
        self.outcomes_topic = outcomes_topic
        self.max_features = max_features
        config = {**DEFAULT_KAFKA_CONFIG, **_normalise_kafka_config(kafka_config)}
        config["bootstrap.servers"] = bootstrap
        self._producer = Producer(config)
        self._stats = DeliveryStats()
        self._produced = 0
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, **kafka_config: Any) -> DriftlineProducer:
        """A producer for the configured broker, using the schema registry if one is set."""
        codec = (
            Codec(ConfluentRegistry(settings.schema_registry_url))
            if settings.schema_registry_url
            else Codec()
        )
        return cls(settings.kafka_bootstrap, codec, **kafka_config)

    # -- delivery -----------------------------------------------------------------------------

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        with self._lock:
            if error is None:
                self._stats.delivered += 1
            else:
                self._stats.failed += 1
                self._stats.last_error = f"{message.topic()}: {error.str()}"

    @property
    def stats(self) -> DeliveryStats:
        """A snapshot of delivered/failed counts and the last delivery error."""
        with self._lock:
            return DeliveryStats(**vars(self._stats))

    @property
    def pending(self) -> int:
        """Events queued or in flight, not yet acknowledged or failed."""
        # Counted here: len(producer) also counts librdkafka's internal requests and events.
        with self._lock:
            return self._produced - self._stats.delivered - self._stats.failed

    def _send(self, topic: str, model_id: str, value: bytes, queue_timeout: float = 30.0) -> None:
        if self._closed:
            raise RuntimeError("producer is closed")
        deadline = time.monotonic() + queue_timeout
        # Counted before produce(): another thread's poll() may serve the delivery report first.
        with self._lock:
            self._produced += 1
        try:
            while True:
                try:
                    self._producer.produce(
                        topic, value=value, key=model_id.encode(), on_delivery=self._on_delivery
                    )
                    break
                except BufferError:
                    # Local queue full: serve delivery reports until there is room.
                    if time.monotonic() > deadline:
                        raise
                    self._producer.poll(0.05)
        except BaseException:
            with self._lock:
                self._produced -= 1
            raise
        self._producer.poll(0)

    # -- public API ---------------------------------------------------------------------------

    def log_prediction(
        self,
        model_id: str,
        features: Mapping[str, Any],
        prediction: str | float | int | bool | None = None,
        *,
        score: float | None = None,
        model_version: str = "1",
        segments: Mapping[str, str] | None = None,
        probabilities: Mapping[str, float] | None = None,
        event_id: str | None = None,
        event_time: datetime | int | None = None,
    ) -> str:
        """Queue one prediction; returns its event id (pass it to :meth:`log_outcome`).

        ``features``: numbers become numeric features, strings and bools categorical ones,
        None means missing (left out); NaN/inf are refused. ``prediction``: a string or bool is
        the predicted label, a number the predicted value (regression); ``score`` is the
        positive-class score or confidence. ``event_time``: datetime or epoch millis, default
        now. Raises ValueError (nothing is sent) if the event is invalid.
        """
        numeric, categorical = _split_features(features)
        label: str | None = None
        value: float | None = None
        if prediction is None:
            pass
        elif _is_bool(prediction):
            label = "true" if prediction else "false"
        elif isinstance(prediction, str):
            label = prediction
        elif isinstance(prediction, numbers.Real):
            value = float(prediction)
        else:
            raise ValueError(f"prediction must be str, number or bool, got {prediction!r:.80}")
        record = {
            "event_id": event_id if event_id is not None else str(uuid.uuid4()),
            "model_id": model_id,
            "model_version": str(model_version),
            "event_time": to_millis(event_time),
            "numeric_features": numeric,
            "categorical_features": categorical,
            "segments": {str(k): str(v) for k, v in (segments or {}).items() if v is not None},
            "prediction_label": label,
            "prediction_score": None if score is None else float(score),
            "prediction_value": value,
            "probabilities": (
                None
                if probabilities is None
                else {str(k): float(v) for k, v in probabilities.items()}
            ),
        }
        validate_prediction(record, max_features=self.max_features)
        self._send(self.predictions_topic, model_id, self.codec.encode("PredictionEvent", record))
        return record["event_id"]

    def log_outcome(
        self,
        prediction_id: str,
        model_id: str,
        label: str | bool | None = None,
        value: float | None = None,
        *,
        event_time: datetime | int | None = None,
        event_id: str | None = None,
    ) -> str:
        """Queue the ground truth for ``prediction_id``; returns the outcome's event id.

        Give ``label`` (classification; bools become "true"/"false") or ``value``
        (regression), or both. Raises ValueError (nothing is sent) if the event is invalid.
        """
        if label is not None and _is_bool(label):
            label = "true" if label else "false"
        record = {
            "event_id": event_id if event_id is not None else str(uuid.uuid4()),
            "prediction_id": prediction_id,
            "model_id": model_id,
            "event_time": to_millis(event_time),
            "label": label,
            "value": None if value is None else float(value),
        }
        validate_outcome(record)
        self._send(self.outcomes_topic, model_id, self.codec.encode("OutcomeEvent", record))
        return record["event_id"]

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for queued events to be acknowledged; returns how many are still pending."""
        self._producer.flush(timeout)
        return self.pending

    def close(self, timeout: float = 30.0) -> int:
        """Flush and refuse further events; returns how many could not be delivered in time."""
        if self._closed:
            return self.pending
        remaining = self.flush(timeout)
        self._closed = True
        return remaining

    def __enter__(self) -> DriftlineProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
