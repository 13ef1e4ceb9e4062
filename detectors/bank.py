"""Many independent detectors of one kind, updated together in one kernel call.

A worker sees a Kafka batch as ``(stream_id, value)`` pairs (stream = a model's feature, its
prediction, its error...). A bank keeps one state row per stream and feeds the whole batch to
the detector's bank kernel; each row behaves exactly like a standalone detector.
"""

from __future__ import annotations

import json
import struct
from typing import Any, NamedTuple

import numpy as np

from .base import DRIFT, WARNING, ChangeDetector, as_values, detector_from_state, new_cuts

_MAGIC = b"DLB1"


class BankDetections(NamedTuple):
    """Positions in the batch where a stream signalled, with the stream ids there; then,
    aligned with ``drift``, what that stream's detector saw before and after the change
    (as ``Detections``)."""

    drift: np.ndarray
    drift_streams: np.ndarray
    warning: np.ndarray
    warning_streams: np.ndarray
    drift_before_mean: np.ndarray
    drift_after_mean: np.ndarray
    drift_before_n: np.ndarray
    drift_after_n: np.ndarray


class DetectorBank:
    """``n_streams`` copies of ``prototype`` (its hyper-parameters, fresh state each).

    >>> from driftline.detectors import PageHinkley
    >>> bank = DetectorBank(PageHinkley(), n_streams=2)
    >>> found = bank.update_many([0, 1, 0, 1], [0.0, 0.0, 0.0, 0.0])
    >>> found.drift.tolist()
    []
    """

    def __init__(self, prototype: ChangeDetector, n_streams: int = 0) -> None:
        if n_streams < 0:
            raise ValueError("n_streams must be >= 0")
        self.prototype = prototype.clone()
        row = self.prototype._initial_state()
        self._states = np.ascontiguousarray(np.tile(row, (n_streams, 1)))

    @property
    def n_streams(self) -> int:
        return self._states.shape[0]

    def ensure_streams(self, n_streams: int) -> None:
        """Grow to at least ``n_streams`` rows; new rows start fresh."""
        missing = n_streams - self.n_streams
        if missing > 0:
            fresh = np.tile(self.prototype._initial_state(), (missing, 1))
            self._states = np.ascontiguousarray(np.vstack([self._states, fresh]))

    def update_many(self, stream_ids: Any, xs: Any) -> BankDetections:
        """Feed ``xs[i]`` to stream ``stream_ids[i]``, in order, in one kernel call; return
        where streams signalled and, per drift, the two sides of the change."""
        values = as_values(xs)
        ids = np.ascontiguousarray(stream_ids, dtype=np.int64)
        if ids.shape != values.shape:
            raise ValueError(f"{ids.shape[0]} stream ids for {values.shape[0]} values")
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_streams):
            raise ValueError(
                f"stream ids must be in [0, {self.n_streams}); call ensure_streams() first"
            )
        flags = np.zeros(values.shape[0], dtype=np.int8)
        cuts = new_cuts(values.shape[0])
        if values.shape[0]:
            self.prototype._run_bank(self._states, ids, values, flags, cuts)
        drift = np.flatnonzero(flags == DRIFT)
        warning = np.flatnonzero(flags == WARNING)
        return BankDetections(drift, ids[drift], warning, ids[warning], *cuts[:, drift])

    def detector(self, stream_id: int) -> ChangeDetector:
        """A standalone detector holding a copy of one stream's state."""
        detector = self.prototype.clone()
        detector._state = self._states[stream_id].copy()
        return detector

    def to_state(self) -> bytes:
        header = json.dumps(
            {"prototype": self.prototype.to_state().hex(), "shape": list(self._states.shape)}
        ).encode()
        return _MAGIC + struct.pack("<I", len(header)) + header + self._states.tobytes()

    @classmethod
    def from_state(cls, data: bytes) -> DetectorBank:
        if data[:4] != _MAGIC:
            raise ValueError("not a driftline detector bank state (bad magic bytes)")
        (size,) = struct.unpack("<I", data[4:8])
        header = json.loads(data[8 : 8 + size])
        prototype = detector_from_state(bytes.fromhex(header["prototype"]))
        bank = cls(prototype, 0)
        bank._states = (
            np.frombuffer(data[8 + size :], dtype=np.float64).reshape(header["shape"]).copy()
        )
        return bank
