"""A ClickHouse server through clickhouse-connect: same interface and DDL as the embedded store.

Kept small on purpose: clickhouse-connect already does pooling, compression and type
conversion. What this adds is the driftline contract:

* one reusable ``InsertContext`` per (table, columns), as clickhouse-connect recommends for
  repeated batches, and dedup tokens as an insert setting;
* a lazy connection: opening the store never fails because the server is down; the first
  operation (or ``ping()``) connects;
* failures classified: :class:`StoreUnavailable` when the server is unreachable, timing out,
  overloaded or restarting (the same call may work later), :class:`StoreError` when it
  refused the statement (bad SQL, type mismatch, bad credentials: retrying cannot help);
* a short retry budget for transient failures (a blip, a restart in progress), with delays
  from :func:`~driftline.sinks.resilience.backoff_delays`; past it the caller gets
  ``StoreUnavailable`` and waits for the outage with ``ping()`` and ``wait_until``.

Retrying an insert whose response was lost can send it twice. The dedup token
(``insert_deduplication_token``, honoured by the tables created with
``non_replicated_deduplication_window``) drops the second copy; ReplacingMergeTree on the event
id collapses it under ``FINAL`` in any case.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
import pyarrow as pa

from .base import DEFAULT_TTL_DAYS, Store, StoreError, StoreUnavailable
from .resilience import backoff_delays

__all__ = ["ServerStore", "is_transient"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: ClickHouse error codes that describe the server's state, not the statement: overload,
#: timeouts, network trouble between servers, a replica or Keeper away, a shutdown in progress.
TRANSIENT_CODES = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        225,  # NO_ZOOKEEPER
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY (a replica lost Keeper)
        252,  # TOO_MANY_PARTS
        279,  # ALL_CONNECTION_TRIES_FAILED
        319,  # UNKNOWN_STATUS_OF_INSERT (retry with the same dedup token)
        394,  # QUERY_WAS_CANCELLED (the server is shutting down)
        439,  # CANNOT_SCHEDULE_TASK
        745,  # SERVER_OVERLOADED
        999,  # KEEPER_EXCEPTION
    }
)
#: HTTP statuses without a ClickHouse error code that a proxy or a restarting server answers.
TRANSIENT_HTTP_STATUSES = frozenset({429, 502, 503, 504})
_HTTP_STATUS = re.compile(r"HTTP status (\d{3})")


class _DropConnectionNoise(logging.Filter):
    """Drops the warnings clickhouse-connect and urllib3 log for every failed connection: the
    store reports those itself, classified and at the caller's pace (``StoreUnavailable``,
    ``wait_until``), so an outage costs a line per interval instead of one per request."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if record.name.startswith("clickhouse_connect"):
            return not message.startswith("Unexpected Http Driver Exception")
        # urllib3's own retry of a refused or reset connection (clickhouse-connect's requests)
        return not (message.startswith("Retrying (") and "connection broken" in message)


_NOISE_FILTER = _DropConnectionNoise()


def _quiet_driver_logs() -> None:
    for name in ("clickhouse_connect.driver._backend.http_sync", "urllib3.connectionpool"):
        logger = logging.getLogger(name)
        if _NOISE_FILTER not in logger.filters:
            logger.addFilter(_NOISE_FILTER)


def is_transient(exc: BaseException) -> bool:
    """True if ``exc`` (from clickhouse-connect or the network) says "try again later"."""
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    if isinstance(exc, OperationalError | ConnectionError | TimeoutError):
        return True  # network errors, and 429/503/504 after clickhouse-connect's own retries
    if isinstance(exc, DatabaseError):
        code = getattr(exc, "code", None)
        if code is not None:
            return code in TRANSIENT_CODES
        status = _HTTP_STATUS.search(str(exc))
        return status is not None and int(status[1]) in TRANSIENT_HTTP_STATUSES
    return False


def _python_column(values: Any, ch_type: str) -> list[Any]:
    """Plain Python values clickhouse-connect writes natively into ``ch_type``."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        values = values.to_pylist()
        if ch_type.startswith("Map("):  # Arrow maps come back as (key, value) pair lists
            values = [None if v is None else dict(v) for v in values]
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "M":
            # DateTime64(3) accepts raw ticks: epoch ms, like the event contract.
            values = values.astype("datetime64[ms]").astype(np.int64)
        values = values.tolist()
    else:
        values = list(values)
    if ch_type.startswith("Map("):
        return [{} if v is None else v for v in values]
    if ch_type.startswith("Array("):
        return [[] if v is None else list(v) for v in values]
    if "UInt8" in ch_type:
        return [None if v is None else int(v) for v in values]
    return values


def _without_database(url: str) -> str:
    """Drop a ``/database`` path from an http(s) URL: the client must connect before
    ``migrate()`` creates the database, which comes from ``database`` (the settings'
    ``clickhouse_database``), not from the URL."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https", "clickhouse", "clickhouses"):
        return urlunsplit(parts._replace(path=""))
    return url


def _host_of(url: str) -> str:
    """``host:port`` of ``url`` for messages (never the credentials)."""
    parts = urlsplit(url)
    if parts.hostname is None:
        return parts.path or url.split("://", 1)[-1].rsplit("@", 1)[-1]
    return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname


_DATABASE_DDL = re.compile(r"\s*(CREATE|DROP)\s+DATABASE\b", re.IGNORECASE)


class ServerStore(Store):
    """ClickHouse server at ``url`` (``http[s]://user:password@host:port[/ignored]``).

    Nothing is sent until the first operation: a server that is down when the store is opened
    is not an error. Each operation retries transient failures ``retries`` times (delays from
    ``backoff_seconds`` doubling, at most 5 s) and then raises :class:`StoreUnavailable`.
    ``client_factory`` builds the clickhouse-connect client (default
    ``clickhouse_connect.get_client(dsn=url)``); ``sleep`` is injectable for tests.

    ``create_database``: create the database on connect, so a writer that inserts before its
    first ``migrate()`` finds it. Readers pass False (``driftline lineage``, the API): a
    read-only user is refused any DDL, and ``migrate()`` creates the database itself anyway.
    """

    def __init__(
        self,
        url: str,
        database: str = "driftline",
        *,
        ttl_days: int | None = DEFAULT_TTL_DAYS,
        retries: int = 3,
        backoff_seconds: float = 0.2,
        ping_timeout: float = 2.0,
        client_factory: Callable[[], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        create_database: bool = True,
    ) -> None:
        super().__init__(database, ttl_days=ttl_days)
        self.create_database = create_database
        import clickhouse_connect

        _quiet_driver_logs()
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self.ping_timeout = ping_timeout
        self._sleep = sleep
        self._where = _host_of(url)
        # tz_mode="aware": DateTime64(3, 'UTC') comes back tz-aware, as from the embedded store.
        dsn = _without_database(url)
        self._factory = client_factory or (
            # No session: the store is shared across threads, and ClickHouse refuses
            # concurrent queries within one session. The database is a per-query setting.
            lambda: clickhouse_connect.get_client(
                dsn=dsn, tz_mode="aware", autogenerate_session_id=False
            )
        )
        self._client: Any = None
        self._closed = False
        self._connect_lock = threading.Lock()
        self._contexts: dict[tuple[str, tuple[str, ...]], Any] = {}
        # An InsertContext holds the batch being sent: one insert at a time per store (the
        # worker's writer is the only heavy inserter; reads do not take this lock).
        self._insert_lock = threading.Lock()

    # -- connection and failure handling ------------------------------------------------

    def _connect(self) -> Any:
        """The client, connecting first if needed (one attempt; errors as clickhouse-connect
        raised them, for the caller to classify)."""
        with self._connect_lock:
            if self._closed:
                raise StoreError("store is closed")
            if self._client is None:
                client = self._factory()
                try:
                    # The database may not exist before the first migrate(): create it, then
                    # make it the client's default so unqualified table names resolve there,
                    # as in the embedded store.
                    if self.create_database:
                        client.command(
                            f"CREATE DATABASE IF NOT EXISTS {self.database}", use_database=False
                        )
                except BaseException:
                    client.close()
                    raise
                client.database = self.database
                self._client = client
            return self._client

    def _failure(self, what: str, exc: BaseException, attempts: int) -> StoreError:
        if is_transient(exc):
            return StoreUnavailable(
                f"{what} failed after {attempts} attempts: ClickHouse at {self._where} is "
                f"unavailable: {exc}"
            )
        return StoreError(f"{what} failed: {exc}")

    def _retry(self, what: str, fn: Callable[[Any], T]) -> T:
        """``fn(client)``, retried on transient failures within the store's small budget."""
        from clickhouse_connect.driver.exceptions import ClickHouseError

        delays = backoff_delays(self.backoff_seconds, max(self.backoff_seconds, 5.0))
        for attempt in range(1, self.retries + 2):
            try:
                return fn(self._connect())
            except (ClickHouseError, OSError) as exc:
                if not is_transient(exc) or attempt > self.retries:
                    raise self._failure(what, exc, attempt) from exc
                delay = next(delays)
                log.debug("%s failed (%s); retrying in %.2fs", what, exc, delay)
                self._sleep(delay)
            except (ValueError, TypeError) as exc:  # the driver could not convert the batch
                raise StoreError(f"{what} failed: {exc}") from exc
        raise AssertionError("unreachable")

    def ping(self) -> bool:
        """True if the server answers ``/ping`` within ``ping_timeout`` (connecting first if
        the store has not yet). One attempt, never raises."""
        try:
            client = self._connect()
            return bool(client.ping(timeout=self.ping_timeout))
        except Exception as exc:
            log.debug("ping of ClickHouse at %s failed: %s", self._where, exc)
            return False

    # -- the interface ----------------------------------------------------------------------

    def command(self, sql: str) -> None:
        # CREATE/DROP DATABASE must not name the (maybe missing) database as the session's
        # default: ClickHouse refuses any query whose default database does not exist.
        use_database = _DATABASE_DDL.match(sql) is None
        self._retry("command", lambda client: client.command(sql, use_database=use_database))

    def insert(
        self,
        table: str,
        columns: Mapping[str, Sequence[Any] | Any],
        *,
        dedup_token: str | None = None,
    ) -> int:
        if not columns:
            return 0
        types = self.column_types(table)
        unknown = [name for name in columns if name not in types]
        if unknown:
            raise ValueError(f"{table} has no column(s) {unknown}; known: {list(types)}")
        names = tuple(columns)
        data = [_python_column(columns[name], types[name]) for name in names]
        n = len(data[0])
        if any(len(col) != n for col in data):
            raise ValueError(f"ragged batch for {table}: {[len(c) for c in data]}")
        if n == 0:
            return 0
        with self._insert_lock:
            self._insert(table, names, data, types, dedup_token)
        return n

    def _insert(
        self,
        table: str,
        names: tuple[str, ...],
        data: list[list[Any]],
        types: Mapping[str, str],
        dedup_token: str | None,
    ) -> None:
        key = (table, names)
        if key not in self._contexts:
            self._contexts[key] = self._retry(
                "insert context",
                lambda client: client.create_insert_context(
                    table=table,
                    column_names=list(names),
                    column_type_names=[types[name] for name in names],
                    column_oriented=True,
                    # see EmbeddedStore.insert: replays collapse on merge/FINAL anyway
                    settings={"optimize_on_insert": 0},
                ),
            )
        context = self._contexts[key]
        # The same token on every attempt: a retry of a batch that did land is dropped.
        if dedup_token:
            context.settings["insert_deduplication_token"] = dedup_token
        else:
            context.settings.pop("insert_deduplication_token", None)

        def send(client: Any) -> None:
            context.data = data
            try:
                client.insert(context=context)
            finally:
                context.data = None

        self._retry(f"insert into {table}", send)

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple]:
        params = dict(parameters or {})
        result = self._retry("query", lambda client: client.query(sql, parameters=params))
        return [tuple(row) for row in result.result_rows]

    def query_df(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pd.DataFrame:
        params = dict(parameters or {})
        return self._retry("query", lambda client: client.query_df(sql, parameters=params))

    def close(self) -> None:
        with self._connect_lock:
            self._closed = True
            client, self._client = self._client, None
            self._contexts = {}
        if client is not None:
            client.close()

    def __repr__(self) -> str:
        return f"ServerStore({self._where!r}, database={self.database!r})"
