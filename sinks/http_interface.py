"""Moved to :mod:`driftline.sinks.clickhouse_http`; this name stays for existing imports
(the worker, the CLI, benchmarks)."""

from .clickhouse_http import (
    ClickHouseError,
    HttpInterface,
    Request,
    Response,
    ServerHandle,
    add_clickhouse_command,
    serve_store,
)

__all__ = [
    "ClickHouseError",
    "HttpInterface",
    "Request",
    "Response",
    "ServerHandle",
    "add_clickhouse_command",
    "serve_store",
]
