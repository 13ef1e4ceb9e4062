"""``driftline reference upload FILE --model M [--version V]``: a model's training data as its
reference profile.

FILE is a CSV or Parquet file (``.csv``, ``.parquet`` / ``.pq``), one row per event, one column
per feature; ``--score`` / ``--value`` / ``--label`` name the columns holding the model's
outputs on that data, ``--categorical`` forces columns to be labels (zip codes). The profile is
built here (nothing but the profile leaves the machine) and published to
``driftline.references.v1`` (key = model), where running workers pick it up from the model's
next window on.

Exit codes: 0 published; 2 bad input (unreadable file, unknown format, bad data: the message
names the column), nothing published; 1 the broker did not take it.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_reference_command", "read_table"]


def add_reference_command(subparsers: Any) -> None:
    """Register ``driftline reference upload``."""
    parser = subparsers.add_parser(
        "reference", help="reference profiles: what a model's training data looked like"
    )
    actions = parser.add_subparsers(dest="reference_action", required=True)
    upload = actions.add_parser(
        "upload", help="profile a CSV/Parquet file and publish it as the model's reference"
    )
    upload.add_argument("file", type=Path, help="reference data: .csv, .parquet or .pq")
    upload.add_argument("--model", required=True, help="model_id the reference belongs to")
    upload.add_argument("--version", default="", help="model version it was built for")
    upload.add_argument("--score", help="column holding the model's score on that data")
    upload.add_argument("--value", help="column holding the model's numeric prediction")
    upload.add_argument("--label", help="column holding the model's predicted label")
    upload.add_argument(
        "--categorical", action="append", default=[], metavar="COLUMN",
        help="treat COLUMN as labels even if it holds numbers (repeatable)",
    )  # fmt: skip
    upload.set_defaults(handler=handler)


def read_table(path: Path) -> Any:
    """A pyarrow Table from a CSV or Parquet file; ``ValueError`` with the reason otherwise."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        if suffix == ".csv":
            from pyarrow import csv

            return csv.read_csv(path)
        if suffix in (".parquet", ".pq"):
            from pyarrow import parquet

            return parquet.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors vary; the reason is in the text
        raise ValueError(f"{path}: cannot read it: {exc}") from exc
    raise ValueError(f"{path}: unknown format {suffix!r}; give a .csv or .parquet file")


def handler(args: argparse.Namespace, settings: Any) -> int:
    from driftline.client import DriftlineProducer

    try:
        table = read_table(args.file)
        from driftline.detectors.reference import build_profile_within

        # Profile before connecting: bad data is refused without touching the broker.
        build_profile_within(
            table,
            model_id=args.model,
            version=args.version,
            categorical=args.categorical,
            prediction_score=args.score,
            prediction_value=args.value,
            prediction_label=args.label,
        )
    except ValueError as exc:
        print(f"driftline reference upload: {exc}", file=sys.stderr)
        return 2
    producer = DriftlineProducer.from_settings(settings, batch_records=False)
    try:
        reference_id = producer.set_reference(
            args.model,
            table,
            version=args.version,
            categorical=args.categorical,
            prediction_score=args.score,
            prediction_value=args.value,
            prediction_label=args.label,
            uploaded_by=f"cli:{getpass.getuser()}",
        )
    except (TimeoutError, RuntimeError) as exc:
        print(f"driftline reference upload: {exc}", file=sys.stderr)
        return 1
    finally:
        producer.close(5.0)
    print(f"reference {reference_id} for model {args.model!r} published ({table.num_rows} rows)")
    return 0
