"""Joining outcomes to their predictions through a changelog-backed table keyed by prediction id.

Each key holds one of three records:

- ``P`` a prediction awaiting its outcome (expires ``join_ttl`` after the prediction time),
- ``O`` an outcome that arrived before its prediction (expires ``orphan_ttl`` after the
  outcome's time, then goes to the DLQ as an orphan, original bytes included),
- ``J`` a marker that the prediction was joined, so a second outcome is known as a duplicate
  (expires like the prediction would have).

Expiry runs on event time, not the wall clock, so a replay expires exactly what the original
run expired, and on the clock of the *other* stream: a prediction is given up when the
model's outcomes have moved ``join_ttl`` past it, an early outcome when the model's predictions
have moved ``orphan_ttl`` past it. A worker catching up a backlog may read one topic far ahead
of the other; judged by its own topic's clock, everything waiting would look expired. (The
prediction clock still ends a prediction's wait at twice the TTL, for models whose labels
never come.) The expiry index (two heaps per model) is derivable from the table and rebuilt after a restart.
"""

from __future__ import annotations

import heapq
import json
import struct
from dataclasses import dataclass
from typing import Any

from driftline.streams.kv import PartitionedKV

PENDING, EARLY, JOINED = b"P", b"O", b"J"

# One encoder for every entry: json.dumps with options builds a new encoder per call.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

# Prediction fields an outcome needs once joined (the rest stays in ClickHouse).
PREDICTION_FIELDS = (
    "event_id",
    "model_id",
    "model_version",
    "event_time",
    "segments",
    "prediction_label",
    "prediction_score",
    "prediction_value",
)


@dataclass(frozen=True)
class Entry:
    tag: bytes
    body: dict[str, Any]
    raw: bytes = b""

    def encode(self) -> bytes:
        meta = _JSON.encode(self.body).encode()
        return self.tag + struct.pack("<I", len(meta)) + meta + self.raw

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        (size,) = struct.unpack_from("<I", data, 1)
        return cls(data[:1], json.loads(data[5 : 5 + size]), data[5 + size :])

    def expires_at(self, join_ttl_ms: int, orphan_ttl_ms: int) -> int:
        if self.tag == EARLY:
            return int(self.body["event_time"]) + orphan_ttl_ms
        return int(self.body["event_time"]) + join_ttl_ms


@dataclass(frozen=True)
class Expired:
    """What expiry removed: orphan outcomes (for the DLQ) and a count of unlabelled predictions."""

    orphans: list[Entry]
    unlabelled: int


class DuplicateEvent(Exception):
    """The event (or one with the same prediction id) was already seen."""


class JoinBook:
    def __init__(self, kv: PartitionedKV, join_ttl_ms: int, orphan_ttl_ms: int) -> None:
        self.kv = kv
        self.join_ttl_ms = join_ttl_ms
        self.orphan_ttl_ms = orphan_ttl_ms
        # (model, tag class) -> [(expires at, prediction id)]; EARLY entries wait on the
        # prediction clock, PENDING and JOINED on the outcome clock
        self._heaps: dict[tuple[str, bool], list[tuple[int, str]]] = {}
        self._indexed = False

    def _index(self) -> None:
        """Rebuild the per-model expiry heaps from the table (after recovery)."""
        if self._indexed:
            return
        self._indexed = True
        for key, value in self.kv.items():
            entry = Entry.decode(value)
            self._remember(entry, key.decode())
        for heap in self._heaps.values():
            heapq.heapify(heap)

    def _remember(self, entry: Entry, prediction_id: str, push: bool = False) -> None:
        heap = self._heaps.setdefault((entry.body["model_id"], entry.tag == EARLY), [])
        item = (entry.expires_at(self.join_ttl_ms, self.orphan_ttl_ms), prediction_id)
        if push:
            heapq.heappush(heap, item)
        else:
            heap.append(item)

    def _put(self, partition: int, prediction_id: str, entry: Entry) -> None:
        self.kv.put(partition, prediction_id.encode(), entry.encode())
        self._remember(entry, prediction_id, push=True)

    def add_prediction(self, partition: int, prediction: dict[str, Any]) -> Entry | None:
        """Record a prediction; return the early outcome waiting for it, if any.

        Raises DuplicateEvent if this prediction id is already pending or joined.
        """
        self._index()
        prediction_id = prediction["event_id"]
        existing = self.kv.get(prediction_id.encode())
        body = {name: prediction.get(name) for name in PREDICTION_FIELDS}
        if existing is not None:
            entry = Entry.decode(existing)
            if entry.tag != EARLY:
                raise DuplicateEvent(f"prediction {prediction_id} already seen")
            self._put(partition, prediction_id, Entry(JOINED, _marker(body, entry)))
            return entry
        self._put(partition, prediction_id, Entry(PENDING, body))
        return None

    def add_outcome(
        self, partition: int, offset: int, outcome: dict[str, Any], raw: bytes
    ) -> dict[str, Any] | None:
        """Join an outcome: return its prediction's fields, or None if it must wait.

        Raises DuplicateEvent if the prediction was already joined or an outcome already waits.
        """
        self._index()
        prediction_id = outcome["prediction_id"]
        existing = self.kv.get(prediction_id.encode())
        if existing is None:
            body = dict(outcome, source_partition=partition, source_offset=offset)
            self._put(partition, prediction_id, Entry(EARLY, body, raw))
            return None
        entry = Entry.decode(existing)
        if entry.tag != PENDING:
            raise DuplicateEvent(f"prediction {prediction_id} already has an outcome")
        joined = Entry(JOINED, _marker(entry.body, Entry(EARLY, outcome)))
        self._put(partition, prediction_id, joined)
        return entry.body

    def expire(
        self, partition: int, model_id: str, prediction_clock_ms: int, outcome_clock_ms: int
    ) -> Expired:
        """Drop this model's entries whose time is up on the other stream's clock."""
        self._index()
        orphans: list[Entry] = []
        unlabelled = 0
        # The prediction clock still ends a prediction's wait at twice the TTL, so a model
        # whose labels never come does not keep every prediction forever.
        clocks = (
            (True, prediction_clock_ms),
            (False, max(outcome_clock_ms, prediction_clock_ms - self.join_ttl_ms)),
        )
        for early, clock_ms in clocks:
            heap = self._heaps.get((model_id, early))
            while heap and heap[0][0] <= clock_ms:
                _, prediction_id = heapq.heappop(heap)
                value = self.kv.get(prediction_id.encode())
                if value is None:
                    continue
                entry = Entry.decode(value)
                if (entry.tag == EARLY) != early or entry.expires_at(
                    self.join_ttl_ms, self.orphan_ttl_ms
                ) > clock_ms:
                    continue  # replaced since this item was pushed; another item covers it
                self.kv.delete(partition, prediction_id.encode())
                if entry.tag == EARLY:
                    orphans.append(entry)
                elif entry.tag == PENDING:
                    unlabelled += 1
        return Expired(orphans, unlabelled)

    def pending_count(self, model_id: str) -> int:
        return len(self._heaps.get((model_id, False), ()))


def _marker(prediction: dict[str, Any], outcome: Entry) -> dict[str, Any]:
    return {
        "model_id": prediction["model_id"],
        "event_time": prediction["event_time"],
        "outcome_id": outcome.body.get("event_id"),
    }
