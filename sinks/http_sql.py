"""Moved to :mod:`driftline.sinks.clickhouse_http.sql`; this name stays for existing imports."""

from .clickhouse_http.sql import READ_KINDS, Statement, parse_statement

__all__ = ["READ_KINDS", "Statement", "parse_statement"]
