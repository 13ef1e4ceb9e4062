"""``driftline lineage --model M``: a model's versions and, for each, the chain of ids that
led to it and what came of it (drift → alert → retraining request → published version →
serving → verdict), from ClickHouse (``driftline.sinks.lineage``, which the API's
``GET /v1/models/{model}/lineage`` answers with too).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from driftline.sinks.lineage import model_lineage

__all__ = ["add_lineage_command", "format_lineage"]


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_lineage(lineage: dict[str, Any]) -> str:
    """The lineage as indented text, one version after the other (oldest first).

    >>> print(format_lineage({"model_id": "m", "versions": []}))
    model m: no versions known
    """
    model = lineage["model_id"]
    if not lineage["versions"]:
        return f"model {model}: no versions known"
    lines = [f"model {model}"]
    for chain in lineage["versions"]:
        v = chain["version"]
        mark = "complete" if chain["complete"] else "partial"
        lines.append(f"version {v['version']} (after {v['previous_version'] or '-'}; {mark})")
        for drift in chain["drift_events"]:
            lines.append(f"  drift      {drift['event_id']}  {drift['stream_kind']}/"
                         f"{drift['stream_name']} {drift['detector']} on version "
                         f"{drift['model_version']} at {_when(drift['detected_at'])}")  # fmt: skip
        for alert in chain["alerts"]:
            lines.append(f"  alert      {alert['event_id']}  {alert['alertname']} "
                         f"({alert['state']})")  # fmt: skip
        request = chain["retraining_request"]
        if request is not None:
            lines.append(f"  retraining {request['event_id']}  {request['policy']} at "
                         f"{_when(request['requested_at'])}: {request['reason']}")  # fmt: skip
        if v["published"]:
            lines.append(f"  published  {v['published_event_id']}  {v['artifact_uri'] or '-'} "
                         f"by {v['publisher'] or '-'} at {_when(v['published_at'])}")  # fmt: skip
        if chain["serving"]:
            lines.append(f"  serving    {_when(v['first_seen'])} .. {_when(v['last_seen'])}")
        for verdict in chain["verdicts"]:
            rollback = (f"; rollback {verdict['rollback_event_id']} to {verdict['rollback_to']}"
                        if verdict["rollback_event_id"] else "")  # fmt: skip
            lines.append(
                f"  verdict    {verdict['event_id']}  {verdict['verdict']} vs "
                f"{verdict['previous_version']}: {verdict['metric']} {verdict['value']:.4f} vs "
                f"{verdict['previous_value']:.4f} (p={verdict['p_value']:.3g}){rollback}"
            )
    return "\n".join(lines)


def add_lineage_command(subparsers: Any) -> None:
    """``driftline lineage --model M [--json] [--clickhouse-url URL]``."""
    parser = subparsers.add_parser(
        "lineage", help="a model's versions: drift -> alert -> retraining -> version -> verdict"
    )
    parser.add_argument("--model", required=True, help="model_id")
    parser.add_argument("--json", action="store_true", help="print JSON (as the API answers)")
    parser.add_argument(
        "--clickhouse-url",
        default=None,
        help="ClickHouse server to read (default: DRIFTLINE_CLICKHOUSE_URL, else the endpoint "
        "of the worker running on this data dir, else the embedded store)",
    )
    parser.set_defaults(handler=handler)


def handler(args: argparse.Namespace, settings: Any) -> int:
    from driftline.store_endpoint import ReaderStoreError, open_reader_store

    try:
        store = open_reader_store(settings, args.clickhouse_url)
    except ReaderStoreError as exc:
        print(f"driftline lineage: {exc}", file=sys.stderr)
        return 2
    try:
        lineage = model_lineage(store, args.model)
    finally:
        store.close()
    print(json.dumps(lineage, indent=2) if args.json else format_lineage(lineage))
    return 0 if lineage["versions"] else 1
