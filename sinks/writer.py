"""Bounded batch writers: buffer rows per table, flush by size or age.

ClickHouse wants few, large inserts (every insert makes a part), the worker produces many small
batches; a ``BatchWriter`` bridges the two without unbounded memory: it never holds more than
``max_rows`` rows, flushing as soon as the bound is reached.

>>> import tempfile, pathlib, time
>>> from driftline.sinks import EmbeddedStore
>>> store = EmbeddedStore(pathlib.Path(tempfile.mkdtemp()), "demo_writer")
>>> _ = store.migrate()
>>> sink = Sink(store, max_rows=1000, max_seconds=1.0)
>>> sink.add("outcomes", [{"event_id": "o1", "prediction_id": "p1", "model_id": "m",
...                        "event_time": int(time.time() * 1000), "label": "yes"}])
0
>>> sink.flush_all()
{'outcomes': 1}
>>> store.query("SELECT event_id, label FROM outcomes FINAL")
[('o1', 'yes')]
>>> store.close()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .base import Store
from .tables import TABLES, columns_for

__all__ = ["BatchWriter", "Sink", "concat_chunks"]

Columns = Mapping[str, Sequence[Any] | np.ndarray]
Batch = Columns | Sequence[Mapping[str, Any]]


def _length(columns: Columns) -> int:
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"ragged columns: { ({k: len(v) for k, v in columns.items()}) }")
    return lengths.pop() if lengths else 0


def concat_chunks(chunks: list[Any]) -> Any:
    """One column from chunks of lists, numpy arrays or Arrow arrays (one type preferred)."""
    if len(chunks) == 1:
        return chunks[0]
    if all(isinstance(c, np.ndarray) for c in chunks):
        return np.concatenate(chunks)
    if all(isinstance(c, pa.Array) for c in chunks):
        return pa.concat_arrays(chunks)
    out: list[Any] = []
    for c in chunks:
        if isinstance(c, np.ndarray):
            out.extend(c.tolist())
        elif isinstance(c, pa.Array | pa.ChunkedArray):
            values = c.to_pylist()
            if pa.types.is_map(c.type):  # back to dicts, as the other chunks hold
                values = [None if v is None else dict(v) for v in values]
            out.extend(values)
        else:
            out.extend(c)
    return out


class BatchWriter:
    """Buffers batches for one table and inserts them as one columnar insert.

    Parameters
    ----------
    store
        Where rows go.
    table
        Target table (unqualified: the store's database).
    max_rows
        Upper bound on buffered rows; reaching it flushes inside :meth:`add`.
    max_seconds
        Age of the oldest buffered row after which :meth:`due` turns true.
    clock
        Monotonic seconds; injectable for tests.

    A failed flush keeps the buffer and re-raises, so the caller can retry before it commits
    its Kafka offsets; rows are never dropped silently. If the flush that :meth:`add` makes on
    reaching ``max_rows`` fails, the rows of that batch not yet buffered are not taken: adding
    the whole batch again is safe, the duplicates collapse under ``FINAL`` like any replay.
    """

    def __init__(
        self,
        store: Store,
        table: str,
        *,
        max_rows: int = 50_000,
        max_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_rows <= 0:
            raise ValueError(f"max_rows must be positive, got {max_rows}")
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        self.store = store
        self.table = table
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self._clock = clock
        self._lock = threading.RLock()
        self._chunks: list[Columns] = []
        self._names: tuple[str, ...] | None = None
        self._pending = 0
        self._since: float | None = None
        self.rows_written = 0

    @property
    def pending(self) -> int:
        """Rows buffered and not yet inserted."""
        return self._pending

    def _as_columns(self, batch: Batch) -> Columns:
        if isinstance(batch, Mapping):
            return batch
        if self.table in TABLES:
            return columns_for(self.table, batch)
        names = list(batch[0]) if batch else []
        return {name: [row.get(name) for row in batch] for name in names}

    def add(self, batch: Batch) -> int:
        """Buffer columns (name -> list/array) or row dicts; returns rows flushed meanwhile."""
        columns = self._as_columns(batch)
        n = _length(columns)
        if n == 0:
            return 0
        with self._lock:
            names = tuple(columns)
            if self._names is not None and set(names) != set(self._names):
                raise ValueError(
                    f"{self.table}: batch columns {sorted(names)} differ from buffered "
                    f"{sorted(self._names)}; flush first"
                )
            written = 0
            start = 0
            while start < n:
                take = min(n - start, self.max_rows - self._pending)
                chunk = (
                    columns
                    if take == n
                    else {k: v[start : start + take] for k, v in columns.items()}
                )
                if self._since is None:
                    self._since = self._clock()
                self._chunks.append(chunk)
                self._names = names
                self._pending += take
                start += take
                if self._pending >= self.max_rows:
                    written += self.flush()
            return written

    def due(self) -> bool:
        """True when the buffer is full or its oldest row is ``max_seconds`` old."""
        with self._lock:
            if not self._pending:
                return False
            assert self._since is not None
            return self._pending >= self.max_rows or self._clock() - self._since >= self.max_seconds

    def flush(self, *, dedup_token: str | None = None) -> int:
        """Insert everything buffered as one batch; returns the rows inserted."""
        with self._lock:
            if not self._pending:
                return 0
            assert self._names is not None
            columns = {name: concat_chunks([c[name] for c in self._chunks]) for name in self._names}
            inserted = self.store.insert(self.table, columns, dedup_token=dedup_token)
            self._chunks, self._names, self._pending, self._since = [], None, 0, None
            self.rows_written += inserted
            return inserted


class Sink:
    """One :class:`BatchWriter` per table; the worker adds per event batch and flushes.

    ``flush_all`` writes tables in :data:`~driftline.sinks.tables.TABLES` order (raw events
    before the drift and retraining events derived from them), then any others.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_rows: int = 50_000,
        max_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self._clock = clock
        self.writers: dict[str, BatchWriter] = {}

    def writer(self, table: str) -> BatchWriter:
        if table not in self.writers:
            self.writers[table] = BatchWriter(
                self.store,
                table,
                max_rows=self.max_rows,
                max_seconds=self.max_seconds,
                clock=self._clock,
            )
        return self.writers[table]

    def add(self, table: str, batch: Batch) -> int:
        """Buffer rows (dicts) or columns for ``table``; returns rows flushed meanwhile."""
        return self.writer(table).add(batch)

    def due(self) -> bool:
        return any(w.due() for w in self.writers.values())

    def _ordered(self) -> list[BatchWriter]:
        order = {name: i for i, name in enumerate(TABLES)}
        return sorted(self.writers.values(), key=lambda w: order.get(w.table, len(order)))

    def flush_due(self) -> dict[str, int]:
        """Flush only the writers that are due."""
        return {w.table: w.flush() for w in self._ordered() if w.due()}

    def flush_all(self, *, dedup_token: str | None = None) -> dict[str, int]:
        """Flush every writer with pending rows; returns rows inserted per table.

        ``dedup_token`` (e.g. ``"<topic>:<partition>:<first>-<last offset>"``) is suffixed
        with the table name, so an exact replay of the same input batch is dropped per table.
        """
        return {
            w.table: w.flush(dedup_token=f"{dedup_token}:{w.table}" if dedup_token else None)
            for w in self._ordered()
            if w.pending
        }

    @property
    def pending(self) -> int:
        return sum(w.pending for w in self.writers.values())
