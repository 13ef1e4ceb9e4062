"""The ``driftline`` command answers ``--help`` without loading its heavy dependencies.

Measured on the development machine (2 shared cores): ``driftline --help`` took 2.0 s wall
(1.5 s CPU) when every subcommand's module imported chdb, pandas, FastAPI and Numba at start;
with the subcommands registering their parsers from light modules it takes ~0.3 s.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from driftline.cli import build_parser

HEAVY = ("chdb", "pandas", "fastapi", "numba", "faust", "pyarrow", "uvicorn", "confluent_kafka")

def _subcommands() -> list[str]:
    parser = build_parser()
    return sorted(next(a for a in parser._actions if a.dest == "command").choices)


# Every subcommand the CLI has, whoever added it: each must keep its --help light.
SUBCOMMANDS = _subcommands()

_PROBE = """
import contextlib, io, json, sys
from driftline.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main(sys.argv[2:])
    except SystemExit as exc:
        code = exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")))
print(json.dumps({"code": code, "heavy": heavy, "help": out.getvalue()}))
"""


def _help(*argv: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(HEAVY), *argv], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_top_level_help_imports_no_heavy_package() -> None:
    answer = _help("--help")
    assert answer["code"] == 0
    assert answer["heavy"] == []
    for name in SUBCOMMANDS:
        assert name in answer["help"]


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_help_imports_no_heavy_package(name: str) -> None:
    answer = _help(name, "--help")
    assert answer["code"] == 0
    assert answer["heavy"] == [], f"`driftline {name} --help` imported {answer['heavy']}"
    assert f"usage: driftline {name}" in answer["help"]


def test_the_usual_subcommands_are_there() -> None:
    assert {"kafka", "worker", "api", "api-key", "deliver", "replay", "report", "clickhouse",
            "demo"} <= set(SUBCOMMANDS)  # fmt: skip


def test_clickhouse_serve_defaults_match_the_interface() -> None:
    # The parser repeats the interface's defaults so that it need not import the interface.
    from driftline.sinks.clickhouse_http import cli, interface

    assert cli.DEFAULT_MAX_BODY_MB << 20 == interface.DEFAULT_MAX_BODY_BYTES
    assert cli.DEFAULT_MAX_EXECUTION_TIME == interface.DEFAULT_MAX_EXECUTION_TIME


def test_worker_takes_verbose() -> None:
    args = build_parser().parse_args(["worker", "--verbose"])
    assert args.verbose is True
    assert build_parser().parse_args(["worker"]).verbose is False
