"""Joining outcomes to their predictions, a whole batch at a time, for one model on one partition.

Every prediction id the join knows is in one of three states:

- ``PENDING``: a prediction awaiting its outcome (given up ``join_ttl`` after its time),
- ``EARLY``: an outcome that arrived before its prediction (given up ``orphan_ttl`` after the
  outcome's time, then dead-lettered as an orphan),
- ``JOINED``: the prediction met its outcome; kept until the prediction would have expired,
  so a second outcome or a replayed prediction is recognised as a duplicate.

Expiry runs on event time, never the wall clock, so a replay expires exactly what the original
run expired, and on the clock of the *other* stream: a prediction is given up when the model's
outcomes have moved ``join_ttl`` past it, an early outcome when its predictions have moved
``orphan_ttl`` past it (a worker catching up a backlog may read one topic far ahead of the
other). The prediction clock still ends a prediction's wait at twice the TTL, for models whose
labels never come.

A batch is joined in one pass: predictions first (in topic order), then outcomes (in topic
order). Ids live in a ``dict`` (id -> slot; CPython's hash table, ~100 ns an entry measured,
far below the rest of the path); everything else is numpy columns indexed by slot, so a
batch's joined rows come out as columns and the whole state serialises as arrays.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pyarrow as pa

FREE, PENDING, EARLY, JOINED = 0, 1, 2, 3

# Per-slot columns: (name, dtype). Object columns hold str or None. Segments are columns too,
# one per segment name (``JoinState.segments``), added as names appear.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("tag", "i1"),
    ("expires_at", "i8"),
    ("id", "O"),  # prediction id
    ("p_time", "i8"),
    ("p_version", "O"),
    ("p_label", "O"),
    ("p_score", "f8"),
    ("p_value", "f8"),
    ("o_id", "O"),
    ("o_time", "i8"),
    ("o_label", "O"),
    ("o_value", "f8"),
    ("o_offset", "i8"),  # source offset of an early outcome (for its dead letter)
)
_FILL = {"i1": 0, "i8": 0, "f8": np.nan, "O": None}


@dataclass(frozen=True)
class PredictionPart:
    """What the join needs of a batch's predictions (columns of equal length)."""

    event_id: np.ndarray  # object (str)
    event_time: np.ndarray  # int64
    model_version: np.ndarray  # object (str)
    label: np.ndarray  # object (str | None)
    score: np.ndarray  # float64, NaN = null
    value: np.ndarray  # float64, NaN = null
    segments: dict[str, np.ndarray]  # segment name -> object (str | None) per prediction


@dataclass(frozen=True)
class OutcomePart:
    event_id: np.ndarray  # object (str)
    prediction_id: np.ndarray  # object (str)
    event_time: np.ndarray  # int64
    label: np.ndarray  # object (str | None)
    value: np.ndarray  # float64, NaN = null
    offset: np.ndarray  # int64 source offsets


@dataclass(frozen=True)
class Pairs:
    """Joined pairs, in the order they were made: prediction columns + outcome columns."""

    prediction_id: np.ndarray
    prediction_time: np.ndarray
    model_version: np.ndarray
    prediction_label: np.ndarray
    prediction_score: np.ndarray
    prediction_value: np.ndarray
    segments: dict[str, np.ndarray]  # segment name -> value per pair (None: absent)
    outcome_id: np.ndarray
    outcome_time: np.ndarray
    label: np.ndarray
    value: np.ndarray

    def __len__(self) -> int:
        return len(self.prediction_id)


@dataclass(frozen=True)
class JoinResult:
    pairs: Pairs
    duplicate_predictions: np.ndarray  # indices into the batch's predictions
    duplicate_outcomes: np.ndarray  # indices into the batch's outcomes
    waiting: int  # outcomes that now wait for their prediction


@dataclass(frozen=True)
class Orphans:
    """Early outcomes given up (for the DLQ) and how many predictions expired unlabelled."""

    outcome_id: np.ndarray
    prediction_id: np.ndarray
    outcome_time: np.ndarray
    label: np.ndarray
    value: np.ndarray
    offset: np.ndarray
    unlabelled: int


_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")


class JoinState:
    def __init__(self, join_ttl_ms: int, orphan_ttl_ms: int) -> None:
        self.join_ttl_ms = join_ttl_ms
        self.orphan_ttl_ms = orphan_ttl_ms
        self.slots: dict[str, int] = {}
        self.cols: dict[str, np.ndarray] = {n: np.empty(0, dtype=t) for n, t in _COLUMNS}
        self.segments: dict[str, np.ndarray] = {}  # segment name -> value per slot
        self._free = np.empty(0, dtype=np.int64)
        # what changed since the last checkpoint (see delta_bytes): slots written, ids dropped
        self._dirty = np.zeros(0, dtype=bool)
        self._dropped: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.slots)

    # -- slots -------------------------------------------------------------------------------
    def _allocate(self, n: int) -> np.ndarray:
        if len(self._free) < n:
            size = len(self.cols["tag"])
            grow = max(n - len(self._free), size, 1024)
            for name, dtype in _COLUMNS:
                extra = np.full(grow, _FILL[dtype], dtype=dtype)
                self.cols[name] = np.concatenate([self.cols[name], extra])
            for name, values in self.segments.items():
                self.segments[name] = np.concatenate([values, np.full(grow, None, object)])
            self._dirty = np.concatenate([self._dirty, np.zeros(grow, dtype=bool)])
            self._free = np.concatenate([self._free, np.arange(size, size + grow)])
        slots, self._free = self._free[:n], self._free[n:]
        return slots

    def _segment_column(self, name: str) -> np.ndarray:
        column = self.segments.get(name)
        if column is None:
            column = self.segments[name] = np.full(len(self.cols["tag"]), None, object)
        return column

    def _release(self, slots: np.ndarray) -> None:
        self._dropped.append(self.cols["id"][slots])  # (fancy indexing copies)
        self._dirty[slots] = False
        for name, dtype in _COLUMNS:
            self.cols[name][slots] = _FILL[dtype]
        for column in self.segments.values():
            column[slots] = None
        self._free = np.concatenate([self._free, slots])

    def _lookup(self, ids: np.ndarray) -> np.ndarray:
        # map() over the dict's own method keeps the loop in C (no Python frame per id)
        return np.fromiter(
            map(self.slots.get, ids, repeat(-1, len(ids))), dtype=np.int64, count=len(ids)
        )

    def _tags(self, slots: np.ndarray) -> np.ndarray:
        """Tag of each looked-up slot (FREE where the id is unknown)."""
        tags = np.full(len(slots), FREE, dtype=np.int8)
        known = slots >= 0
        tags[known] = self.cols["tag"][slots[known]]
        return tags

    # -- a batch -----------------------------------------------------------------------------
    def apply(self, predictions: PredictionPart, outcomes: OutcomePart) -> JoinResult:
        pairs: list[tuple[np.ndarray, np.ndarray, OutcomePart | None]] = []
        # predictions: new ones become PENDING; those an early outcome waits for join now
        first = _first_occurrences(predictions.event_id)
        found = self._lookup(predictions.event_id)
        known_tag = self._tags(found)
        duplicate_p = np.flatnonzero(~first | ((found >= 0) & (known_tag != EARLY)))
        fresh = np.flatnonzero(first & (found < 0))
        meets_early = np.flatnonzero(first & (known_tag == EARLY))
        if len(fresh):
            slots = self._allocate(len(fresh))
            self.slots.update(zip(predictions.event_id[fresh].tolist(), slots.tolist(), strict=True))
            self._store_prediction(slots, predictions, fresh, PENDING)
        if len(meets_early):
            slots = found[meets_early]
            self._store_prediction(slots, predictions, meets_early, JOINED)
            pairs.append((slots, meets_early, None))
        # outcomes: the first outcome of a PENDING prediction joins it; one of an unknown
        # prediction waits; anything else is a duplicate
        first_o = _first_occurrences(outcomes.prediction_id)
        found_o = self._lookup(outcomes.prediction_id)
        tag_o = self._tags(found_o)
        joins = np.flatnonzero(first_o & (tag_o == PENDING))
        waits = np.flatnonzero(first_o & (found_o < 0))
        duplicate_o = np.flatnonzero(~first_o | ((found_o >= 0) & (tag_o != PENDING)))
        if len(joins):
            slots = found_o[joins]
            self._mark_joined(slots)
            pairs.append((slots, joins, outcomes))
        if len(waits):
            slots = self._allocate(len(waits))
            self.slots.update(
                zip(outcomes.prediction_id[waits].tolist(), slots.tolist(), strict=True)
            )
            self._store_early(slots, outcomes, waits)
        return JoinResult(self._pairs(pairs), duplicate_p, duplicate_o, len(waits))

    def _store_prediction(
        self, slots: np.ndarray, p: PredictionPart, rows: np.ndarray, tag: int
    ) -> None:
        c = self.cols
        self._dirty[slots] = True
        c["tag"][slots] = tag
        c["id"][slots] = p.event_id[rows]
        c["p_time"][slots] = p.event_time[rows]
        c["expires_at"][slots] = p.event_time[rows] + self.join_ttl_ms
        c["p_version"][slots] = p.model_version[rows]
        c["p_label"][slots] = p.label[rows]
        c["p_score"][slots] = p.score[rows]
        c["p_value"][slots] = p.value[rows]
        for name in p.segments.keys() | self.segments.keys():
            values = p.segments.get(name)
            self._segment_column(name)[slots] = None if values is None else values[rows]

    def _mark_joined(self, slots: np.ndarray) -> None:
        self.cols["tag"][slots] = JOINED  # expires like the prediction would have
        self._dirty[slots] = True

    def _store_early(self, slots: np.ndarray, o: OutcomePart, rows: np.ndarray) -> None:
        c = self.cols
        self._dirty[slots] = True
        c["tag"][slots] = EARLY
        c["id"][slots] = o.prediction_id[rows]
        c["o_id"][slots] = o.event_id[rows]
        c["o_time"][slots] = o.event_time[rows]
        c["expires_at"][slots] = o.event_time[rows] + self.orphan_ttl_ms
        c["o_label"][slots] = o.label[rows]
        c["o_value"][slots] = o.value[rows]
        c["o_offset"][slots] = o.offset[rows]

    def _pairs(self, parts: list[tuple[np.ndarray, np.ndarray, OutcomePart | None]]) -> Pairs:
        """Joined pairs from (state slots, batch rows, the batch's outcomes or None when the
        outcome waited in the state)."""
        c = self.cols
        columns: dict[str, list[np.ndarray]] = {
            f: [] for f in Pairs.__dataclass_fields__ if f != "segments"
        }
        segments: dict[str, list[np.ndarray]] = {name: [] for name in self.segments}
        for slots, rows, outcomes in parts:
            columns["prediction_id"].append(c["id"][slots])
            columns["prediction_time"].append(c["p_time"][slots])
            columns["model_version"].append(c["p_version"][slots])
            columns["prediction_label"].append(c["p_label"][slots])
            columns["prediction_score"].append(c["p_score"][slots])
            columns["prediction_value"].append(c["p_value"][slots])
            for name, chunks in segments.items():
                chunks.append(self.segments[name][slots])
            if outcomes is None:
                columns["outcome_id"].append(c["o_id"][slots])
                columns["outcome_time"].append(c["o_time"][slots])
                columns["label"].append(c["o_label"][slots])
                columns["value"].append(c["o_value"][slots])
                for name in ("o_id", "o_label"):
                    c[name][slots] = None
            else:
                columns["outcome_id"].append(outcomes.event_id[rows])
                columns["outcome_time"].append(outcomes.event_time[rows])
                columns["label"].append(outcomes.label[rows])
                columns["value"].append(outcomes.value[rows])
        # JOINED slots keep only what duplicate detection and expiry need
        # (these slots are already marked dirty: by _mark_joined or _store_prediction)
        for slots, _, _ in parts:
            for name in ("p_version", "p_label"):
                c[name][slots] = None
            for column in self.segments.values():
                column[slots] = None
        empty = {"i8": np.empty(0, np.int64), "f8": np.empty(0), "O": np.empty(0, object)}
        kinds = {
            "prediction_time": "i8",
            "outcome_time": "i8",
            "prediction_score": "f8",
            "prediction_value": "f8",
            "value": "f8",
        }
        return Pairs(
            **{
                name: np.concatenate(chunks) if chunks else empty[kinds.get(name, "O")]
                for name, chunks in columns.items()
            },
            segments={
                name: np.concatenate(chunks)
                for name, chunks in segments.items()
                if chunks
            },
        )

    # -- expiry ------------------------------------------------------------------------------
    def expire(self, prediction_clock_ms: int, outcome_clock_ms: int) -> Orphans:
        """Drop what has waited too long on the other stream's clock."""
        c = self.cols
        tag, expires = c["tag"], c["expires_at"]
        waiting_clock = max(outcome_clock_ms, prediction_clock_ms - self.join_ttl_ms)
        early = (tag == EARLY) & (expires <= prediction_clock_ms)
        done = ((tag == PENDING) | (tag == JOINED)) & (expires <= waiting_clock)
        orphan_slots = np.flatnonzero(early)
        orphans = Orphans(
            c["o_id"][orphan_slots],
            c["id"][orphan_slots],
            c["o_time"][orphan_slots],
            c["o_label"][orphan_slots],
            c["o_value"][orphan_slots],
            c["o_offset"][orphan_slots],
            int(np.count_nonzero(done & (tag == PENDING))),
        )
        gone = np.flatnonzero(early | done)
        if len(gone):
            pop = self.slots.pop
            for key in c["id"][gone].tolist():
                pop(key, None)
            self._release(gone)
        return orphans

    # -- serialisation -----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The live slots as an Arrow IPC stream (no pickles: a changelog record outlives a
        code version), its buffers LZ4-compressed: the state is written at every commit
        interval and is mostly ids and constant columns of joined slots, 14.6 MB -> 3.8 MB for
        150,000 slots, written faster than uncompressed (less to copy). Readers decompress
        transparently, so uncompressed checkpoints of earlier versions still restore."""
        return _ipc(self._table(np.flatnonzero(self.cols["tag"] != FREE)))

    def delta_bytes(self) -> bytes:
        """What changed since the last :meth:`mark_clean`: the slots written since (whole rows)
        and the ids dropped since. Applied in order to the state of that moment
        (:meth:`apply_delta`) it gives this state: the worker checkpoints a big join state
        once and then only each epoch's changes (streams/checkpoint.py)."""
        changed = np.flatnonzero(self._dirty & (self.cols["tag"] != FREE))
        dropped = np.concatenate(self._dropped) if self._dropped else np.empty(0, object)
        gone = pa.table({"id": pa.array(dropped, type=pa.string())})
        return _frame_tables([self._table(changed), gone])

    def mark_clean(self) -> None:
        """A checkpoint of this state was taken: changes are counted from here."""
        self._dirty[:] = False
        self._dropped = []

    def _table(self, slots: np.ndarray) -> pa.Table:
        arrays = {}
        for name, dtype in _COLUMNS:
            values = self.cols[name][slots]
            arrays[name] = pa.array(values, type=pa.string() if dtype == "O" else None)
        for name, column in self.segments.items():
            arrays[f"segment:{name}"] = pa.array(column[slots], type=pa.string())
        return pa.table(arrays)

    @classmethod
    def from_bytes(cls, data: bytes, join_ttl_ms: int, orphan_ttl_ms: int) -> JoinState:
        state = cls(join_ttl_ms, orphan_ttl_ms)
        state._upsert(pa.ipc.open_stream(data).read_all())
        state.mark_clean()
        return state

    def apply_delta(self, data: bytes) -> None:
        """Replay a :meth:`delta_bytes` record onto the state it was taken against: drop the
        dropped ids, then write the changed rows (an id dropped and seen again within one
        epoch is in both, and ends up present)."""
        rows, gone = _unframe_tables(data)
        ids = np.array(gone.column("id").to_pylist(), dtype=object)
        if len(ids):
            slots = self._lookup(ids)
            slots = np.unique(slots[slots >= 0])
            if len(slots):
                pop = self.slots.pop
                for key in self.cols["id"][slots].tolist():
                    pop(key, None)
                self._release(slots)
        self._upsert(rows)
        self.mark_clean()

    def _upsert(self, table: pa.Table) -> None:
        n = table.num_rows
        if not n:
            return
        ids = np.array(table.column("id").to_pylist(), dtype=object)
        slots = self._lookup(ids)
        new = np.flatnonzero(slots < 0)
        if len(new):
            slots[new] = self._allocate(len(new))
            self.slots.update(zip(ids[new].tolist(), slots[new].tolist(), strict=True))
        for name, dtype in _COLUMNS:
            column = table.column(name)
            if dtype == "O":
                values = np.array(column.to_pylist(), dtype=object)
            else:
                values = column.to_numpy()
            self.cols[name][slots] = values
        for name in table.column_names:
            if name.startswith("segment:"):
                values = np.array(table.column(name).to_pylist(), dtype=object)
                self._segment_column(name.removeprefix("segment:"))[slots] = values


def _ipc(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema, options=_IPC_OPTIONS) as writer:
        writer.write_table(table)
    return sink.getvalue()


_DELTA_MAGIC = b"DLJ1"


def _frame_tables(tables: list[pa.Table]) -> bytes:
    out = [_DELTA_MAGIC]
    for table in tables:
        blob = _ipc(table)
        out += [len(blob).to_bytes(8, "little"), blob]
    return b"".join(out)


def _unframe_tables(data: bytes) -> list[pa.Table]:
    if data[:4] != _DELTA_MAGIC:
        raise ValueError("not a join-state delta record")
    pos, tables = 4, []
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 8], "little")
        tables.append(pa.ipc.open_stream(data[pos + 8 : pos + 8 + size]).read_all())
        pos += 8 + size
    return tables


def _first_occurrences(ids: np.ndarray) -> np.ndarray:
    """True where an id occurs for the first time in ``ids``."""
    first = np.zeros(len(ids), dtype=bool)
    if len(ids):
        seen: dict[str, int] = {}
        index = np.fromiter(
            map(seen.setdefault, ids, range(len(ids))), dtype=np.int64, count=len(ids)
        )
        first[index] = True
    return first
