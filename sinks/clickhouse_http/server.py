"""Serving the interface with uvicorn from a background thread of the owner's process.

uvicorn (h11) speaks HTTP/1.1 — keep-alive, chunked bodies, ``Expect: 100-continue`` — and
runs :class:`~.app.ClickHouseApp` on an event loop of its own in a daemon thread, so the owner
(the worker, or ``driftline clickhouse serve``) keeps its main thread and its signal handlers.
Statements run on a small thread pool: they block on the engine lock.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..embedded import EmbeddedStore
from .app import ClickHouseApp
from .interface import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_EXECUTION_TIME,
    DEFAULT_MAX_QUERY_BYTES,
    HttpInterface,
)
from .users import Users

__all__ = ["ServerHandle", "serve_store"]

log = logging.getLogger(__name__)

# Statements in flight at once; more wait for a thread (they would wait for the engine lock
# anyway: one statement runs at a time).
_STATEMENT_THREADS = 16
# Idle keep-alive connections stay open this long: clickhouse-connect pools its connections,
# and a server closing one just as the client reuses it fails that request.
_KEEP_ALIVE_SECONDS = 300
# Request line and headers: GET requests carry the whole statement in the URL.
_MAX_HEAD_BYTES = 1024 * 1024
_STOP_SECONDS = 10.0


class _HalfCloseH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering a body cut short by the client's end of stream.

    uvicorn closes the connection when the client shuts down its sending side, so a client
    that sent fewer bytes than its ``Content-Length`` and waits for the answer gets none.
    Feeding the end of stream to h11 instead makes it report the truncated body, and uvicorn
    answers 400; the app sees the request end with a disconnect and runs nothing.
    """

    def eof_received(self) -> bool | None:
        if self.conn.their_state is h11.SEND_BODY and self.conn.our_state is h11.SEND_RESPONSE:
            self.conn.receive_data(b"")
            self.handle_events()  # h11 raises RemoteProtocolError: uvicorn answers 400, closes
            return True  # keep the transport open for that answer
        return None  # anywhere else: close, as uvicorn does


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here in the caller's thread: a taken port fails
    serve_store (uvicorn would exit the process), and port 0 has its number at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly (socket.create_server leaves proto 0): asyncio turns Nagle off
    # only on sockets that say TCP, and with Nagle on every response waits ~40 ms for the
    # client's delayed ACK (headers and body leave in separate writes).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class ServerHandle:
    """A running ClickHouse HTTP endpoint; ``stop()`` ends it (the store stays open)."""

    host: str
    port: int
    interface: HttpInterface
    _server: uvicorn.Server
    _thread: threading.Thread
    _executor: ThreadPoolExecutor

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving: idle connections close, requests in flight get up to 10 s to finish."""
        self._server.should_exit = True
        self._thread.join(timeout=_STOP_SECONDS + 5)
        # A statement still running holds the store's connection: wait for it, so the owner
        # can close the store after stop() (the engine's max_execution_time bounds this).
        self._executor.shutdown(wait=True, cancel_futures=True)

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
    sock = _listen(host, port)
    executor = ThreadPoolExecutor(_STATEMENT_THREADS, thread_name_prefix="driftline-clickhouse-sql")
    config = uvicorn.Config(
        ClickHouseApp(interface, executor),
        http=_HalfCloseH11Protocol,
        loop="asyncio",
        lifespan="off",
        log_config=None,  # the owner configures logging; uvicorn must not reconfigure it
        access_log=False,
        server_header=False,
        timeout_keep_alive=_KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=_STOP_SECONDS,
        h11_max_incomplete_event_size=_MAX_HEAD_BYTES,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="driftline-clickhouse-http", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            executor.shutdown(wait=False)
            raise RuntimeError("the ClickHouse HTTP interface did not start (see the log)")
        time.sleep(0.01)
    bound_port = sock.getsockname()[1]
    log.info("ClickHouse HTTP interface on http://%s:%d", host, bound_port)
    return ServerHandle(host, bound_port, interface, server, thread, executor)
