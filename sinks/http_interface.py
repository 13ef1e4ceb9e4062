"""ClickHouse's HTTP interface over an :class:`~driftline.sinks.embedded.EmbeddedStore`.

chdb binds its data path to one process, so the API, analysts and Grafana cannot open the
worker's embedded store. Serving it over ClickHouse's own HTTP protocol lets every ClickHouse
client in: clickhouse-connect (and so :class:`~driftline.sinks.server.ServerStore`), curl,
Grafana's ClickHouse data source.

One process, one engine connection: every request runs through the store's connection under
its engine lock (:meth:`EmbeddedStore.locked_connection`), so the worker's own inserts and the
HTTP requests interleave statement by statement. Request bodies are read (bounded) before the
lock is taken and results are sent after it is released, so a slow client never stalls the
worker. Per request, the database (``database`` parameter or the session's ``USE``) and the
settings (URL parameters and the session's ``SET``) are applied to the connection and put back
afterwards.

Example (see ``docs/clickhouse-http.md``)::

    handle = serve_store(store, "127.0.0.1", 8123, {"grafana": ("s3cret", True)})
    ...   # clickhouse_connect.get_client(host="127.0.0.1", port=8123, username="grafana", ...)
    handle.stop()
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hmac
import json
import logging
import re
import signal
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .embedded import EmbeddedStore
from .http_sql import READ_KINDS, Statement, parse_statement

__all__ = [
    "ClickHouseError",
    "HttpInterface",
    "Request",
    "Response",
    "ServerHandle",
    "serve_store",
    "add_clickhouse_command",
]

log = logging.getLogger(__name__)

Users = Mapping[str, tuple[str, bool]]  # user -> (password, readonly)

DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_QUERY_BYTES = 1024 * 1024  # SQL text outside insert data (ClickHouse: 256 KiB)
# A query holds the engine (and so the worker's inserts) for as long as it runs: bounded unless
# the request sets max_execution_time itself.
DEFAULT_MAX_EXECUTION_TIME = 60.0

# ClickHouse error codes used here (errorCodeToName in the engine).
_CODES = {
    "UNSUPPORTED_METHOD": 1, "CANNOT_PARSE_TEXT": 6, "THERE_IS_NO_COLUMN": 8,
    "DUPLICATE_COLUMN": 15, "CANNOT_PARSE_ESCAPE_SEQUENCE": 25, "CANNOT_PARSE_QUOTED_STRING": 26,
    "CANNOT_PARSE_INPUT_ASSERTION_FAILED": 27, "BAD_ARGUMENTS": 36, "UNKNOWN_ELEMENT_IN_AST": 37,
    "CANNOT_PARSE_DATE": 38, "CANNOT_PARSE_DATETIME": 41, "ILLEGAL_COLUMN": 44,
    "UNKNOWN_FUNCTION": 46, "UNKNOWN_IDENTIFIER": 47, "NOT_IMPLEMENTED": 48, "UNKNOWN_TYPE": 50,
    "TYPE_MISMATCH": 53, "UNKNOWN_STORAGE": 56, "UNKNOWN_TABLE": 60, "SYNTAX_ERROR": 62,
    "UNKNOWN_AGGREGATE_FUNCTION": 63, "CANNOT_PARSE_NUMBER": 72, "UNKNOWN_FORMAT": 73,
    "CANNOT_OPEN_FILE": 76, "UNKNOWN_TYPE_OF_QUERY": 78, "UNKNOWN_DATABASE": 81,
    "UNKNOWN_SETTING": 115, "INCORRECT_DATA": 117, "UNKNOWN_TYPE_OF_AST_NODE": 123,
    "UNKNOWN_DIRECTION_OF_SORTING": 152, "TIMEOUT_EXCEEDED": 159, "READONLY": 164,
    "TOO_DEEP_AST": 167, "TOO_BIG_AST": 168, "UNKNOWN_USER": 192, "WRONG_PASSWORD": 193,
    "REQUIRED_PASSWORD": 194, "SOCKET_TIMEOUT": 209, "UNEXPECTED_AST_STRUCTURE": 223,
    "QUERY_IS_TOO_LARGE": 229, "CANNOT_DECOMPRESS": 271, "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE": 321,
    "UNKNOWN_DATABASE_ENGINE": 336, "ZLIB_INFLATE_FAILED": 354, "SESSION_NOT_FOUND": 372,
    "SESSION_IS_LOCKED": 373, "CANNOT_PARSE_UUID": 376, "HTTP_LENGTH_REQUIRED": 381,
    "CANNOT_COMPILE_REGEXP": 427, "CANNOT_SCHEDULE_TASK": 439,
    "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING": 441, "ACCESS_DENIED": 497, "UNKNOWN_ROLE": 511,
    "SET_NON_GRANTED_ROLE": 512, "AUTHENTICATION_FAILED": 516, "ZSTD_DECODER_FAILED": 561,
    "LZ4_DECODER_FAILED": 618, "CANNOT_PARSE_IPV4": 675, "CANNOT_PARSE_IPV6": 676,
    "STD_EXCEPTION": 1001,
}  # fmt: skip
_CODE_NAMES = {code: name for name, code in _CODES.items()}

# HTTP status per error, after ClickHouse's exceptionCodeToHTTPStatus; anything else is 500.
_STATUS_BY_NAME = {
    401: "REQUIRED_PASSWORD UNKNOWN_USER WRONG_PASSWORD AUTHENTICATION_FAILED SET_NON_GRANTED_ROLE",
    # READONLY is not in ClickHouse's table (it answers 500); 403 says what happened, and the
    # code header is 164 either way.
    403: "ACCESS_DENIED READONLY",
    400: "BAD_ARGUMENTS CANNOT_COMPILE_REGEXP CANNOT_PARSE_TEXT CANNOT_PARSE_ESCAPE_SEQUENCE "
    "CANNOT_PARSE_QUOTED_STRING CANNOT_PARSE_DATE CANNOT_PARSE_DATETIME CANNOT_PARSE_NUMBER "
    "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING CANNOT_PARSE_IPV4 CANNOT_PARSE_IPV6 "
    "CANNOT_PARSE_INPUT_ASSERTION_FAILED CANNOT_PARSE_UUID DUPLICATE_COLUMN ILLEGAL_COLUMN "
    "UNKNOWN_ELEMENT_IN_AST UNKNOWN_TYPE_OF_AST_NODE THERE_IS_NO_COLUMN TOO_DEEP_AST TOO_BIG_AST "
    "UNEXPECTED_AST_STRUCTURE SYNTAX_ERROR INCORRECT_DATA TYPE_MISMATCH "
    "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE "
    # corrupt compressed request bodies are the client's fault too (ClickHouse answers 500)
    "ZLIB_INFLATE_FAILED ZSTD_DECODER_FAILED LZ4_DECODER_FAILED CANNOT_DECOMPRESS",
    404: "UNKNOWN_TABLE UNKNOWN_FUNCTION UNKNOWN_IDENTIFIER UNKNOWN_TYPE UNKNOWN_STORAGE "
    "UNKNOWN_DATABASE UNKNOWN_SETTING UNKNOWN_DIRECTION_OF_SORTING UNKNOWN_AGGREGATE_FUNCTION "
    "UNKNOWN_FORMAT UNKNOWN_DATABASE_ENGINE UNKNOWN_TYPE_OF_QUERY UNKNOWN_ROLE",
    413: "QUERY_IS_TOO_LARGE",
    501: "NOT_IMPLEMENTED",
    503: "SOCKET_TIMEOUT CANNOT_OPEN_FILE CANNOT_SCHEDULE_TASK",
    411: "HTTP_LENGTH_REQUIRED",
    408: "TIMEOUT_EXCEEDED",
}
_STATUS_BY_CODE = {
    _CODES[name]: status for status, names in _STATUS_BY_NAME.items() for name in names.split()
}

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

_FORMAT_ALIASES = {"tsv": "TabSeparated", "tsvwithnames": "TabSeparatedWithNames",
                   "tsvwithnamesandtypes": "TabSeparatedWithNamesAndTypes",
                   "tsvraw": "TabSeparatedRaw"}  # fmt: skip

_CODE_RE = re.compile(r"Code:\s*(\d+)\.\s*(?:DB::Exception:\s*)?")
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")
_VERSION_RE = re.compile(r"\s*\(version [^()]*\)\.?")


class ClickHouseError(Exception):
    """An error as ClickHouse reports it over HTTP: code, name, message and status."""

    def __init__(self, code: int, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.name = name or _CODE_NAMES.get(code, "UNKNOWN_EXCEPTION")
        self.message = message

    @property
    def status(self) -> int:
        return _STATUS_BY_CODE.get(self.code, 500)

    def body(self, version: str) -> bytes:
        return f"Code: {self.code}. DB::Exception: {self.message}. ({self.name}) (version {version})\n".encode()

    @classmethod
    def from_engine(cls, exc: BaseException) -> ClickHouseError:
        """Rebuild the engine's error: chdb nests ``Code: N. DB::Exception:`` prefixes and
        version trailers when an error crosses its layers; the client wants one of each."""
        text = str(exc)
        match = _CODE_RE.search(text)
        code = int(match.group(1)) if match else 1001
        names = _NAME_RE.findall(text)
        name = names[-1] if names else None
        text = _VERSION_RE.sub("", text)
        if match:
            text = text[match.start() :]
        while True:
            stripped = _CODE_RE.sub("", text, count=1) if _CODE_RE.match(text) else text
            if stripped == text:
                break
            text = stripped
        text = text.strip()
        # Drop trailing "(NAME)" markers (repeated by nesting) and the final period.
        while True:
            new = re.sub(r"\.?\s*\([A-Z][A-Z0-9_]+\)\.?\s*$", "", text)
            if new == text:
                break
            text = new
        return cls(code, text.rstrip(". ") or "unknown error", name)


# -- compression ------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


# Compressed input is fed in slices: a decompressor's unused_data is a copy of the rest of its
# input, so handing it the whole body would copy it once per frame (clickhouse-connect sends
# one lz4/zstd frame per block: dozens per insert).
_SLICE = 1 << 20


def _inflate(factory: Callable[[], Any], data: bytes, limit: int, code: int) -> bytes:
    """Decompress concatenated frames (gzip members, lz4 or zstd frames) up to ``limit`` bytes.

    ``factory`` makes a bz2-style decompressor (``decompress(data, max_length)``, ``eof``,
    ``needs_input``, ``unused_data``).
    """
    parts: list[bytes] = []
    size = 0
    view = memoryview(data)
    pos = 0
    d = factory()
    in_frame = False
    while pos < len(view):
        piece: bytes | memoryview = view[pos : pos + _SLICE]
        pos += len(piece)
        while True:
            in_frame = in_frame or len(piece) > 0
            # Bounded output per call: some decompressors allocate max_length up front.
            chunk = d.decompress(piece, max_length=min(limit + 1 - size, 8 * _SLICE))
            piece = b""
            size += len(chunk)
            parts.append(chunk)
            if size > limit:
                raise _TooLarge
            if d.eof:
                piece, d, in_frame = d.unused_data, factory(), False
                if piece:
                    continue
                break
            if d.needs_input:
                break  # the next slice
            # else: max_length reached with input left inside the decompressor: drain it
    if in_frame:
        raise ClickHouseError(code, "unexpected end of compressed data")
    return b"".join(parts)


class _Zlib:
    """zlib's decompressobj behind the bz2-style interface _inflate expects."""

    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)
        self._tail = b""

    def decompress(self, data: bytes | memoryview, max_length: int) -> bytes:
        out = self._d.decompress(self._tail + bytes(data), max_length)
        self._tail = self._d.unconsumed_tail
        return out

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def needs_input(self) -> bool:
        return not self._tail

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data


def _decompress(data: bytes, encoding: str, limit: int) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity", "none"):
        return data
    if encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else zlib.MAX_WBITS
        factory: Callable[[], Any] = lambda: _Zlib(wbits)  # noqa: E731
        code = 354
    elif encoding == "zstd":
        from backports import zstd

        factory, code = zstd.ZstdDecompressor, 561
    elif encoding == "lz4":
        import lz4.frame

        factory, code = lz4.frame.LZ4FrameDecompressor, 618
    else:
        raise ClickHouseError(
            48, f"Unknown HTTP content encoding {encoding!r}: use gzip, deflate, zstd or lz4"
        )
    try:
        return _inflate(factory, data, limit, code)
    except (_TooLarge, ClickHouseError):
        raise
    except Exception as exc:  # zlib.error, lz4's RuntimeError, zstd.ZstdError
        raise ClickHouseError(code, f"{encoding} decompression failed: {exc}") from exc


def _compressor(accept: str) -> tuple[str, Callable[[bytes], bytes]] | None:
    """The response encoding: the client's first listed one that we speak."""
    for item in accept.split(","):
        name = item.split(";")[0].strip().lower()
        if name in ("gzip", "x-gzip"):
            return "gzip", lambda b: gzip.compress(b, compresslevel=3)
        if name == "deflate":
            return "deflate", lambda b: zlib.compress(b, 3)
        if name == "zstd":
            from backports import zstd

            return "zstd", zstd.compress
        if name == "lz4":
            import lz4.frame

            return "lz4", lz4.frame.compress
    return None


# -- requests and sessions ----------------------------------------------------------------


@dataclass
class Request:
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
    close: bool = False


@dataclass
class _Session:
    lock: threading.Lock = field(default_factory=threading.Lock)
    database: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    expires: float = 0.0
    user: str = ""


def _sql_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


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


class HttpInterface:
    """The protocol: turns one HTTP request into one statement on the store's connection.

    Independent of the socket server so it can be driven by any HTTP front end.
    """

    def __init__(
        self,
        store: EmbeddedStore,
        users: Users | None = None,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_query_bytes: int = DEFAULT_MAX_QUERY_BYTES,
        display_name: str | None = None,
        default_database: str | None = None,
        max_sessions: int = 1000,
        max_execution_time: float | None = DEFAULT_MAX_EXECUTION_TIME,
    ) -> None:
        self.store = store
        self.max_execution_time = max_execution_time
        # ClickHouse's out-of-the-box user: "default" without a password, full rights.
        self.users: dict[str, tuple[str, bool]] = dict(users) if users else {"default": ("", False)}
        self.max_body_bytes = max_body_bytes
        self.max_query_bytes = max_query_bytes
        self.display_name = display_name or socket.gethostname()
        self.max_sessions = max_sessions
        self._sessions: dict[str, _Session] = {}
        self._sessions_lock = threading.Lock()
        with store.locked_connection() as conn:
            version, tz, current_db = self._rows(
                conn, "SELECT version(), timezone(), currentDatabase()"
            )[0]
            values = self._rows(conn, "SELECT name, value, changed FROM system.settings")
            # What the connection runs with: restored after each request that changes it.
            self._baseline = {name: value for name, value, changed in values if changed == "1"}
            self._current = {name: value for name, value, _ in values}
            formats = self._rows(conn, "SELECT name, is_output FROM system.formats")
        self.version = version
        self.timezone = tz
        # The connection's own database: put back after every request that changes it.
        self._home_database = current_db
        self.default_database = default_database or store.database
        self._formats = {name.lower(): name for name, is_output in formats if is_output == "1"}
        self._formats.update(_FORMAT_ALIASES)

    @staticmethod
    def _rows(conn: Any, sql: str) -> list[list[str]]:
        # JSON strings, not TSV: setting values may hold tabs and backslashes, and a value
        # restored from an escaped form would be a different value.
        raw = conn.query(sql, "JSONCompactStringsEachRow").bytes().decode()
        return [json.loads(line) for line in raw.splitlines()]

    # -- entry point ------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        query_id = request.params.get("query_id") or str(uuid.uuid4())
        try:
            response = self._dispatch(request, query_id)
        except ClickHouseError as exc:
            response = self._error(exc)
        except Exception as exc:  # the server must keep serving whatever a request did
            if _CODE_RE.search(str(exc)):  # the engine refused: its code, message and name
                response = self._error(ClickHouseError.from_engine(exc))
            else:
                log.exception("ClickHouse HTTP request failed")
                response = self._error(ClickHouseError(1001, f"{type(exc).__name__}: {exc}"))
        response.headers.setdefault("X-ClickHouse-Server-Display-Name", self.display_name)
        response.headers.setdefault("X-ClickHouse-Query-Id", query_id)
        response.headers.setdefault("X-ClickHouse-Timezone", self.timezone)
        return response

    def handle_error(self, exc: ClickHouseError) -> Response:
        """The response for an error found before the request reached :meth:`handle`."""
        response = self._error(exc)
        response.headers.setdefault("X-ClickHouse-Server-Display-Name", self.display_name)
        return response

    def _error(self, exc: ClickHouseError) -> Response:
        return Response(
            status=exc.status,
            body=exc.body(self.version),
            headers={
                "Content-Type": "text/plain; charset=UTF-8",
                "X-ClickHouse-Exception-Code": str(exc.code),
            },
        )

    def authenticate(
        self, params: Mapping[str, str], headers: Mapping[str, str]
    ) -> tuple[str, bool]:
        """(user, readonly) for the request's credentials, as ClickHouse reads them."""
        user = password = None
        if headers.get("X-ClickHouse-User") is not None:
            user, password = headers["X-ClickHouse-User"], headers.get("X-ClickHouse-Key", "")
        elif headers.get("Authorization", "").lower().startswith("basic "):
            try:
                decoded = base64.b64decode(headers["Authorization"][6:].strip()).decode()
            except ValueError as exc:
                raise ClickHouseError(516, "Invalid Basic authorization header") from exc
            user, _, password = decoded.partition(":")
        elif "user" in params:
            user, password = params["user"], params.get("password", "")
        user = user or "default"
        password = password or ""
        entry = self.users.get(user)
        # compare_digest on both branches: no timing difference between unknown user and
        # wrong password.
        expected = entry[0] if entry else "\0" + password
        if not hmac.compare_digest(expected.encode(), password.encode()) or entry is None:
            raise ClickHouseError(
                516,
                f"{user}: Authentication failed: password is incorrect, "
                "or there is no user with such name",
            )
        return user, entry[1]

    def _dispatch(self, request: Request, query_id: str) -> Response:
        path = request.path.rstrip("/")
        if path in ("/ping", "/replicas_status"):
            return Response(body=b"Ok.\n", headers={"Content-Type": "text/html; charset=UTF-8"})
        if path != "":
            return Response(
                status=404,
                body=f"There is no handle {request.path}\n\nUse / or /ping for health checks.\n".encode(),
                headers={"Content-Type": "text/plain; charset=UTF-8"},
            )
        params = request.params
        if request.method == "GET" and "query" not in params:
            return Response(body=b"Ok.\n", headers={"Content-Type": "text/html; charset=UTF-8"})
        user, user_readonly = self.authenticate(params, request.headers)
        if params.get("compress") == "1" or params.get("decompress") == "1":
            raise ClickHouseError(
                48,
                "ClickHouse native block compression (compress=1/decompress=1) is not supported "
                "here; use HTTP compression (Content-Encoding / enable_http_compression=1)",
            )
        if request.headers.get("Content-Type", "").lower().startswith("multipart/form-data"):
            raise ClickHouseError(48, "multipart requests (external data) are not supported")

        session = self._session(params, user)
        if session is None:
            return self._execute(request, query_id, user_readonly, None)
        if not session.lock.acquire(blocking=False):
            raise ClickHouseError(
                373, f"Session {params['session_id']} is locked by a concurrent client"
            )
        try:
            return self._execute(request, query_id, user_readonly, session)
        finally:
            session.lock.release()

    def _session(self, params: Mapping[str, str], user: str) -> _Session | None:
        session_id = params.get("session_id")
        if not session_id:
            return None
        try:
            timeout = min(max(float(params.get("session_timeout", 60)), 0.0), 3600.0)
        except ValueError as exc:
            raise ClickHouseError(36, "Invalid session timeout") from exc
        now = time.monotonic()
        with self._sessions_lock:
            for key in [k for k, s in self._sessions.items() if s.expires < now]:
                if not self._sessions[key].lock.locked():
                    del self._sessions[key]
            session = self._sessions.get(session_id)
            if session is not None and session.user != user:
                # Sessions belong to the user who opened them (ClickHouse: SESSION_IS_LOCKED).
                raise ClickHouseError(373, f"Session {session_id} belongs to another user")
            if session is None:
                if params.get("session_check") == "1":
                    raise ClickHouseError(372, f"Session {session_id} not found")
                if len(self._sessions) >= self.max_sessions:
                    oldest = min(self._sessions, key=lambda k: self._sessions[k].expires)
                    del self._sessions[oldest]
                session = self._sessions[session_id] = _Session(user=user)
            session.expires = now + timeout
            return session

    # -- one statement ----------------------------------------------------------------------

    def _execute(
        self, request: Request, query_id: str, user_readonly: bool, session: _Session | None
    ) -> Response:
        params = request.params
        text = params.get("query", "").encode()
        body = b""
        if request.method == "POST":
            try:
                body = _decompress(
                    request.body, request.headers.get("Content-Encoding", ""), self.max_body_bytes
                )
            except _TooLarge:
                raise ClickHouseError(
                    229,
                    f"Decompressed request body is larger than the limit of "
                    f"{self.max_body_bytes} bytes",
                ) from None
        stmt = None
        if text and body and not text[-1:].isspace():
            head = parse_statement(text, self._formats)
            if head.insert_format is not None:
                # "INSERT ... FORMAT x" in the URL: the whole body is data, no copy of it
                stmt = replace(head, data=memoryview(body))
        if stmt is None:
            # As ClickHouse: the query parameter, a line break, then the body.
            stmt = parse_statement(
                text + b"\n" + body if text and body else text or body, self._formats
            )
        if not stmt.sql.strip():
            raise ClickHouseError(62, "Empty query")
        if len(stmt.sql) > self.max_query_bytes and stmt.data is None and stmt.kind != "INSERT":
            raise ClickHouseError(62, f"Max query size exceeded ({self.max_query_bytes} bytes)")
        if stmt.multiple:
            raise ClickHouseError(62, "Multi-statements are not allowed")
        if stmt.into_outfile:
            raise ClickHouseError(48, "INTO OUTFILE is not allowed on a server")
        self._check_statement(stmt)

        # readonly: 1 for readonly users; GET implies 2 (reads and settings only), as ClickHouse.
        readonly = 1 if user_readonly else 0
        if "readonly" in params:
            try:
                asked = int(params["readonly"])
            except ValueError as exc:
                raise ClickHouseError(36, "readonly must be 0, 1 or 2") from exc
            if user_readonly and asked != 1:
                raise ClickHouseError(164, "Cannot modify 'readonly' setting in readonly mode")
            readonly = max(readonly, asked)
        if request.method == "GET" and readonly == 0:
            readonly = 2

        settings = dict(session.settings) if session else {}
        for name, value in params.items():
            if name in _TRANSPORT_PARAMS or name.startswith("param_"):
                continue
            if readonly == 1 and self._current.get(name) != value:
                raise ClickHouseError(164, f"Cannot modify '{name}' setting in readonly mode")
            settings[name] = value
        unknown = [name for name in settings if name not in self._current]
        if unknown:
            raise ClickHouseError(115, f"Unknown setting '{unknown[0]}'")
        query_params = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        database = (
            params.get("database")
            or request.headers.get("X-ClickHouse-Database")
            or (session.database if session else None)
            or self.default_database
        )
        fmt = params.get("default_format") or "TabSeparated"
        fmt = _FORMAT_ALIASES.get(fmt.lower(), fmt)
        out_fmt = stmt.output_format or fmt
        if out_fmt.lower() in _PYTHON_FORMATS:
            raise ClickHouseError(73, f"Unknown output format {out_fmt}")

        started = time.perf_counter()
        with self.store.locked_connection() as conn:
            # The engine's own parser classifies the statement (chdb's raw connection).
            info = getattr(conn, "_conn", conn).classify_query(stmt.sql)
            query_class = int(info["query_class"])  # READ_ONLY 0, MUTATING 1, GLOBAL 2, CONTROL 3
            if info["statement_count"] > 1:
                raise ClickHouseError(62, "Multi-statements are not allowed")
            if readonly:
                self._check_readonly(stmt, query_class, readonly, request.method)
            sql = stmt.sql
            outer: dict[str, str] = {}
            conn_settings = settings
            if stmt.kind in READ_KINDS and not stmt.settings_after_format:
                if query_class == 0:
                    # A query takes the request's settings as a trailing SETTINGS clause: no
                    # SET and reset on the shared connection, and the query's own SETTINGS
                    # still win (inner clauses apply last), as they do over URL parameters.
                    outer = {k: v for k, v in settings.items() if self._current.get(k) != v}
                    conn_settings = {}
                    if self.max_execution_time and "max_execution_time" not in settings:
                        outer["max_execution_time"] = f"{self.max_execution_time:g}"
                if readonly:
                    # Second guard: the engine itself refuses writes, table functions
                    # (readonly=1) and setting changes in the statement.
                    outer["readonly"] = str(readonly)
            elif readonly == 1 and stmt.settings_after_format:
                raise ClickHouseError(164, "Cannot modify settings in readonly mode")
            if outer:
                sql += "\nSETTINGS " + ", ".join(
                    f"{_quote_ident(k)} = {_sql_literal(v)}" for k, v in outer.items()
                )
            with self._applied(conn, database, conn_settings, stmt):
                if stmt.kind == "USE":
                    conn.query(sql, "TabSeparated")
                    if session is not None:
                        session.database = self._rows(conn, "SELECT currentDatabase()")[0][0]
                    result, written = None, None
                elif stmt.kind == "SET":
                    names = _set_names(sql)
                    conn.query(sql, "TabSeparated")
                    if session is not None and names:
                        listed = ", ".join(_sql_literal(n) for n in names)
                        session.settings.update(
                            self._rows(
                                conn,
                                f"SELECT name, value FROM system.settings WHERE name IN ({listed})",
                            )
                        )
                    result, written = None, None
                elif stmt.data is not None:
                    assert stmt.insert_format is not None
                    inserter = conn.send_insert(sql, stmt.insert_format)
                    try:
                        if len(stmt.data):
                            inserter.append(stmt.data)
                        written = inserter.finish()
                    except BaseException:
                        inserter.cancel()
                        raise
                    result = None
                else:
                    result = conn.query(sql, out_fmt, params=query_params)
                    written = None

        headers = {}
        summary: dict[str, str] = {
            "read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0",
            "total_rows_to_read": "0", "result_rows": "0", "result_bytes": "0",
        }  # fmt: skip
        payload: bytes | memoryview = b""
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
            if query_class == 0 or payload:
                headers["X-ClickHouse-Format"] = out_fmt
                headers["Content-Type"] = _content_type(out_fmt)
        elif written is not None:
            summary.update(
                written_rows=str(written.rows_written), written_bytes=str(written.bytes_written)
            )
        summary["elapsed_ns"] = str(int((time.perf_counter() - started) * 1e9))
        headers["X-ClickHouse-Summary"] = json.dumps(summary, separators=(",", ":"))
        if settings.get("session_timezone"):
            headers["X-ClickHouse-Timezone"] = settings["session_timezone"]
        headers.setdefault("Content-Type", "text/plain; charset=UTF-8")
        if payload and params.get("enable_http_compression") in ("1", "true"):
            chosen = _compressor(request.headers.get("Accept-Encoding", ""))
            if chosen is not None:
                headers["Content-Encoding"] = chosen[0]
                payload = chosen[1](bytes(payload))
        return Response(body=payload, headers=headers)

    def _check_statement(self, stmt: Statement) -> None:
        if stmt.kind == "SET":
            names = _set_names(stmt.sql)
            if not names:  # SET ROLE, SET TRANSACTION ...: state we could not put back
                raise ClickHouseError(48, "Only 'SET name = value, ...' is supported here")
            if any(n.lower().startswith("param_") for n in names):
                raise ClickHouseError(48, "Pass query parameters as param_<name> URL parameters")

    def _check_readonly(
        self, stmt: Statement, query_class: int, readonly: int, method: str
    ) -> None:
        allowed = (stmt.kind in READ_KINDS and query_class in (0, 4)) or stmt.kind == "USE"
        if stmt.kind == "SET":
            if readonly == 1:
                raise ClickHouseError(164, "Cannot modify settings in readonly mode")
            if "readonly" in (n.lower() for n in _set_names(stmt.sql)):
                raise ClickHouseError(164, "Cannot modify 'readonly' setting in readonly mode")
            allowed = True
        if not allowed:
            hint = (
                ". For queries over HTTP, method GET implies readonly. "
                "You should use method POST for modifying queries"
                if method == "GET" and readonly == 2
                else ""
            )
            raise ClickHouseError(164, f"Cannot execute query in readonly mode{hint}")

    @contextmanager
    def _applied(
        self, conn: Any, database: str, settings: Mapping[str, str], stmt: Statement
    ) -> Iterator[None]:
        """Run with ``database`` current and ``settings`` set on the connection, then put the
        connection back as the store (and the worker) expects it: a ``USE`` or ``SET`` statement
        of the request itself is undone too (a session keeps it on its own side)."""
        # Settings equal to what the connection has (clickhouse-connect sends a few) cost a SET
        # and a reset for nothing.
        changed = {k: v for k, v in settings.items() if self._current.get(k) != v}
        switched = database != self._home_database or stmt.kind == "USE"
        try:
            if switched:
                conn.query(f"USE {_quote_ident(database)}", "TabSeparated")
            if changed:
                assignments = ", ".join(
                    f"{_quote_ident(k)} = {_sql_literal(v)}" for k, v in changed.items()
                )
                conn.query(f"SET {assignments}", "TabSeparated")
            yield
        finally:
            names = set(changed)
            if stmt.kind == "SET":
                names.update(n for n in _set_names(stmt.sql) if n in self._current)
            self._restore(conn, switched, names)

    def _restore(self, conn: Any, switched: bool, names: set[str]) -> None:
        try:
            if names:
                resets = ", ".join(
                    f"{_quote_ident(k)} = {_sql_literal(self._baseline[k])}"
                    if k in self._baseline
                    else f"{_quote_ident(k)} = DEFAULT"
                    for k in sorted(names)
                )
                conn.query(f"SET {resets}", "TabSeparated")
            if switched:
                conn.query(f"USE {_quote_ident(self._home_database)}", "TabSeparated")
        except Exception:
            # Should not happen (only known names reach SET); if it does, say so loudly: the
            # worker's inserts now run with a stray setting or database.
            log.exception("could not restore the embedded connection after an HTTP request")


def _set_names(sql: str) -> list[str]:
    """Setting names assigned by ``SET a = 1, b = 'x'`` (top-level ``name =`` pairs)."""
    return re.findall(r"(?:\bSET\b|,)\s*`?([A-Za-z_][A-Za-z0-9_]*)`?\s*=", sql, re.I)


# -- the socket server ----------------------------------------------------------------------

# Beyond this, an oversized body is not drained for a polite 413; the connection is dropped.
_MAX_DRAIN_BYTES = 64 * 1024 * 1024


class _BodyTooLarge(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clickhouse-connect pools its connections
    server: _Server
    timeout = 300  # per socket read: an idle or stalled client frees its thread

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; with Nagle on, a small response then
        # waits for the client's delayed ACK (~40 ms per query).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def _serve(self, method: str) -> None:
        interface = self.server.interface
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        # self.headers (an email Message) looks names up case-insensitively, as HTTP wants.
        request = Request(method, url.path or "/", params, self.headers)
        response: Response
        try:
            request.body = self._read_body(interface.max_body_bytes) if method == "POST" else b""
        except _BodyTooLarge:
            response = interface.handle_error(
                ClickHouseError(
                    229,
                    f"Request body is larger than the limit of {interface.max_body_bytes} bytes",
                )
            )
            response.close = True
        except (ValueError, ConnectionError) as exc:
            response = interface.handle_error(ClickHouseError(36, f"Bad request body: {exc}"))
            response.close = True
        else:
            response = interface.handle(request)
        self._send(response)

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > limit:
            self._drain(length)
            raise _BodyTooLarge
        return self._read_exactly(length)

    def _read_exactly(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) != n:
            # A body cut short must not run: half an INSERT would land as if complete.
            raise ConnectionError(f"client sent {len(data)} of {n} body bytes")
        return data

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        too_large = False
        while True:
            line = self.rfile.readline(65537)
            if not line.strip():
                raise ConnectionError("chunked body ended without its last chunk")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            total += size
            if total > limit:
                too_large = True
                if total > limit + _MAX_DRAIN_BYTES:
                    raise _BodyTooLarge
                self._drain(size)
            else:
                parts.append(self._read_exactly(size))
            self.rfile.readline(3)  # CRLF after the chunk
        if too_large:
            raise _BodyTooLarge
        return b"".join(parts)

    def _drain(self, n: int) -> None:
        # Reading what the client sends keeps it from failing on a reset before it reads our
        # 413; past _MAX_DRAIN_BYTES we stop and close the connection instead.
        n = min(n, _MAX_DRAIN_BYTES)
        while n > 0:
            chunk = self.rfile.read(min(n, 1 << 20))
            if not chunk:
                break
            n -= len(chunk)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if response.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if response.body:
            self.wfile.write(response.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], interface: HttpInterface) -> None:
        self.interface = interface
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-request are routine; a traceback on stderr for each is noise.
        log.debug("ClickHouse HTTP connection from %s failed", client_address, exc_info=True)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads parked on idle keep-alive connections, so stop() is prompt."""
        with self._open_lock:
            for sock in list(self._open):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@dataclass
class ServerHandle:
    """A running ClickHouse HTTP endpoint; ``stop()`` ends it (the store stays open)."""

    host: str
    port: int
    interface: HttpInterface
    _server: _Server
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_store(
    store: EmbeddedStore,
    host: str = "127.0.0.1",
    port: int = 8123,
    users: Users | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_query_bytes: int = DEFAULT_MAX_QUERY_BYTES,
    display_name: str | None = None,
    default_database: str | None = None,
    max_execution_time: float | None = DEFAULT_MAX_EXECUTION_TIME,
) -> ServerHandle:
    """Serve ``store`` over ClickHouse's HTTP interface from a background thread.

    ``users`` maps user name to ``(password, readonly)``; ``None`` means ClickHouse's default:
    one user ``default`` without password and with full rights (keep ``host`` on loopback
    then). ``port=0`` picks a free port (see ``handle.port``). Queries without a ``database``
    parameter run in ``default_database`` (the store's database unless given). Queries run
    at most ``max_execution_time`` seconds unless the request sets its own (``None``: no bound):
    while one runs, the owner's own inserts wait for the engine.
    """
    interface = HttpInterface(
        store,
        users,
        max_body_bytes=max_body_bytes,
        max_query_bytes=max_query_bytes,
        display_name=display_name,
        default_database=default_database,
        max_execution_time=max_execution_time,
    )
    server = _Server((host, port), interface)
    thread = threading.Thread(
        target=server.serve_forever, name="driftline-clickhouse-http", daemon=True
    )
    thread.start()
    bound_port = server.server_address[1]
    log.info("ClickHouse HTTP interface on http://%s:%d", host, bound_port)
    return ServerHandle(host, bound_port, interface, server, thread)


# -- CLI ----------------------------------------------------------------------------------


def _parse_user(spec: str, readonly: bool) -> tuple[str, tuple[str, bool]]:
    name, _, password = spec.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"expected NAME[:PASSWORD], got {spec!r}")
    return name, (password, readonly)


def _load_users(args: argparse.Namespace) -> dict[str, tuple[str, bool]] | None:
    users: dict[str, tuple[str, bool]] = {}
    if args.users_file:
        with open(args.users_file, encoding="utf-8") as f:
            for name, entry in json.load(f).items():
                users[name] = (str(entry.get("password", "")), bool(entry.get("readonly", False)))
    for spec in args.user or []:
        name, entry = _parse_user(spec, False)
        users[name] = entry
    for spec in args.readonly_user or []:
        name, entry = _parse_user(spec, True)
        users[name] = entry
    return users or None


def _serve_command(args: argparse.Namespace, settings: Any) -> int:
    if getattr(settings, "clickhouse_url", None):
        print("a ClickHouse server is configured (DRIFTLINE_CLICKHOUSE_URL): query it directly")
        return 2
    users = _load_users(args)
    if users is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print("refusing to serve the passwordless default user beyond loopback: pass --user")
        return 2
    store = EmbeddedStore(settings.chdb_path, settings.clickhouse_database)
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        handle = serve_store(
            store,
            args.host,
            args.port,
            users,
            max_body_bytes=args.max_body_mb * 1024 * 1024,
            max_execution_time=args.max_execution_time or None,
        )
        print(f"ClickHouse HTTP interface for {store.data_path} at {handle.url} (Ctrl-C stops)")
        stop.wait()
        handle.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        store.close()
    return 0


def add_clickhouse_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``driftline clickhouse serve`` on the CLI's subparsers.

    The handler is ``handler(args, settings)`` like the other commands.
    """
    parser = subparsers.add_parser(
        "clickhouse", help="the embedded ClickHouse store: serve it over ClickHouse's HTTP protocol"
    )
    actions = parser.add_subparsers(dest="clickhouse_action", required=True)
    serve = actions.add_parser("serve", help="serve the embedded store until stopped")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8123)
    serve.add_argument(
        "--user", action="append", metavar="NAME[:PASSWORD]", help="a read-write user"
    )
    serve.add_argument(
        "--readonly-user", action="append", metavar="NAME[:PASSWORD]", help="a readonly user"
    )
    serve.add_argument(
        "--users-file",
        help='JSON {"name": {"password": "...", "readonly": true}} (keeps passwords out of ps)',
    )
    serve.add_argument("--max-body-mb", type=int, default=DEFAULT_MAX_BODY_BYTES >> 20)
    serve.add_argument(
        "--max-execution-time",
        type=float,
        default=DEFAULT_MAX_EXECUTION_TIME,
        help="seconds a query may run unless it says otherwise (0: unbounded)",
    )
    serve.set_defaults(handler=_serve_command)
    return parser
