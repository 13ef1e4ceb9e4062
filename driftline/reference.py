"""``driftline reference upload FILE --model M [--version V]``: a model's training data as its
reference profile.

FILE is a CSV or Parquet file (``.csv``, ``.parquet`` / ``.pq``), one row per event, one column
per feature; ``--score`` / ``--value`` / ``--label`` name the columns holding the model's
outputs on that data, ``--categorical`` forces columns to be labels (zip codes). The profile is
built here (nothing but the profile leaves the machine) and published to
``driftline.references.v1`` (key = model), where running workers pick it up from the model's
next window on.

Exit codes: 0 published; 2 bad input (unreadable file, unknown format, bad data: the message
names the column, a model outside ``DRIFTLINE_KNOWN_MODELS`` when that list is set), nothing
published; 1 the broker did not take it.
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
    """A pyarrow Table from a CSV or Parquet file; ``ValueError`` with the reason otherwise
    (the reader the API's uploads use too; imported here on call, so the CLI starts fast)."""
    from driftline.detectors.reference import read_table as read

    return read(path)


def handler(args: argparse.Namespace, settings: Any) -> int:
    from driftline.client import DriftlineProducer

    try:
        table = read_table(args.file)
        from driftline.detectors.reference import prepare_reference

        # Profile before connecting: bad data is refused without touching the broker.
        prepare_reference(
            table,
            model_id=args.model,
            known_models=settings.known_models,
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
