"""Binding text into store queries.

Every free-text value travels hex-encoded and is decoded in SQL (``unhex({name:String})``):
ClickHouse parses String parameters in its escaped format, where a backslash starts an
escape sequence; clickhouse-connect escapes for the server, the embedded store passes values
through as they are (found by the schemathesis run: ``?model=\\`` failed there). Hex needs no
escaping in either.

>>> text("model"), hexed("a\\\\b")
('unhex({model:String})', '615c62')
"""

from __future__ import annotations


def text(name: str) -> str:
    return f"unhex({{{name}:String}})"


def hexed(value: str) -> str:
    return value.encode("utf-8").hex()
