"""A ClickHouse server through clickhouse-connect: same interface and DDL as the embedded store.

Kept small on purpose: clickhouse-connect already does pooling, compression and type
conversion. What this adds is the driftline contract: one reusable ``InsertContext`` per
(table, columns) as clickhouse-connect recommends for repeated batches, dedup tokens as an insert
setting, and retries with exponential backoff on connection-level errors only (a server
that rejects a statement will reject it again). Retrying an insert whose response was lost can
duplicate it; ReplacingMergeTree + FINAL (and the dedup token, when given) absorb that.
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

from .base import DEFAULT_TTL_DAYS, Store, StoreError

__all__ = ["ServerStore"]

log = logging.getLogger(__name__)
T = TypeVar("T")


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


_DATABASE_DDL = re.compile(r"\s*(CREATE|DROP)\s+DATABASE\b", re.IGNORECASE)


class ServerStore(Store):
    """ClickHouse server at ``url`` (``http[s]://user:password@host:port[/ignored]``).

    ``client_factory`` builds the clickhouse-connect client (default
    ``clickhouse_connect.get_client(dsn=url)``); ``sleep`` is injectable for tests.
    """

    def __init__(
        self,
        url: str,
        database: str = "driftline",
        *,
        ttl_days: int | None = DEFAULT_TTL_DAYS,
        retries: int = 5,
        backoff_seconds: float = 0.2,
        client_factory: Callable[[], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(database, ttl_days=ttl_days)
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

        self._transient: tuple[type[BaseException], ...] = (OperationalError, ConnectionError)
        self._errors: tuple[type[BaseException], ...] = (ClickHouseError,)
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self._sleep = sleep
        # tz_mode="aware": DateTime64(3, 'UTC') comes back tz-aware, as from the embedded store.
        dsn = _without_database(url)
        factory = client_factory or (
            # No session: the store is shared across threads, and ClickHouse refuses
            # concurrent queries within one session. The database is a per-query setting.
            lambda: clickhouse_connect.get_client(
                dsn=dsn, tz_mode="aware", autogenerate_session_id=False
            )
        )
        self._client = self._retry("connect", factory)
        # The database may not exist before the first migrate(): create it, then make it the
        # client's default so unqualified table names resolve there, as in the embedded store.
        self._retry(
            "create database", self._client.command, f"CREATE DATABASE IF NOT EXISTS {database}"
        )
        self._client.database = database
        self._contexts: dict[tuple[str, tuple[str, ...]], Any] = {}
        # An InsertContext holds the batch being sent: one insert at a time per store (the
        # worker's writer is the only heavy inserter; reads do not take this lock).
        self._insert_lock = threading.Lock()

    def _retry(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        delay = self.backoff_seconds
        for attempt in range(self.retries + 1):
            try:
                return fn(*args, **kwargs)
            except self._transient as exc:
                if attempt == self.retries:
                    raise StoreError(f"{what} failed after {attempt + 1} attempts: {exc}") from exc
                log.warning("%s failed (%s); retrying in %.2fs", what, exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, 10.0)
            except self._errors as exc:  # the server refused: retrying would not help
                raise StoreError(f"{what} failed: {exc}") from exc
        raise AssertionError("unreachable")

    def _client_or_raise(self) -> Any:
        if self._client is None:
            raise StoreError("store is closed")
        return self._client

    def command(self, sql: str) -> None:
        # CREATE/DROP DATABASE must not name the (maybe missing) database as the session's
        # default: ClickHouse refuses any query whose default database does not exist.
        use_database = _DATABASE_DDL.match(sql) is None
        self._retry("command", self._client_or_raise().command, sql, use_database=use_database)

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
        client = self._client_or_raise()
        key = (table, names)
        if key not in self._contexts:
            self._contexts[key] = self._retry(
                "insert context",
                client.create_insert_context,
                table=table,
                column_names=list(names),
                column_type_names=[types[name] for name in names],
                column_oriented=True,
                # see EmbeddedStore.insert: replays collapse on merge/FINAL anyway
                settings={"optimize_on_insert": 0},
            )
        context = self._contexts[key]
        if dedup_token:
            context.settings["insert_deduplication_token"] = dedup_token
        else:
            context.settings.pop("insert_deduplication_token", None)

        def send() -> None:
            context.data = data
            try:
                client.insert(context=context)
            finally:
                context.data = None

        self._retry(f"insert into {table}", send)

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple]:
        result = self._retry(
            "query", self._client_or_raise().query, sql, parameters=dict(parameters or {})
        )
        return [tuple(row) for row in result.result_rows]

    def query_df(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pd.DataFrame:
        return self._retry(
            "query", self._client_or_raise().query_df, sql, parameters=dict(parameters or {})
        )

    def close(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        self._contexts = {}
        if client is not None:
            client.close()

    def __repr__(self) -> str:
        return f"ServerStore(database={self.database!r})"
