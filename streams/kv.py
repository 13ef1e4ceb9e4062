"""Key/value views of per-model state for the alert evaluator.

The evaluator reads and writes one ``AlertState`` per model (key = model_id) and says which
source partition it belongs to; :class:`PartitionAlerts` keeps it inside that partition's
:class:`~driftline.streams.state.PartitionState`, so it is checkpointed and moves with the
partition. :class:`MemoryKV` is a plain dict for tests and tools.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from driftline.streams.state import PartitionState


class PartitionedKV(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def put(self, partition: int, key: bytes, value: bytes) -> None: ...


class MemoryKV:
    """A plain dict, remembering which partition each key was last written for (tests)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.partition_of: dict[bytes, int] = {}
        self.writes = 0

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, partition: int, key: bytes, value: bytes) -> None:
        self.data[key] = value
        self.partition_of[key] = partition
        self.writes += 1

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self.data.items()))


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
