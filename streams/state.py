"""Per-model monitoring state: detector banks, stream registry, offsets, join bookkeeping.

One ``ModelState`` per model lives in a changelog-backed table and is written once per batch.
It carries the highest source offsets it has applied, so a batch replayed after a crash (the
at-least-once half of our guarantee) is recognised and not applied twice: the detectors see
every event exactly once and a restarted worker reproduces the uninterrupted run's detections.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import driftline.detectors  # noqa: F401  (registers every detector class)
import numpy as np
from driftline.detectors.bank import DetectorBank
from driftline.detectors.base import REGISTRY, ChangeDetector

STREAM_FEATURE = "FEATURE"
STREAM_PREDICTION = "PREDICTION"
STREAM_ERROR = "ERROR"

_MAGIC = b"DLS1"


@dataclass(frozen=True)
class DetectorSpec:
    """Which detector watches which kind of stream, with its hyper-parameters."""

    stream_kind: str
    detector: str
    params: dict[str, Any] = field(default_factory=dict)

    def build(self) -> ChangeDetector:
        try:
            cls = REGISTRY[self.detector]
        except KeyError:
            raise ValueError(
                f"unknown detector {self.detector!r}; known: {sorted(REGISTRY)}"
            ) from None
        return cls(**self.params)

    @property
    def key(self) -> str:
        return f"{self.stream_kind}/{self.detector}"


@dataclass
class ModelState:
    """Everything the worker remembers about one model between batches."""

    model_id: str
    specs: tuple[DetectorSpec, ...]
    # stream kind -> stream name -> row in every bank of that kind
    streams: dict[str, dict[str, int]] = field(default_factory=dict)
    # values seen per (kind, row): the next value's 0-based position in its stream
    counts: dict[str, list[int]] = field(default_factory=dict)
    banks: dict[str, DetectorBank] = field(default_factory=dict)
    # "topic:partition" -> highest offset applied
    offsets: dict[str, int] = field(default_factory=dict)
    # largest event time seen (ms): the model's stream clock, used for TTLs and cooldowns,
    # so replays expire and cool down exactly as the original run did
    clock_ms: int = 0
    # largest prediction / outcome event time seen: each stream's clock, by which the join
    # expires what waits for the *other* stream
    prediction_clock_ms: int = 0
    outcome_clock_ms: int = 0
    model_version: str = ""
    last_retraining_ms: int | None = None
    # derivable from ``streams``; not serialised
    _row_cache: dict[tuple[str, tuple[str, ...]], np.ndarray] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        for spec in self.specs:
            if spec.key not in self.banks:
                self.banks[spec.key] = DetectorBank(spec.build(), 0)

    # -- offsets -------------------------------------------------------------------------
    def applied(self, topic: str, partition: int, offset: int) -> bool:
        """True if this source message was already applied (a replay after a crash)."""
        return offset <= self.offsets.get(f"{topic}:{partition}", -1)

    def mark(self, topic: str, partition: int, offset: int) -> None:
        key = f"{topic}:{partition}"
        if offset > self.offsets.get(key, -1):
            self.offsets[key] = offset

    # -- streams ---------------------------------------------------------------------------
    def stream_row(self, kind: str, name: str) -> int:
        """Row of stream ``name`` in the banks of ``kind``, registering it on first sight."""
        rows = self.streams.setdefault(kind, {})
        row = rows.get(name)
        if row is None:
            row = rows[name] = len(rows)
            self.counts.setdefault(kind, []).append(0)
            for spec in self.specs:
                if spec.stream_kind == kind:
                    self.banks[spec.key].ensure_streams(row + 1)
        return row

    def stream_rows(self, kind: str, names: tuple[str, ...]) -> np.ndarray:
        """Rows of several streams at once; cached per tuple of names (events of one model
        nearly always carry the same features in the same order)."""
        cached = self._row_cache.get((kind, names))
        if cached is None:
            cached = np.array([self.stream_row(kind, n) for n in names], dtype=np.int64)
            self._row_cache[(kind, names)] = cached
        return cached

    def stream_names(self, kind: str) -> list[str]:
        rows = self.streams.get(kind, {})
        names = [""] * len(rows)
        for name, row in rows.items():
            names[row] = name
        return names

    def specs_for(self, kind: str) -> list[DetectorSpec]:
        return [spec for spec in self.specs if spec.stream_kind == kind]

    # -- serialisation ------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        header = {
            "model_id": self.model_id,
            "specs": [[s.stream_kind, s.detector, s.params] for s in self.specs],
            "streams": self.streams,
            "counts": self.counts,
            "offsets": self.offsets,
            "clock_ms": self.clock_ms,
            "prediction_clock_ms": self.prediction_clock_ms,
            "outcome_clock_ms": self.outcome_clock_ms,
            "model_version": self.model_version,
            "last_retraining_ms": self.last_retraining_ms,
            "banks": sorted(self.banks),
        }
        parts = [json.dumps(header, separators=(",", ":")).encode()]
        parts += [self.banks[key].to_state() for key in header["banks"]]
        out = [_MAGIC, struct.pack("<I", len(parts))]
        for part in parts:
            out += [struct.pack("<Q", len(part)), part]
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelState:
        if data[:4] != _MAGIC:
            raise ValueError("not a driftline model state (bad magic bytes)")
        (n_parts,) = struct.unpack_from("<I", data, 4)
        pos, parts = 8, []
        for _ in range(n_parts):
            (size,) = struct.unpack_from("<Q", data, pos)
            parts.append(data[pos + 8 : pos + 8 + size])
            pos += 8 + size
        header = json.loads(parts[0])
        banks = {
            key: DetectorBank.from_state(blob)
            for key, blob in zip(header["banks"], parts[1:], strict=True)
        }
        return cls(
            model_id=header["model_id"],
            specs=tuple(DetectorSpec(k, d, p) for k, d, p in header["specs"]),
            streams=header["streams"],
            counts=header["counts"],
            banks=banks,
            offsets=header["offsets"],
            clock_ms=header["clock_ms"],
            prediction_clock_ms=header["prediction_clock_ms"],
            outcome_clock_ms=header["outcome_clock_ms"],
            model_version=header["model_version"],
            last_retraining_ms=header["last_retraining_ms"],
        )
