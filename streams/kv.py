"""Key/value views of per-model state for the alert evaluator.

The evaluator reads and writes one ``AlertState`` per model (key = model_id) and says which
source partition it belongs to; :class:`PartitionAlerts` keeps it inside that partition's
:class:`~driftline.streams.state.PartitionState`, so it is checkpointed and moves with the
partition. :class:`MemoryKV` (a plain dict for tests and tools) lives with the lifecycle in
:mod:`driftline.schemas.alert_lifecycle`.
"""

from __future__ import annotations

from typing import Protocol

from driftline.schemas.alert_lifecycle import MemoryKV
from driftline.streams.state import PartitionState

__all__ = ["MemoryKV", "PartitionAlerts", "PartitionedKV"]


class PartitionedKV(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def put(self, partition: int, key: bytes, value: bytes) -> None: ...


class PartitionAlerts:
    """Alert states stored in the partition states (partition -> PartitionState)."""

    def __init__(self, states: dict[int, PartitionState]) -> None:
        self.states = states

    def get(self, key: bytes) -> bytes | None:
        model = key.decode()
        for state in self.states.values():
            value = state.alerts.get(model)
            if value is not None:
                return value
        return None

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        state = self.states.get(partition)
        if state is None:
            state = self.states[partition] = PartitionState(partition)
        state.alerts[key.decode()] = value
