"""The ClickHouse HTTP interface: one request in, one statement on the store, one response out.

Independent of the HTTP server (:mod:`.app` serves it over ASGI): :meth:`HttpInterface.handle`
takes a :class:`~.protocol.Request` whose body is read in full and returns a
:class:`~.protocol.Response`. It blocks while the statement runs, so servers call it off their
event loop.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid

from ..embedded import EmbeddedStore
from .connection import EngineConnection
from .errors import ClickHouseError, is_engine_error
from .protocol import Request, Response, read_query, result_response
from .sessions import Session, Sessions
from .users import DEFAULT_USERS, Users, authenticate

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_EXECUTION_TIME",
    "DEFAULT_MAX_QUERY_BYTES",
    "HttpInterface",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024
DEFAULT_MAX_QUERY_BYTES = 1024 * 1024  # SQL text outside insert data (ClickHouse: 256 KiB)
# A query holds the engine (and so the worker's inserts) for as long as it runs: bounded unless
# the request sets max_execution_time itself.
DEFAULT_MAX_EXECUTION_TIME = 60.0

_OK = {"Content-Type": "text/html; charset=UTF-8"}


class HttpInterface:
    """Turns one HTTP request into one statement on the store's connection.

    ``users`` maps user name to ``(password, readonly)``; ``None`` is ClickHouse's default user
    (``default``, no password, full rights).
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
        self.users: dict[str, tuple[str, bool]] = dict(users or DEFAULT_USERS)
        self.max_body_bytes = max_body_bytes
        self.max_query_bytes = max_query_bytes
        self.max_execution_time = max_execution_time
        self.display_name = display_name or socket.gethostname()
        self.default_database = default_database or store.database
        self.sessions = Sessions(max_sessions)
        self.engine = EngineConnection(store)

    @property
    def version(self) -> str:
        return self.engine.version

    # -- entry points -----------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        """The response to ``request``; never raises (errors become ClickHouse errors)."""
        query_id = request.params.get("query_id") or str(uuid.uuid4())
        try:
            response = self.answer_without_engine(request) or self._authorised(request)
        except ClickHouseError as exc:
            response = self._error(exc)
        except Exception as exc:  # the server must keep serving whatever a request did
            if is_engine_error(exc):  # the engine refused: its code, message and name
                response = self._error(ClickHouseError.from_engine(exc))
            else:
                log.exception("ClickHouse HTTP request failed")
                response = self._error(ClickHouseError(1001, f"{type(exc).__name__}: {exc}"))
        response.headers.setdefault("X-ClickHouse-Server-Display-Name", self.display_name)
        response.headers.setdefault("X-ClickHouse-Query-Id", query_id)
        response.headers.setdefault("X-ClickHouse-Timezone", self.engine.timezone)
        return response

    def handle_error(self, exc: ClickHouseError) -> Response:
        """The response for an error found before the request reached :meth:`handle`."""
        response = self._error(exc)
        response.headers.setdefault("X-ClickHouse-Server-Display-Name", self.display_name)
        return response

    def answer_without_engine(self, request: Request) -> Response | None:
        """Health checks and unknown paths: answered without credentials or the engine, so a
        server can answer them while every engine slot waits on a long query."""
        path = request.path.rstrip("/")
        if path in ("/ping", "/replicas_status"):
            return Response(body=b"Ok.\n", headers=dict(_OK))
        if path != "":
            return Response(
                status=404,
                body=f"There is no handle {request.path}\n\nUse / or /ping for health checks.\n".encode(),
                headers={"Content-Type": "text/plain; charset=UTF-8"},
            )
        if request.method == "GET" and "query" not in request.params:
            return Response(body=b"Ok.\n", headers=dict(_OK))
        return None

    # -- one statement ----------------------------------------------------------------------

    def _authorised(self, request: Request) -> Response:
        params = request.params
        user, user_readonly = authenticate(self.users, params, request.headers)
        if params.get("compress") == "1" or params.get("decompress") == "1":
            raise ClickHouseError(
                48,
                "ClickHouse native block compression (compress=1/decompress=1) is not supported "
                "here; use HTTP compression (Content-Encoding / enable_http_compression=1)",
            )
        if request.headers.get("Content-Type", "").lower().startswith("multipart/form-data"):
            raise ClickHouseError(48, "multipart requests (external data) are not supported")
        with self.sessions.entered(params, user) as session:
            return self._execute(request, user_readonly, session)

    def _execute(self, request: Request, user_readonly: bool, session: Session | None) -> Response:
        query = read_query(
            request,
            session,
            user_readonly=user_readonly,
            formats=self.engine.formats,
            known_settings=self.engine.settings,
            default_database=self.default_database,
            max_body_bytes=self.max_body_bytes,
            max_query_bytes=self.max_query_bytes,
            max_execution_time=self.max_execution_time,
        )
        started = time.perf_counter()
        outcome = self.engine.run(query, session)
        return result_response(request, query, outcome, time.perf_counter() - started)

    def _error(self, exc: ClickHouseError) -> Response:
        return Response(
            status=exc.status,
            body=exc.body(self.engine.version),
            headers={
                "Content-Type": "text/plain; charset=UTF-8",
                "X-ClickHouse-Exception-Code": str(exc.code),
            },
        )
