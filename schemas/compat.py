"""Schema evolution checks with the Apache Avro library (the reference implementation).

A new version of a schema must be *backward* compatible with every earlier one: a consumer
reading with the new schema (reader) must decode everything written with older ones (writer),
because topics keep old messages and replays reread them. Earlier versions are kept under
``history/<Name>/v<N>.avsc``; the newest of them must equal the current ``<Name>.avsc``.

Run ``python -m driftline.schemas.compat`` to check the shipped schemas, or
``python -m driftline.schemas.compat NEW.avsc OLD.avsc`` for one pair (exit 1 if incompatible).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from driftline.schemas.registry import SCHEMA_FILES, load_schema

__all__ = [
    "Mode",
    "check_all",
    "check_compatibility",
    "history",
    "is_backward_compatible",
    "parse",
]

Mode = Literal["BACKWARD", "FORWARD", "FULL"]
_VERSION_FILE = re.compile(r"^v(\d+)\.avsc$")


def parse(schema: str | Mapping[str, Any]) -> avro.schema.Schema:
    """Parse with the Avro library; raises ``avro.errors.SchemaParseException`` if invalid."""
    text = schema if isinstance(schema, str) else json.dumps(schema)
    return avro.schema.parse(text)


def _problems(reader: avro.schema.Schema, writer: avro.schema.Schema, label: str) -> list[str]:
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    kinds = ", ".join(sorted({i.value for i in result.incompatibilities}))
    where = ", ".join(sorted(result.locations))
    what = ", ".join(sorted(result.messages))
    return [f"{label}: {kinds} at {where} ({what})"]


def check_compatibility(
    new: str | Mapping[str, Any], old: str | Mapping[str, Any], mode: Mode = "BACKWARD"
) -> list[str]:
    """Problems that stop ``new`` from replacing ``old`` under ``mode``; empty if none.

    BACKWARD: new readers decode old data. FORWARD: old readers decode new data. FULL: both.

    >>> old = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]}
    >>> new = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"},
    ...                                                  {"name": "b", "type": "string"}]}
    >>> check_compatibility(new, old)
    ['backward: reader_field_missing_default_value at /fields/1 (b)']
    """
    new_schema, old_schema = parse(new), parse(old)
    problems: list[str] = []
    if mode in ("BACKWARD", "FULL"):
        problems += _problems(new_schema, old_schema, "backward")
    if mode in ("FORWARD", "FULL"):
        problems += _problems(old_schema, new_schema, "forward")
    return problems


def is_backward_compatible(new: str | Mapping[str, Any], old: str | Mapping[str, Any]) -> bool:
    return not check_compatibility(new, old, "BACKWARD")


def history(name: str, root: Path | None = None) -> list[tuple[int, dict[str, Any]]]:
    """``[(version, schema), ...]`` from ``history/<name>/v<N>.avsc``, oldest first."""
    folder = (
        Path(root) / name if root is not None
        else resources.files("driftline.schemas").joinpath("history", name)
    )  # fmt: skip
    versions = []
    if folder.is_dir():
        for entry in folder.iterdir():
            match = _VERSION_FILE.match(entry.name)
            if match:
                versions.append((int(match.group(1)), json.loads(entry.read_text())))
    return sorted(versions, key=lambda v: v[0])


def check_all(root: Path | None = None) -> dict[str, list[str]]:
    """For every shipped schema: parse it, check it against each historical version.

    Returns problems per schema name (empty lists when all is well). A schema with no history,
    or whose newest historical version is not the current file, is a problem too: the history
    is what makes the next change checkable.
    """
    report: dict[str, list[str]] = {}
    for name in SCHEMA_FILES:
        current = load_schema(name)
        problems: list[str] = []
        try:
            parse(current)
        except Exception as exc:  # the Avro library's parse errors have several types
            report[name] = [f"current schema does not parse: {exc}"]
            continue
        versions = history(name, root)
        if not versions:
            problems.append(f"no history under history/{name}/ (add v1.avsc)")
        elif versions[-1][1] != current:
            problems.append(
                f"current {name}.avsc differs from history v{versions[-1][0]}: "
                f"save it as v{versions[-1][0] + 1}.avsc"
            )
        for version, old in versions:
            problems += [f"vs v{version}: {p}" for p in check_compatibility(current, old)]
        report[name] = problems
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m driftline.schemas.compat", description=__doc__)
    parser.add_argument("new", nargs="?", type=Path, help="new .avsc (with OLD: check one pair)")
    parser.add_argument("old", nargs="?", type=Path, help="previous .avsc")
    parser.add_argument("--mode", choices=["BACKWARD", "FORWARD", "FULL"], default="BACKWARD")
    args = parser.parse_args(argv)
    if args.new is not None:
        if args.old is None:
            parser.error("give both NEW and OLD, or neither")
        problems = check_compatibility(args.new.read_text(), args.old.read_text(), args.mode)
        for problem in problems:
            print(problem)
        print("compatible" if not problems else "INCOMPATIBLE")
        return 1 if problems else 0
    failed = False
    for name, problems in check_all().items():
        print(f"{name}: {'ok' if not problems else 'FAILED'}")
        for problem in problems:
            print(f"  {problem}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
