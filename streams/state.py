"""Monitoring state: per model (detector banks, stream registry, clocks) and per input
partition (its models, their joins and alert states, and the input offsets it has consumed).

A ``PartitionState`` is the unit of recovery: the worker checkpoints it to a changelog topic
(``streams/checkpoint.py``) together with the next input offsets, and a worker that takes the
partition over restores it and seeks to those offsets. The detectors therefore see every event
exactly once and a restarted worker reproduces the uninterrupted run's decisions.
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
from driftline.detectors.monitor import ProfileMonitor
from driftline.streams.estimates import VersionedEstimates
from driftline.streams.join import JoinState
from driftline.streams.versions import VersionTracker

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
    # largest event time seen (ms): the model's stream clock, used for TTLs and cooldowns,
    # so replays expire and cool down exactly as the original run did
    clock_ms: int = 0
    # largest prediction / outcome event time seen: each stream's clock, by which the join
    # expires what waits for the *other* stream
    prediction_clock_ms: int = 0
    outcome_clock_ms: int = 0
    model_version: str = ""
    last_retraining_ms: int | None = None
    # windows of features and predictions against the reference (streams/profiles.py):
    # a driftline.detectors.monitor.ProfileMonitor, created on the model's first predictions
    profiles: ProfileMonitor | None = None
    # the versions ``profiles`` has seen, in order of first appearance; the last one's
    # reference (or first events) is in use (streams/profiles.py, re-baselining)
    profile_versions: list[str] = field(default_factory=list)
    # one ProfileMonitor per segment value "key=value", in order of admission (the first
    # ``MonitorConfig.max_segments`` values the model's events carried; streams/profiles.py)
    segment_profiles: dict[str, ProfileMonitor] = field(default_factory=dict)
    # which version serves, and each version's labelled results (streams/versions.py)
    versions: VersionTracker = field(default_factory=VersionTracker)
    # performance estimates before labels arrive (streams/estimates.py), from the first
    # scored prediction or labelled pair on
    estimates: VersionedEstimates | None = None
    # derivable from ``streams``; not serialised
    _row_cache: dict[tuple[str, tuple[str, ...]], np.ndarray] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        for spec in self.specs:
            if spec.key not in self.banks:
                self.banks[spec.key] = DetectorBank(spec.build(), 0)

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
            "clock_ms": self.clock_ms,
            "prediction_clock_ms": self.prediction_clock_ms,
            "outcome_clock_ms": self.outcome_clock_ms,
            "model_version": self.model_version,
            "last_retraining_ms": self.last_retraining_ms,
            "banks": sorted(self.banks),
            "profiles": self.profiles is not None,
            "profile_versions": self.profile_versions,
            "estimates": self.estimates is not None,
            "versions": self.versions.to_json(),
            "segment_profiles": list(self.segment_profiles),
        }
        parts = [json.dumps(header, separators=(",", ":")).encode()]
        parts += [self.banks[key].to_state() for key in header["banks"]]
        if self.profiles is not None:
            parts.append(self.profiles.to_bytes())
        if self.estimates is not None:
            parts.append(self.estimates.to_state())
        parts += [monitor.to_bytes() for monitor in self.segment_profiles.values()]
        return _frame(_MAGIC, parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelState:
        parts = _unframe(_MAGIC, data)
        header = json.loads(parts[0])
        n_banks = len(header["banks"])
        banks = {
            key: DetectorBank.from_state(blob)
            for key, blob in zip(header["banks"], parts[1 : 1 + n_banks], strict=True)
        }
        profiles = None
        if header.get("profiles"):  # absent in checkpoints written before the stage existed
            profiles = ProfileMonitor.from_bytes(parts[1 + n_banks])
        estimates = None
        if header.get("estimates"):  # absent in checkpoints written before the stage existed
            estimates = VersionedEstimates.from_state(
                parts[1 + n_banks + int(profiles is not None)]
            )
        # absent in checkpoints written before segment windows: none
        segments = header.get("segment_profiles", [])
        first = 1 + n_banks + int(profiles is not None) + int(estimates is not None)
        segment_profiles = {
            name: ProfileMonitor.from_bytes(blob)
            for name, blob in zip(segments, parts[first : first + len(segments)], strict=True)
        }
        return cls(
            model_id=header["model_id"],
            specs=tuple(DetectorSpec(k, d, p) for k, d, p in header["specs"]),
            streams=header["streams"],
            counts=header["counts"],
            banks=banks,
            clock_ms=header["clock_ms"],
            prediction_clock_ms=header["prediction_clock_ms"],
            outcome_clock_ms=header["outcome_clock_ms"],
            model_version=header["model_version"],
            last_retraining_ms=header["last_retraining_ms"],
            profiles=profiles,
            # absent in checkpoints written before re-baselining: the next version seen is
            # taken as the one the restored windows belong to
            profile_versions=header.get("profile_versions", []),
            segment_profiles=segment_profiles,
            estimates=estimates,
            # absent in checkpoints written before versions were tracked
            versions=VersionTracker.from_json(header.get("versions")),
        )


_PARTITION_MAGIC = b"DLP1"


@dataclass
class PartitionState:
    """Everything one input partition's events built up, and how far they have been read.

    ``next_offsets``: input topic -> the offset of the first message not yet applied. Written
    together with the state, so state and position can never disagree after a restore.
    """

    partition: int
    models: dict[str, ModelState] = field(default_factory=dict)
    joins: dict[str, JoinState] = field(default_factory=dict)
    alerts: dict[str, bytes] = field(default_factory=dict)  # model -> AlertState bytes
    next_offsets: dict[str, int] = field(default_factory=dict)
    # outcome messages read but not applied yet (waiting for their predictions; in memory
    # only: ``next_offsets`` stops before them, so a restore reads them again)
    held: list[Any] = field(default_factory=list, repr=False)
    # the checkpoint chain written since this state was built or restored (see checkpoint())
    _chain: ChainSize | None = field(default=None, repr=False, compare=False)

    def to_bytes(self) -> bytes:
        """The whole state (a chain of one)."""
        return self._record(delta=False)

    def checkpoint(self) -> tuple[bytes, bool]:
        """The next record of this partition's checkpoint chain, and whether it is a full one.

        A full record holds everything; a delta holds the models and alert states whole (their
        size is bounded by configuration) and of each join only what changed since the last
        record (``JoinState.delta_bytes``): the join keeps every id for its TTL, so rewriting
        it at every commit interval cost time and changelog bytes in proportion to traffic x
        TTL (benchmarks/pipeline.py: ~30 MB a second at half load, and a fifth of the input
        thread). A delta is written while the chain's deltas add up to less than
        ``DELTA_BUDGET`` times its full record, so restoring reads at most 1 + DELTA_BUDGET
        times the state, and writing costs about (1 + 1/DELTA_BUDGET) times the changes. The
        first record after a build or restore is full."""
        if self._chain is not None:
            delta = self._record(delta=True)
            chain = self._chain
            budget = DELTA_BUDGET * chain.full_bytes
            if chain.deltas < MAX_DELTAS and chain.delta_bytes + len(delta) <= budget:
                chain.deltas += 1
                chain.delta_bytes += len(delta)
                self._mark_clean()
                return delta, False
        full = self._record(delta=False)
        self._chain = ChainSize(full_bytes=len(full))
        self._mark_clean()
        return full, True

    def _mark_clean(self) -> None:
        for join in self.joins.values():
            join.mark_clean()

    def _record(self, delta: bool) -> bytes:
        models = sorted(self.models)
        joins = sorted(self.joins)
        alerts = sorted(self.alerts)
        header = {
            "partition": self.partition,
            "next_offsets": self.next_offsets,
            "models": models,
            "joins": joins,
            "alerts": alerts,
            "delta": delta,
        }
        parts = [json.dumps(header, separators=(",", ":")).encode()]
        parts += [self.models[m].to_bytes() for m in models]
        if delta:
            parts += [self.joins[m].delta_bytes() for m in joins]
        else:
            parts += [self.joins[m].to_bytes() for m in joins]
        parts += [self.alerts[m] for m in alerts]
        return _frame(_PARTITION_MAGIC, parts)

    @classmethod
    def from_bytes(cls, data: bytes, join_ttl_ms: int, orphan_ttl_ms: int) -> PartitionState:
        return cls.from_chain([data], join_ttl_ms, orphan_ttl_ms)

    @classmethod
    def from_chain(
        cls, records: list[bytes], join_ttl_ms: int, orphan_ttl_ms: int
    ) -> PartitionState:
        """The state a checkpoint chain describes: a full record, then deltas in order."""
        joins: dict[str, JoinState] = {}
        for i, record in enumerate(records):
            header, *parts = _unframe(_PARTITION_MAGIC, record)
            meta = json.loads(header)
            n_models, n_joins = len(meta["models"]), len(meta["joins"])
            join_parts = zip(meta["joins"], parts[n_models : n_models + n_joins], strict=True)
            # "delta" is absent in records written before deltas existed: full ones
            if meta.get("delta", False) != (i > 0):
                raise ValueError("a checkpoint chain is one full record, then deltas")
            if i == 0:
                joins = {m: JoinState.from_bytes(b, join_ttl_ms, orphan_ttl_ms) for m, b in join_parts}
                continue
            for m, b in join_parts:
                if m not in joins:
                    joins[m] = JoinState(join_ttl_ms, orphan_ttl_ms)
                joins[m].apply_delta(b)
        models = parts[:n_models]
        alerts = parts[n_models + n_joins :]
        return cls(
            partition=meta["partition"],
            models={m: ModelState.from_bytes(b) for m, b in zip(meta["models"], models, strict=True)},
            joins={m: joins[m] for m in meta["joins"]},
            alerts=dict(zip(meta["alerts"], alerts, strict=True)),
            next_offsets=meta["next_offsets"],
        )


# A chain is rewritten whole after this many deltas even if they are small (a trickle), so a
# restore reads a bounded number of records, and once its deltas add up to this many times
# its full record, so a restore reads at most 1 + DELTA_BUDGET times the state. At 1.0 the
# worker in benchmarks/pipeline.py rewrote every join in full every ~4 s at half load (deltas
# are ~1/4 of a full record there: the models' open windows are in every record).
MAX_DELTAS = 100
DELTA_BUDGET = 3.0


@dataclass
class ChainSize:
    """The checkpoint chain of a partition so far: its full record's size and its deltas."""

    full_bytes: int
    deltas: int = 0
    delta_bytes: int = 0


def _frame(magic: bytes, parts: list[bytes]) -> bytes:
    out = [magic, struct.pack("<I", len(parts))]
    for part in parts:
        out += [struct.pack("<Q", len(part)), part]
    return b"".join(out)


def _unframe(magic: bytes, data: bytes) -> list[bytes]:
    if data[: len(magic)] != magic:
        raise ValueError(f"not a driftline state record (expected magic {magic!r})")
    (n_parts,) = struct.unpack_from("<I", data, 4)
    pos, parts = 8, []
    for _ in range(n_parts):
        (size,) = struct.unpack_from("<Q", data, pos)
        parts.append(data[pos + 8 : pos + 8 + size])
        pos += 8 + size
    return parts
