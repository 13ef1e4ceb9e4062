"""ClickHouse's HTTP protocol, independent of any server: a request read into the query to run
(statement, database, settings, formats), and a result written into a response.

As ClickHouse reads a request: the statement is the ``query`` URL parameter, a line break, then
the body (so the body may be the whole statement, or the insert data that follows
``INSERT ... FORMAT x`` in the URL); URL parameters that are not the protocol's own are engine
settings; ``param_<name>`` are query parameters (``{name:Type}``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .compression import decompress, response_encoder
from .errors import ClickHouseError
from .sessions import Session
from .sql import Statement, parse_statement, set_names
from .users import check_setting_change, readonly_level

__all__ = [
    "FORMAT_ALIASES",
    "Outcome",
    "Query",
    "Request",
    "Response",
    "read_query",
    "result_response",
]

# Request parameters that are not engine settings: the protocol's own, and the HTTP handler
# settings ClickHouse applies itself (accepted; nothing to do, responses are always buffered).
_TRANSPORT_PARAMS = frozenset(
    """
    query database default_format query_id session_id session_timeout session_check user
    password quota_key buffer_size wait_end_of_query compress decompress client_protocol_version
    role readonly enable_http_compression http_zlib_compression_level
    send_progress_in_http_headers http_headers_progress_interval_ms
    cancel_http_readonly_queries_on_client_close http_response_buffer_size
    http_wait_end_of_query http_native_compression_disable_checksumming_on_decompress
    add_http_cors_header
    """.split()  # noqa: SIM905 - a word list reads better than 26 quoted strings
)

# Format names chdb's Python wrapper would turn into Python objects instead of bytes.
_PYTHON_FORMATS = frozenset({"dataframe", "arrowtable", "datastore"})

FORMAT_ALIASES = {"tsv": "TabSeparated", "tsvwithnames": "TabSeparatedWithNames",
                  "tsvwithnamesandtypes": "TabSeparatedWithNamesAndTypes",
                  "tsvraw": "TabSeparatedRaw"}  # fmt: skip


@dataclass
class Request:
    """One HTTP request, body read in full (``headers`` looks names up case-insensitively)."""

    method: str
    path: str
    params: dict[str, str]
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass
class Response:
    status: int = 200
    body: bytes | memoryview = b""
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # end the connection after this response


@dataclass(frozen=True)
class Query:
    """A request, read: what to run, where, with which settings and in which format."""

    statement: Statement
    method: str
    database: str
    settings: dict[str, str]  # engine settings from the session and the URL
    readonly: int  # ClickHouse's readonly level: 0, 1 or 2
    params: dict[str, str]  # query parameters, for {name:Type}
    output_format: str
    max_execution_time: float | None  # the server's bound, unless settings has its own


@dataclass(frozen=True)
class Outcome:
    """What one statement produced: a result (queries), insert counters, or neither."""

    result: Any = None  # chdb's query result
    written: Any = None  # chdb's insert summary (rows_written, bytes_written)
    query_class: int = 0  # the engine parser's class: 0 reads


def read_query(
    request: Request,
    session: Session | None,
    *,
    user_readonly: bool,
    formats: dict[str, str],
    known_settings: Mapping[str, str],
    default_database: str,
    max_body_bytes: int,
    max_query_bytes: int,
    max_execution_time: float | None,
) -> Query:
    """Read ``request`` (in ``session``, if any) into the :class:`Query` to run.

    ``formats`` maps lower-case output format names to their spelling; ``known_settings`` maps
    every engine setting to the value the connection runs with.
    """
    params = request.params
    stmt = read_statement(request, formats, max_body_bytes, max_query_bytes)
    readonly = readonly_level(params, request.method, user_readonly)
    settings = dict(session.settings) if session else {}
    for name, value in params.items():
        if name in _TRANSPORT_PARAMS or name.startswith("param_"):
            continue
        check_setting_change(readonly, name, value, known_settings.get(name))
        settings[name] = value
    unknown = [name for name in settings if name not in known_settings]
    if unknown:
        raise ClickHouseError(115, f"Unknown setting '{unknown[0]}'")
    database = (
        params.get("database")
        or request.headers.get("X-ClickHouse-Database")
        or (session.database if session else None)
        or default_database
    )
    fmt = params.get("default_format") or "TabSeparated"
    fmt = stmt.output_format or FORMAT_ALIASES.get(fmt.lower(), fmt)
    if fmt.lower() in _PYTHON_FORMATS:
        raise ClickHouseError(73, f"Unknown output format {fmt}")
    return Query(
        statement=stmt,
        method=request.method,
        database=database,
        settings=settings,
        readonly=readonly,
        params={k[6:]: v for k, v in params.items() if k.startswith("param_")},
        output_format=fmt,
        max_execution_time=max_execution_time,
    )


def read_statement(
    request: Request, formats: dict[str, str], max_body_bytes: int, max_query_bytes: int
) -> Statement:
    """The statement of ``request`` (``query`` parameter and body), checked for what this
    endpoint never runs: empty, oversized, several statements, ``INTO OUTFILE``."""
    text = request.params.get("query", "").encode()
    body = b""
    if request.method == "POST":
        body = decompress(request.body, request.headers.get("Content-Encoding", ""), max_body_bytes)
    stmt = None
    if text and body and not text[-1:].isspace():
        head = parse_statement(text, formats)
        if head.insert_format is not None:
            # "INSERT ... FORMAT x" in the URL: the whole body is data, no copy of it
            stmt = replace(head, data=memoryview(body))
    if stmt is None:
        # As ClickHouse: the query parameter, a line break, then the body.
        joined = text + b"\n" + body if text and body else text or body
        stmt = parse_statement(joined, formats)
    if not stmt.sql.strip():
        raise ClickHouseError(62, "Empty query")
    if len(stmt.sql) > max_query_bytes and stmt.data is None and stmt.kind != "INSERT":
        raise ClickHouseError(62, f"Max query size exceeded ({max_query_bytes} bytes)")
    if stmt.multiple:
        raise ClickHouseError(62, "Multi-statements are not allowed")
    if stmt.into_outfile:
        raise ClickHouseError(48, "INTO OUTFILE is not allowed on a server")
    if stmt.kind == "SET":
        names = set_names(stmt.sql)
        if not names:  # SET ROLE, SET TRANSACTION ...: state we could not put back
            raise ClickHouseError(48, "Only 'SET name = value, ...' is supported here")
        if any(n.lower().startswith("param_") for n in names):
            raise ClickHouseError(48, "Pass query parameters as param_<name> URL parameters")
    return stmt


def result_response(request: Request, query: Query, outcome: Outcome, elapsed_s: float) -> Response:
    """The response for a statement that ran: payload (compressed if asked), format and
    ``X-ClickHouse-Summary`` headers."""
    headers = {}
    summary: dict[str, str] = {
        "read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0",
        "total_rows_to_read": "0", "result_rows": "0", "result_bytes": "0",
    }  # fmt: skip
    payload: bytes | memoryview = b""
    result, written = outcome.result, outcome.written
    if result is not None:
        payload = result.bytes()
        summary.update(
            read_rows=str(result.storage_rows_read()),
            read_bytes=str(result.storage_bytes_read()),
            written_rows=str(result.rows_written()),
            written_bytes=str(result.bytes_written()),
            total_rows_to_read=str(result.storage_rows_read()),
            result_rows=str(result.rows_read()),
            result_bytes=str(len(payload)),
        )
        if outcome.query_class == 0 or payload:
            headers["X-ClickHouse-Format"] = query.output_format
            headers["Content-Type"] = _content_type(query.output_format)
    elif written is not None:
        summary.update(
            written_rows=str(written.rows_written), written_bytes=str(written.bytes_written)
        )
    summary["elapsed_ns"] = str(int(elapsed_s * 1e9))
    headers["X-ClickHouse-Summary"] = json.dumps(summary, separators=(",", ":"))
    if query.settings.get("session_timezone"):
        headers["X-ClickHouse-Timezone"] = query.settings["session_timezone"]
    headers.setdefault("Content-Type", "text/plain; charset=UTF-8")
    if payload and request.params.get("enable_http_compression") in ("1", "true"):
        chosen = response_encoder(request.headers.get("Accept-Encoding", ""))
        if chosen is not None:
            headers["Content-Encoding"] = chosen[0]
            payload = chosen[1](bytes(payload))
    return Response(body=payload, headers=headers)


def _content_type(fmt: str) -> str:
    f = fmt.lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        header = "present" if "withnames" in f else "absent"
        return f"text/csv; charset=UTF-8; header={header}"
    if "eachrow" in f or f in ("jsonlines", "ndjson"):
        return "application/x-ndjson; charset=UTF-8"
    if f.startswith("json"):
        return "application/json; charset=UTF-8"
    if f.startswith(("pretty", "vertical", "values", "markdown", "raw", "line", "xml")):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"
