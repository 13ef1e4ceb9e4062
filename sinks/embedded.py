"""Embedded ClickHouse (chdb), file-backed under the data dir: the default store.

What chdb 4.4 (engine 26.9) allows, measured on this project (see tests/sinks and the report):

* One engine per process, bound to one data path. A second path in the same process fails
  ("EmbeddedServer already initialized with path ...") until every connection to the first is
  closed; further connections to the *same* path share the engine.
* One process per data path: a second process fails on the ``status`` file lock (chdb prints
  "Cannot lock file .../status" and raises a bare BAD_ARGUMENTS). That is a configuration
  error, not an outage: the store raises :class:`StoreError` naming the fix (serve the path
  with ``driftline clickhouse serve`` and point the other processes at its URL).
* ``USE db`` is per connection, so the store keeps exactly one connection.
* Fastest insert: ``INSERT INTO t (...) SELECT * FROM Python(arrow_table)``; chdb reads the
  Arrow table in place. An Arrow IPC stream through ``Connection.send_insert(...,
  "ArrowStream")`` costs ~1.4x more CPU (serialise + parse); JSONEachRow ~5x more. Both
  honour ``insert_deduplication_token`` and block-hash dedup, but INSERT SELECT only with
  ``deduplicate_insert_select = 'enable_even_for_bad_queries'`` (or 'force_enable' + token):
  by default ClickHouse does not trust a SELECT to be repeatable and silently skips dedup.
  We also pin ``max_threads = 1`` so a replayed batch splits into the same blocks.
* A pandas DataFrame of dicts is read by ``Python(df)`` as ``Nullable(JSON)`` and cannot be
  inserted into a Map column; Arrow map arrays can.
* ``optimize_on_insert = 0`` cut ReplacingMergeTree insert time by ~1/3 (replays collapse on
  merge and under FINAL anyway).
* Rows older than a table's TTL at insert time are deleted by the next merge, seconds later.
"""

from __future__ import annotations

import errno
import fcntl
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa

from .base import DEFAULT_TTL_DAYS, Store, StoreError
from .chtypes import to_arrow_table

__all__ = ["EmbeddedStore"]

# chdb connections in one process share one engine; serialising calls keeps the worker's
# writer and the readers that share the store from interleaving a streaming insert with a query.
_ENGINE_LOCK = threading.RLock()
_open_paths: dict[str, int] = {}


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_table(table: str) -> str:
    parts = table.split(".")
    if not 1 <= len(parts) <= 2 or not all(p.replace("_", "a").isalnum() for p in parts):
        raise ValueError(f"not a table name: {table!r}")
    return table


def _params(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Query parameters as ClickHouse parses them: string values are in escaped (TSV) form,
    so a backslash, tab or newline in a value must be escaped to arrive as itself."""
    return {
        name: value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
        if isinstance(value, str)
        else value
        for name, value in (parameters or {}).items()
    }


def _locked_by_another_process(data_path: Path) -> bool:
    """True if another process holds ClickHouse's lock on ``data_path/status``.

    ClickHouse takes an exclusive ``flock`` on that file for as long as its engine runs; a
    non-blocking try tells whether someone else has it. Only meaningful when this process does
    not hold the engine itself (flock conflicts between file descriptors, even in one process).
    """
    status = data_path / "status"
    try:
        fd = open(status, "rb")  # noqa: SIM115 - closed below, lock released with it
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
    finally:
        fd.close()  # also releases our lock when we got it
    return False


def _rows(table: pa.Table) -> list[tuple]:
    columns = []
    for column in table.columns:
        values = column.to_pylist()
        if pa.types.is_map(column.type):
            # Arrow maps come back as key/value pair lists; callers expect dicts.
            values = [None if v is None else dict(v) for v in values]
        columns.append(values)
    return list(zip(*columns, strict=True))


class EmbeddedStore(Store):
    """chdb under ``data_path``; survives process restarts.

    >>> import tempfile, pathlib
    >>> with EmbeddedStore(pathlib.Path(tempfile.mkdtemp()), "demo") as store:
    ...     store.query("SELECT 1 + {x:UInt8}", {"x": 1})
    [(2,)]
    """

    #: "python": ``INSERT ... SELECT * FROM Python(arrow_table)``, reading the batch in place
    #: (measured ~1.4x cheaper than "arrowstream", an Arrow IPC stream via send_insert).
    insert_path: Literal["python", "arrowstream"] = "python"

    def __init__(
        self,
        data_path: Path,
        database: str = "driftline",
        *,
        ttl_days: int | None = DEFAULT_TTL_DAYS,
    ) -> None:
        super().__init__(database, ttl_days=ttl_days)
        import chdb  # imported here: loading the engine costs ~0.5 s, not needed by ServerStore

        self.data_path = Path(data_path).resolve()
        self.data_path.mkdir(parents=True, exist_ok=True)
        key = str(self.data_path)
        with _ENGINE_LOCK:
            other = [p for p, n in _open_paths.items() if n and p != key]
            if other:
                raise StoreError(
                    f"chdb runs one engine per process and it is open on {other[0]}; "
                    f"close that store before opening {key}"
                )
            try:
                self._conn = chdb.connect(key)
            except RuntimeError as exc:
                if _locked_by_another_process(self.data_path):
                    raise StoreError(
                        f"cannot open embedded ClickHouse at {key}: another process owns this "
                        "data dir (chdb allows one process per data dir). Serve it from that "
                        "process (DRIFTLINE_CLICKHOUSE_HTTP_PORT in the worker, or `driftline "
                        "clickhouse serve`) and point the other processes at its URL with "
                        "DRIFTLINE_CLICKHOUSE_URL=http://user:password@127.0.0.1:8123"
                    ) from exc
                raise StoreError(f"cannot open embedded ClickHouse at {key}: {exc}") from exc
            _open_paths[key] = _open_paths.get(key, 0) + 1
            self._conn.query(f"CREATE DATABASE IF NOT EXISTS {database}")
            self._conn.query(f"USE {database}")

    def _connection(self) -> Any:
        if self._conn is None:
            raise StoreError("store is closed")
        return self._conn

    @contextmanager
    def locked_connection(self) -> Iterator[Any]:
        """The chdb connection, held under the engine lock for the ``with`` block.

        For code that speaks to the engine directly (the ClickHouse HTTP interface in
        :mod:`driftline.sinks.clickhouse_http`). Leave the connection as you found it: its
        current database and settings are this store's.
        """
        with _ENGINE_LOCK:
            yield self._connection()

    def command(self, sql: str) -> None:
        with _ENGINE_LOCK:
            try:
                self._connection().query(sql)
            except Exception as exc:
                raise StoreError(f"{exc}") from exc

    def insert(
        self,
        table: str,
        columns: Mapping[str, Sequence[Any] | Any],
        *,
        dedup_token: str | None = None,
    ) -> int:
        _check_table(table)
        if not columns:
            return 0
        data = to_arrow_table(columns, self.column_types(table), table=table)
        if data.num_rows == 0:
            return 0
        names = ", ".join(f"`{name}`" for name in data.column_names)
        # optimize_on_insert=0: ReplacingMergeTree collapses duplicates on merge and FINAL
        # anyway; collapsing them inside each insert block too cost ~1/3 of insert time.
        settings = ["optimize_on_insert = 0"]
        if dedup_token:
            settings.append(f"insert_deduplication_token = {_quote(dedup_token)}")
        with _ENGINE_LOCK:
            try:
                if self.insert_path == "python":
                    self._insert_python(table, names, settings, data)
                else:
                    self._insert_arrow_stream(table, names, settings, data)
            except Exception as exc:
                raise StoreError(f"insert into {table} failed: {exc}") from exc
        return data.num_rows

    def _insert_python(self, table: str, names: str, settings: list[str], data: pa.Table) -> None:
        # chdb's Python() table function reads the Arrow table in place (found by its variable
        # name in this frame). INSERT SELECT is only deduplicated when ClickHouse trusts the
        # SELECT to be repeatable: one thread makes the blocks deterministic, and the setting
        # below vouches for it, so exact replays (same bytes or same token) are dropped as on
        # the ArrowStream path.
        _driftline_batch = data  # noqa: F841 - read by name by Python(_driftline_batch)
        settings = [
            *settings,
            "max_threads = 1",
            "deduplicate_insert_select = 'enable_even_for_bad_queries'",
        ]
        self._connection().query(
            f"INSERT INTO {table} ({names}) SETTINGS {', '.join(settings)} "
            "SELECT * FROM Python(_driftline_batch)"
        )

    def _insert_arrow_stream(
        self, table: str, names: str, settings: list[str], data: pa.Table
    ) -> None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        sql = f"INSERT INTO {table} ({names}) SETTINGS {', '.join(settings)}"
        with self._connection().send_insert(sql, "ArrowStream") as inserter:
            inserter.append(sink.getvalue().to_pybytes())
            inserter.finish()

    def query(self, sql: str, parameters: Mapping[str, Any] | None = None) -> list[tuple]:
        with _ENGINE_LOCK:
            try:
                result = self._connection().query(sql, "ArrowTable", params=_params(parameters))
            except Exception as exc:
                raise StoreError(f"{exc}") from exc
        return _rows(result)

    def query_df(self, sql: str, parameters: Mapping[str, Any] | None = None) -> pd.DataFrame:
        with _ENGINE_LOCK:
            try:
                return self._connection().query(sql, "DataFrame", params=_params(parameters))
            except Exception as exc:
                raise StoreError(f"{exc}") from exc

    def close(self) -> None:
        with _ENGINE_LOCK:
            conn, self._conn = getattr(self, "_conn", None), None
            if conn is None:
                return
            conn.close()
            key = str(self.data_path)
            _open_paths[key] -= 1
            if not _open_paths[key]:
                del _open_paths[key]

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.data_path)!r}, {self.database!r})"
