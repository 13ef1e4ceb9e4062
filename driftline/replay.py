"""Replay a file of past predictions (and their outcomes) into driftline's topics.

Useful to backfill history, to try driftline on an existing model's logs, and in demos. Each
row of a CSV or Parquet file becomes one prediction and, where the label column has a value,
one outcome joined to it; they travel in columns (PredictionBatch/OutcomeBatch records, the
producer's bulk path). Every column that is not named as the prediction, score, label, id,
time or a segment is a feature (number columns numeric, string/bool columns categorical,
empty cells missing). The prediction and label columns are labels if they hold strings or
bools, values if numbers.

Without ``id_col``, event ids are derived from the model, the file name and the row number, so
replaying the same file twice produces duplicates that driftline drops instead of double
counting.

From the command line (once wired into ``driftline``)::

    driftline replay scored.parquet --model-id churn --prediction-col pred \\
        --label-col churned --time-col ts --segment-col region --rate 500
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import pandas as pd

    from driftline.client import DriftlineProducer
    from driftline.settings import Settings

__all__ = ["ReplayStats", "add_replay_command", "handler", "replay_file"]

CHUNK_ROWS = 10_000
MAX_KEPT_ERRORS = 20
_PARQUET = {".parquet", ".pq"}
_CSV = {".csv", ".tsv", ".txt"}
TASKS = ("classification", "regression")
# Whole numbers with at most this many distinct values are class labels (see infer_task).
MAX_INFERRED_CLASSES = 20


@dataclass
class ReplayStats:
    rows: int = 0
    predictions: int = 0
    outcomes: int = 0
    skipped: int = 0  # rows refused by validation (see errors)
    errors: list[str] = field(default_factory=list)  # the first few, "row N: reason"
    delivered: int = 0  # acknowledged by the broker during this replay
    failed: int = 0
    last_error: str | None = None
    seconds: float = 0.0
    task: str | None = None  # "classification" or "regression", as given or inferred
    dry_run: bool = False  # validated only, nothing published

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.skipped == 0


def _missing(value: Any) -> bool:
    import pandas as pd

    if value is None or value is pd.NaT:
        return True
    try:
        return isinstance(value, float) and math.isnan(value)
    except TypeError:
        return False


def _id_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # an int id column read as float because of empty cells
    return str(value)


def _csv_rows(path: Path) -> int:
    with open(path, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return max(lines - 1, 0)  # minus the header; quoted newlines make this an estimate


def _read(path: Path, chunk_rows: int) -> tuple[int | None, Iterator[pd.DataFrame]]:
    import pandas as pd

    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _PARQUET:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        batches = parquet.iter_batches(batch_size=chunk_rows)
        return parquet.metadata.num_rows, (batch.to_pandas() for batch in batches)
    plain = (
        suffixes[:-1] if suffixes and suffixes[-1] in {".gz", ".bz2", ".zst", ".xz"} else suffixes
    )
    if plain and plain[-1] in _CSV:
        sep = "\t" if plain[-1] == ".tsv" else ","
        total = _csv_rows(path) if plain == suffixes else None
        return total, iter(pd.read_csv(path, sep=sep, chunksize=chunk_rows))
    raise ValueError(f"{path}: expected a .csv, .tsv or .parquet file (optionally .csv.gz)")


def _millis(column: pd.Series) -> list[int | None]:
    """Epoch millis per cell: numbers are taken as epoch millis, anything else is parsed."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return [None if _missing(v) else int(v) for v in column.tolist()]
    parsed = pd.to_datetime(column, utc=True, errors="coerce")
    millis = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")
    return [None if _missing(v) else int(v) for v in millis.tolist()]


class _Progress:
    """A one-line progress bar on stderr, redrawn at most a few times per second."""

    def __init__(self, total: int | None, enabled: bool, stream: TextIO | None = None) -> None:
        self.total = total
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()
        self.last_draw = 0.0

    def draw(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self.last_draw < 0.25:
            return
        self.last_draw = now
        rate = done / max(now - self.start, 1e-9)
        if self.total:
            frac = min(done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            line = f"\r[{bar:<30}] {frac:4.0%} {done}/{self.total} rows {rate:,.0f}/s"
        else:
            line = f"\r{done} rows {rate:,.0f}/s"
        self.stream.write(line + ("\n" if final else ""))
        self.stream.flush()


def _is_label_column(column: pd.Series) -> bool:
    """Strings and bools are labels, numbers values (per column: a file has one dtype)."""
    import pandas as pd

    return not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def infer_task(prediction: pd.Series, truth: pd.Series | None = None) -> tuple[str, str]:
    """``(task, why)``: "classification" or "regression" for a file's first chunk.

    Strings or bools are class labels. Numbers are class labels too when every value is a
    whole number and there are at most ``MAX_INFERRED_CLASSES`` of them (0/1 churn flags,
    star ratings); otherwise they are values of a regression model. ``why`` says which
    column decided and how to override it.
    """
    columns = [prediction] + ([truth] if truth is not None else [])
    for column in columns:
        if _is_label_column(column) and not column.isna().all():
            return "classification", f"column {column.name!r} holds strings or bools"
    seen: set[float] = set()
    for column in columns:
        values = column.dropna().to_numpy(dtype=float)
        if len(values) and not (values == values.round()).all():
            return "regression", f"column {column.name!r} holds fractional numbers"
        seen.update(values.tolist())
    if len(seen) <= MAX_INFERRED_CLASSES:
        shown = ", ".join(_class_text(v) for v in sorted(seen)[:5])
        shown += ", ..." if len(seen) > 5 else ""
        return "classification", f"whole numbers with {len(seen)} distinct values ({shown})"
    return "regression", f"whole numbers with more than {MAX_INFERRED_CLASSES} distinct values"


def _class_text(value: Any) -> str:
    """A number used as a class label, as text: 1.0 (an int column with empty cells) is "1"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _as_task(column: pd.Series, task: str) -> tuple[Any, Any]:
    """``(labels, values)`` for the SDK's columns: one of them is the column, the other None."""
    if task == "regression":
        import pandas as pd

        if pd.api.types.is_bool_dtype(column):
            raise ValueError(f"--task regression: column {column.name!r} holds bools")
        if not pd.api.types.is_numeric_dtype(column):
            numbers = pd.to_numeric(column, errors="coerce")
            bad = numbers.isna() & ~column.isna()
            if bad.any():
                raise ValueError(
                    f"--task regression: column {column.name!r} holds text "
                    f"({column[bad].iloc[0]!r}); values must be numbers"
                )
            column = numbers
        return None, column
    if _is_label_column(column):
        return column, None
    return column.map(lambda v: None if _missing(v) else _class_text(v)), None


def replay_file(
    path: str | Path,
    producer: DriftlineProducer | None,
    model_id: str,
    *,
    prediction_col: str,
    label_col: str | None = None,
    id_col: str | None = None,
    time_col: str | None = None,
    outcome_time_col: str | None = None,
    segment_cols: Sequence[str] = (),
    score_col: str | None = None,
    model_version: str = "1",
    task: str | None = None,
    rate: float | None = None,
    progress: bool = True,
    flush_timeout: float = 60.0,
    chunk_rows: int = CHUNK_ROWS,
    notify: Callable[[str], None] | None = None,
) -> ReplayStats:
    """Publish every row of ``path`` as a prediction (and an outcome where labelled).

    Rows go out in columns (the producer's bulk path), a chunk of the file at a time.
    ``rate`` caps rows per second (None: as fast as the producer takes them); without
    ``time_col`` events are stamped with the time they are sent, and outcomes carry
    ``outcome_time_col`` (when the truth became known) or else their prediction's time.
    ``task`` ("classification" or "regression"; None infers it from the first chunk, see
    :func:`infer_task`, and tells ``notify`` what it decided). Rows that fail validation are
    skipped and counted, the replay goes on. ``producer=None`` is a dry run: every row is
    read and validated, nothing is published. Flushes the producer before returning.
    """
    import numpy as np

    path = Path(path)
    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 rows per second")
    if task not in (None, *TASKS):
        raise ValueError(f"task must be one of {TASKS}, not {task!r}")
    if outcome_time_col is not None and label_col is None:
        raise ValueError("an outcome time column needs a label column")
    reserved = {
        prediction_col, label_col, id_col, time_col, outcome_time_col, score_col, *segment_cols
    } - {None}  # fmt: skip
    total, chunks = _read(path, chunk_rows)
    stats = ReplayStats(dry_run=producer is None)
    before = producer.stats if producer is not None else None
    bar = _Progress(total, progress)
    started = time.monotonic()
    # With a rate, send slices of ~50 ms worth of rows, each when its first row is due.
    step = max(1, int(rate * 0.05)) if rate is not None else None
    for chunk in chunks:
        missing = sorted(c for c in reserved if c not in chunk.columns)
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; columns are {list(chunk.columns)}")
        if stats.task is None:
            if task is None:
                truth = chunk[label_col] if label_col else None
                stats.task, why = infer_task(chunk[prediction_col], truth)
                other = "regression" if stats.task == "classification" else "classification"
                if notify is not None:
                    notify(f"treating {model_id} as a {stats.task} model: {why} "
                           f"(--task {other} overrides)")  # fmt: skip
            else:
                stats.task = task
            # Columns that cannot be read as the task refuse the file before anything is sent.
            for column in (prediction_col, label_col):
                if column is not None:
                    _as_task(chunk[column], stats.task)
        chunk = chunk.reset_index(drop=True)
        for start in range(0, len(chunk), step or max(len(chunk), 1)):
            part = chunk.iloc[start : start + step] if step else chunk
            first = stats.rows
            if rate is not None:
                ahead = started + first / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            _replay_part(
                part.reset_index(drop=True), np.arange(first, first + len(part)), producer,
                model_id, path.name, stats,
                prediction_col=prediction_col, label_col=label_col, id_col=id_col,
                time_col=time_col, outcome_time_col=outcome_time_col, score_col=score_col,
                segment_cols=segment_cols, model_version=model_version, reserved=reserved,
            )  # fmt: skip
            stats.rows += len(part)
            bar.draw(stats.rows)
    bar.draw(stats.rows, final=True)
    if producer is not None and before is not None:
        producer.flush(flush_timeout)
        after = producer.stats
        stats.delivered = after.delivered - before.delivered
        stats.failed = after.failed - before.failed
        stats.last_error = after.last_error if stats.failed else None
    stats.seconds = time.monotonic() - started
    return stats


def _skip(stats: ReplayStats, number: int, message: str) -> None:
    stats.skipped += 1
    if len(stats.errors) < MAX_KEPT_ERRORS:
        stats.errors.append(f"row {number}: {message}")


def _times(
    part: pd.DataFrame, column: str, keep: Any, numbers: Any, stats: ReplayStats, what: str
) -> Any:
    """Epoch millis of ``column``; rows without a usable one are marked in ``keep`` and
    reported."""
    import numpy as np

    millis = _millis(part[column])
    for i, value in enumerate(millis):
        if value is None and keep[i]:
            keep[i] = False
            _skip(stats, int(numbers[i]), f"empty or unparseable {what}")
    return np.array([0 if v is None else v for v in millis], dtype=np.int64)


def _replay_part(
    part: pd.DataFrame,
    numbers: Any,
    producer: DriftlineProducer | None,
    model_id: str,
    source: str,
    stats: ReplayStats,
    *,
    prediction_col: str,
    label_col: str | None,
    id_col: str | None,
    time_col: str | None,
    outcome_time_col: str | None,
    score_col: str | None,
    segment_cols: Sequence[str],
    model_version: str,
    reserved: set[str],
) -> None:
    import numpy as np
    import pyarrow as pa

    from driftline.client import outcome_columns, prediction_columns
    from driftline.schemas import event_id as derive_id
    from driftline.schemas.validation import (
        DEFAULT_MAX_FEATURES,
        validate_outcome_columns,
        validate_prediction_columns,
    )

    task = stats.task or "regression"
    keep = np.ones(len(part), dtype=bool)
    times = None
    if time_col is not None:
        times = _times(part, time_col, keep, numbers, stats, "time")[keep]
    part, numbers = part[keep].reset_index(drop=True), numbers[keep]
    if not len(part):
        return
    # Ids stay deterministic: the file's id column, else derived from model, file and row.
    raw_ids = part[id_col].tolist() if id_col else [None] * len(part)
    ids = [
        _id_text(value) if not _missing(value) else derive_id("replay", model_id, source, str(n))
        for value, n in zip(raw_ids, numbers.tolist(), strict=True)
    ]
    labels, values = _as_task(part[prediction_col], task)
    cols = prediction_columns(
        model_id,
        part[[c for c in part.columns if c not in reserved]],
        model_version=model_version,
        event_time=times,
        event_ids=ids,
        labels=labels,
        values=values,
        scores=part[score_col] if score_col else None,
        segments={c: part[c] for c in segment_cols},
    )
    max_features = producer.max_features if producer is not None else DEFAULT_MAX_FEATURES
    errors = validate_prediction_columns(cols, max_features=max_features)
    if errors:
        for error in errors:
            _skip(stats, int(numbers[error.row]), f"{error.reason}: {error.detail}")
        good = np.setdiff1d(np.arange(len(cols)), [e.row for e in errors])
        cols, part, numbers = cols.take(good), part.iloc[good].reset_index(drop=True), numbers[good]
        times = times[good] if times is not None else None
    if producer is not None:
        producer.log_prediction_columns(cols)
    stats.predictions += len(cols)
    if label_col is None:
        return
    labelled = ~part[label_col].isna().to_numpy()
    outcome_times = times
    if outcome_time_col is not None:
        # A label without a usable time loses its outcome (reported), not its prediction.
        outcome_times = _times(part, outcome_time_col, labelled, numbers, stats, "outcome time")
    if not labelled.any():
        return
    truth = part[label_col][labelled]
    pids = cols.event_id.filter(pa.array(labelled))
    labels, values = _as_task(truth, task)
    outcomes = outcome_columns(
        model_id,
        pids,
        labels=labels,
        values=values,
        event_time=outcome_times[labelled] if outcome_times is not None else None,
        event_ids=[derive_id("replay-outcome", pid) for pid in pids.to_pylist()],
    )
    errors = validate_outcome_columns(outcomes)
    if errors:
        rows = numbers[labelled]
        for error in errors:
            _skip(stats, int(rows[error.row]), f"{error.reason}: {error.detail}")
        outcomes = outcomes.take(np.setdiff1d(np.arange(len(outcomes)), [e.row for e in errors]))
    if producer is not None:
        producer.log_outcome_columns(outcomes)
    stats.outcomes += len(outcomes)


def add_replay_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``driftline replay FILE ...`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "replay",
        help="publish a CSV/Parquet file of past predictions (and outcomes) to Kafka",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("file", type=Path, help=".csv, .tsv, .csv.gz or .parquet")
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--prediction-col", required=True, help="predicted label or value")
    parser.add_argument("--label-col", help="ground truth; rows with a value also get an outcome")
    parser.add_argument("--id-col", help="prediction ids (default: derived from file and row)")
    parser.add_argument("--time-col", help="event time: epoch millis or parseable datetimes")
    parser.add_argument(
        "--outcome-time-col",
        "--outcome-time-column",
        help="when each outcome became known (default: its prediction's time)",
    )
    parser.add_argument("--segment-col", action="append", default=[], help="repeatable")
    parser.add_argument("--score-col", help="positive-class score or confidence")
    parser.add_argument("--model-version", default="1")
    parser.add_argument(
        "--task",
        choices=TASKS,
        help="how to read the prediction and label columns (default: inferred and printed; "
        f"whole numbers with at most {MAX_INFERRED_CLASSES} distinct values are classes)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="read and validate the file; publish nothing"
    )
    parser.add_argument("--rate", type=float, help="max rows per second")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(handler=handler)
    return parser


def handler(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``driftline replay``; exit status 1 if any row was skipped or not delivered."""
    options = dict(
        prediction_col=args.prediction_col,
        label_col=args.label_col,
        id_col=args.id_col,
        time_col=args.time_col,
        outcome_time_col=args.outcome_time_col,
        segment_cols=args.segment_col,
        score_col=args.score_col,
        model_version=args.model_version,
        task=args.task,
        rate=None if args.dry_run else args.rate,
        progress=not args.no_progress,
        notify=lambda message: print(message, file=sys.stderr),
    )
    try:
        if args.dry_run:
            stats = replay_file(args.file, None, args.model_id, **options)
        else:
            from driftline.client import DriftlineProducer

            with DriftlineProducer.from_settings(settings) as producer:
                stats = replay_file(args.file, producer, args.model_id, **options)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if stats.dry_run:
        print(
            f"dry run of {args.file} ({stats.task}): {stats.rows} rows, {stats.predictions} "
            f"predictions and {stats.outcomes} outcomes would be published, "
            f"{stats.skipped} rows refused; nothing was published"
        )
    else:
        print(
            f"replayed {stats.rows} rows from {args.file} in {stats.seconds:.1f}s "
            f"({stats.task}): {stats.predictions} predictions, {stats.outcomes} outcomes, "
            f"{stats.delivered} delivered, {stats.failed} failed, {stats.skipped} skipped"
        )
    for error in stats.errors:
        print(f"  {error}", file=sys.stderr)
    if stats.skipped > len(stats.errors):
        print(f"  ... and {stats.skipped - len(stats.errors)} more", file=sys.stderr)
    if stats.last_error:
        print(f"  last delivery error: {stats.last_error}", file=sys.stderr)
    return 0 if stats.ok else 1
