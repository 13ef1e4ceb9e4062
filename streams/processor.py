"""One batch of prediction and outcome messages in; rows, drift events, retraining requests and
dead letters out.

This is the worker's logic without faust: the agent hands it a Kafka batch and applies what
comes back (ClickHouse rows, topic records, table writes). Everything here is deterministic in
the input order, so replays and restarts give the same ids and the same detections.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from driftline.schemas import Codec, DecodeError, InvalidEvent, event_id, topics
from driftline.schemas.validation import validate_outcome, validate_prediction
from driftline.sinks.tables import joined_label
from driftline.streams.join import DuplicateEvent, Entry, JoinBook
from driftline.streams.kv import PartitionedKV
from driftline.streams.state import (
    STREAM_ERROR,
    STREAM_FEATURE,
    STREAM_PREDICTION,
    DetectorSpec,
    ModelState,
)

DUPLICATE = "duplicate"

DEFAULT_SPECS: tuple[DetectorSpec, ...] = (
    DetectorSpec(STREAM_FEATURE, "ADWIN", {"delta": 0.002}),
    DetectorSpec(STREAM_PREDICTION, "ADWIN", {"delta": 0.002}),
    DetectorSpec(STREAM_ERROR, "ADWIN", {"delta": 0.002}),
)


@dataclass(frozen=True)
class SourceMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class DeadLetter:
    """An input we refuse, kept whole: original bytes plus why, and where it came from."""

    source: SourceMessage
    reason: str
    detail: str
    value: bytes | None = None  # defaults to the source message's bytes

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (topics.HEADER_REASON, self.reason.encode()),
            (topics.HEADER_DETAIL, self.detail[:1000].encode()),
            (topics.HEADER_SOURCE_TOPIC, self.source.topic.encode()),
            (topics.HEADER_SOURCE_PARTITION, str(self.source.partition).encode()),
            (topics.HEADER_SOURCE_OFFSET, str(self.source.offset).encode()),
        ]

    @property
    def payload(self) -> bytes:
        return self.value if self.value is not None else (self.source.value or b"")


@dataclass(frozen=True)
class ProcessorConfig:
    join_ttl_ms: int = 3_600_000
    orphan_ttl_ms: int = 300_000
    retraining_cooldown_ms: int = 3_600_000
    retraining_lookback_ms: int = 3_600_000
    known_models: frozenset[str] = frozenset()  # empty: every model is welcome
    specs: tuple[DetectorSpec, ...] = DEFAULT_SPECS


@dataclass
class BatchResult:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    drift_events: list[dict[str, Any]] = field(default_factory=list)
    retraining: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)
    # model -> the source partition its state belongs to (for state written after the batch)
    partitions: dict[str, int] = field(default_factory=dict)


@dataclass
class _Inputs:
    """Values a batch feeds one model's banks of one stream kind, in event order.

    Kept as chunks per event (the rows of an event's values come from a cache keyed by its
    feature names), so a 20-feature event costs a few appends, not 20."""

    row_chunks: list[np.ndarray] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    event_times: list[int] = field(default_factory=list)

    def add(self, rows: np.ndarray, values: Iterable[float], source_id: str, time_ms: int) -> None:
        self.row_chunks.append(rows)
        self.values.extend(values)
        self.sizes.append(len(rows))
        self.event_ids.append(source_id)
        self.event_times.append(time_ms)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(stream rows, values, index of each value's event)."""
        rows = np.concatenate(self.row_chunks)
        values = np.asarray(self.values, dtype=np.float64)
        events = np.repeat(np.arange(len(self.sizes)), self.sizes)
        return rows, values, events


class BatchProcessor:
    """Applies batches to per-model state held in two partition-aware tables."""

    def __init__(
        self,
        codec: Codec,
        config: ProcessorConfig,
        states: PartitionedKV,
        join_table: PartitionedKV,
    ) -> None:
        self.codec = codec
        self.config = config
        self.states = states
        self.join = JoinBook(join_table, config.join_ttl_ms, config.orphan_ttl_ms)
        self._models: dict[str, ModelState] = {}

    def forget(self) -> None:
        """Drop cached model states (partitions were reassigned; the tables are the truth)."""
        self._models.clear()
        self.join = JoinBook(self.join.kv, self.config.join_ttl_ms, self.config.orphan_ttl_ms)

    def _state(self, model_id: str) -> ModelState:
        state = self._models.get(model_id)
        if state is None:
            blob = self.states.get(model_id.encode())
            if blob is not None:
                state = ModelState.from_bytes(blob)
            else:
                state = ModelState(model_id, self.config.specs)
            self._models[model_id] = state
        return state

    # -- the batch ---------------------------------------------------------------------------
    def process(self, messages: Iterable[SourceMessage]) -> BatchResult:
        result = BatchResult()
        inputs: dict[tuple[str, str], _Inputs] = defaultdict(_Inputs)
        touched: dict[str, int] = {}  # model -> partition
        for message in messages:
            self._one(message, result, inputs, touched)
        result.partitions = touched
        for model_id, partition in touched.items():
            state = self._models[model_id]
            for kind in (STREAM_FEATURE, STREAM_PREDICTION, STREAM_ERROR):
                batch = inputs.get((model_id, kind))
                if batch is not None:
                    self._detect(state, kind, batch, result)
            expired = self.join.expire(
                partition, model_id, state.prediction_clock_ms, state.outcome_clock_ms
            )
            for orphan in expired.orphans:
                result.dead_letters.append(_orphan_letter(orphan, self.config.orphan_ttl_ms))
            result.counters["unlabelled_expired"] += expired.unlabelled
            self.states.put(partition, model_id.encode(), state.to_bytes())
        return result

    def _one(
        self,
        message: SourceMessage,
        result: BatchResult,
        inputs: dict[tuple[str, str], _Inputs],
        touched: dict[str, int],
    ) -> None:
        expected = topics.TOPIC_SCHEMAS.get(message.topic)
        try:
            if message.value is None:
                raise DecodeError(topics.NOT_CONFLUENT_FRAMED, "null value (tombstone)")
            kind, record = self.codec.decode(message.value, expected=expected)
            if kind == topics.PREDICTION_EVENT:
                validate_prediction(record)
            else:
                validate_outcome(record)
        except (DecodeError, InvalidEvent) as exc:
            result.dead_letters.append(DeadLetter(message, exc.reason, exc.detail))
            result.counters["dead_letters"] += 1
            return
        model_id = record["model_id"]
        if self.config.known_models and model_id not in self.config.known_models:
            result.dead_letters.append(
                DeadLetter(message, topics.UNKNOWN_MODEL, f"model {model_id!r} is not registered")
            )
            result.counters["dead_letters"] += 1
            return
        state = self._state(model_id)
        if state.applied(message.topic, message.partition, message.offset):
            result.counters["replayed"] += 1  # applied before a crash; rows already landed
            return
        state.mark(message.topic, message.partition, message.offset)
        touched[model_id] = message.partition
        time_ms = int(record["event_time"])
        state.clock_ms = max(state.clock_ms, time_ms)
        if kind == topics.PREDICTION_EVENT:
            state.prediction_clock_ms = max(state.prediction_clock_ms, time_ms)
        else:
            state.outcome_clock_ms = max(state.outcome_clock_ms, time_ms)
        try:
            if kind == topics.PREDICTION_EVENT:
                self._prediction(message, record, state, result, inputs)
            else:
                self._outcome(message, record, state, result, inputs)
        except DuplicateEvent as exc:
            result.dead_letters.append(DeadLetter(message, DUPLICATE, str(exc)))
            result.counters["duplicates"] += 1

    def _prediction(
        self,
        message: SourceMessage,
        record: dict[str, Any],
        state: ModelState,
        result: BatchResult,
        inputs: dict[tuple[str, str], _Inputs],
    ) -> None:
        early = self.join.add_prediction(message.partition, record)  # raises on duplicates
        result.counters["predictions"] += 1
        result.rows["predictions"].append(record)
        state.model_version = record["model_version"]
        source_id, time_ms = record["event_id"], int(record["event_time"])
        features = record["numeric_features"]
        if features:
            rows = state.stream_rows(STREAM_FEATURE, tuple(features))
            inputs[(state.model_id, STREAM_FEATURE)].add(
                rows, features.values(), source_id, time_ms
            )
        for name in ("prediction_score", "prediction_value"):
            value = record.get(name)
            if value is not None:
                rows = state.stream_rows(STREAM_PREDICTION, (name.removeprefix("prediction_"),))
                inputs[(state.model_id, STREAM_PREDICTION)].add(rows, (value,), source_id, time_ms)
        if early is not None:
            self._joined(record, early.body, state, result, inputs)

    def _outcome(
        self,
        message: SourceMessage,
        record: dict[str, Any],
        state: ModelState,
        result: BatchResult,
        inputs: dict[tuple[str, str], _Inputs],
    ) -> None:
        prediction = self.join.add_outcome(
            message.partition, message.offset, record, message.value or b""
        )
        result.counters["outcomes"] += 1
        result.rows["outcomes"].append(record)
        if prediction is None:
            result.counters["outcomes_waiting"] += 1
        else:
            self._joined(prediction, record, state, result, inputs)

    def _joined(
        self,
        prediction: dict[str, Any],
        outcome: dict[str, Any],
        state: ModelState,
        result: BatchResult,
        inputs: dict[tuple[str, str], _Inputs],
    ) -> None:
        row = joined_label(prediction, outcome)
        result.rows["joined_labels"].append(row)
        result.counters["joined"] += 1
        if row["error"] is not None:
            inputs[(state.model_id, STREAM_ERROR)].add(
                state.stream_rows(STREAM_ERROR, ("error",)),
                (row["error"],),
                outcome["event_id"],
                int(outcome["event_time"]),
            )

    # -- detection ---------------------------------------------------------------------------
    def _detect(self, state: ModelState, kind: str, batch: _Inputs, result: BatchResult) -> None:
        rows, values, value_events = batch.arrays()
        counts = state.counts[kind]
        names = state.stream_names(kind)
        # rank of each value within its stream in this batch -> position in the whole stream
        ranks = _ranks(rows)
        batch_end = batch.event_times[-1]
        touched_rows = np.unique(rows)
        for spec in state.specs_for(kind):
            bank = state.banks[spec.key]
            before = {int(r): _estimate(bank, int(r)) for r in touched_rows}
            found = bank.update_many(rows, values)
            drift_rows = set()
            for i, row in zip(found.drift.tolist(), found.drift_streams.tolist(), strict=True):
                drift_rows.add(row)
                position = counts[row] + int(ranks[i])
                drift = self._drift_event(
                    state, spec, names[row], position, batch, int(value_events[i]), values[i]
                )
                result.drift_events.append(drift)
                result.rows["drift_events"].append(drift)
                if kind == STREAM_ERROR:
                    self._maybe_retrain(state, drift, before[row], _estimate(bank, row), result)
            for r in touched_rows.tolist():
                result.rows["detector_stats"].append(
                    {
                        "model_id": state.model_id,
                        "stream_kind": kind,
                        "stream_name": names[r],
                        "detector": spec.detector,
                        "time": batch_end,
                        "n_values": counts[r] + int(np.count_nonzero(rows == r)),
                        "estimate": _estimate(bank, r),
                        "statistic": None,
                        "p_value": None,
                        "drift": int(r in drift_rows),
                    }
                )
        for r, n in zip(*np.unique(rows, return_counts=True), strict=True):
            counts[int(r)] += int(n)

    def _drift_event(
        self,
        state: ModelState,
        spec: DetectorSpec,
        stream_name: str,
        position: int,
        batch: _Inputs,
        event: int,
        value: float,
    ) -> dict[str, Any]:
        return {
            "event_id": event_id(
                "drift", state.model_id, spec.stream_kind, stream_name, spec.detector, str(position)
            ),
            "model_id": state.model_id,
            "model_version": state.model_version,
            "stream_kind": spec.stream_kind,
            "stream_name": stream_name,
            "detector": spec.detector,
            "detected_at": batch.event_times[event],
            "position": position,
            "statistic": None,
            "p_value": None,
            "threshold": spec.params.get("delta"),
            "evidence": {
                "value": repr(float(value)),
                "params": ",".join(f"{k}={v}" for k, v in sorted(spec.params.items())),
            },
            "source_event_id": batch.event_ids[event],
        }

    def _maybe_retrain(
        self,
        state: ModelState,
        drift: dict[str, Any],
        error_before: float | None,
        error_after: float | None,
        result: BatchResult,
    ) -> None:
        """First policy: the error stream drifted upwards -> one request per model per cooldown."""
        if error_before is not None and error_after is not None and error_after <= error_before:
            return  # the model got better; nothing to retrain for
        now = int(drift["detected_at"])
        last = state.last_retraining_ms
        if last is not None and now - last < self.config.retraining_cooldown_ms:
            result.counters["retraining_suppressed"] += 1
            return
        state.last_retraining_ms = now
        request = {
            "event_id": event_id("retraining", state.model_id, drift["event_id"]),
            "model_id": state.model_id,
            "model_version": state.model_version,
            "requested_at": now,
            "reason": (
                f"{drift['detector']} detected drift on the error stream at position "
                f"{drift['position']}: mean error {_fmt(error_before)} -> {_fmt(error_after)}"
            ),
            "trigger_event_ids": [drift["event_id"]],
            "window_start": max(0, now - self.config.retraining_lookback_ms),
            "window_end": now,
            "priority": "NORMAL",
            "policy": "error-drift",
        }
        result.retraining.append(request)
        result.rows["retraining_requests"].append(request)


def _ranks(rows: np.ndarray) -> np.ndarray:
    """For each value, how many earlier values of the batch belong to the same stream."""
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    ranks = np.empty_like(rows)
    ranks[order] = np.arange(len(rows)) - group_start
    return ranks


def _estimate(bank: Any, row: int) -> float | None:
    detector = bank.detector(row)
    value = getattr(detector, "estimation", None)
    return float(value) if value is not None else None


def _fmt(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"


def _orphan_letter(orphan: Entry, ttl_ms: int) -> DeadLetter:
    source = SourceMessage(
        topics.OUTCOMES,
        int(orphan.body["source_partition"]),
        int(orphan.body["source_offset"]),
        orphan.body["model_id"].encode(),
        orphan.raw,
    )
    detail = (
        f"no prediction {orphan.body['prediction_id']} within {ttl_ms} ms "
        f"of the outcome (the model's predictions moved past it)"
    )
    return DeadLetter(source, topics.ORPHAN_OUTCOME, detail)
