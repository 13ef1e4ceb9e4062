"""ServerStore specifics: retries with backoff on connection errors, none on refusals.

The store is exercised end to end by the shared store tests (``server-chdb``: the real
clickhouse-connect client on its in-process chdb backend). Here a proxy around that real
client drops the first calls like a flaky network would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import OperationalError
from driftline.sinks import ServerStore, StoreError

from .conftest import now_ms


class Flaky:
    """Forwards to a real client; the next ``failures`` calls raise OperationalError."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.failures = 0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.failures:
                self.failures -= 1
                raise OperationalError("connection reset by peer (simulated)")
            return target(*args, **kwargs)

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_client", "failures", "calls"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._client, name, value)


@pytest.fixture
def flaky(chdb_path: Path):
    sleeps: list[float] = []
    proxy = Flaky(clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}", tz_mode="aware"))
    store = ServerStore(
        "unused",
        "flaky",
        retries=3,
        backoff_seconds=0.1,
        client_factory=lambda: proxy,
        sleep=sleeps.append,
    )
    store.migrate()
    try:
        yield store, proxy, sleeps
    finally:
        proxy.failures = 0
        store.command("DROP DATABASE IF EXISTS flaky")
        store.close()


def test_transient_errors_are_retried_with_backoff(flaky) -> None:
    store, proxy, sleeps = flaky
    proxy.failures = 3
    assert store.query("SELECT 1") == [(1,)]
    assert sleeps == [0.1, 0.2, 0.4]
    proxy.failures = 2
    store.insert_rows(
        "outcomes",
        [{"event_id": "o", "prediction_id": "p", "model_id": "m", "event_time": now_ms()}],
    )
    assert store.query("SELECT event_id FROM outcomes") == [("o",)]


def test_gives_up_after_the_retry_budget(flaky) -> None:
    store, proxy, sleeps = flaky
    proxy.failures = 10
    with pytest.raises(StoreError, match="after 4 attempts"):
        store.command("SELECT 1")
    assert len(sleeps) == 3


def test_refusals_are_not_retried(flaky) -> None:
    store, proxy, sleeps = flaky
    calls = proxy.calls
    with pytest.raises(StoreError, match="UNKNOWN_TABLE|does not exist|Unknown table"):
        store.query("SELECT * FROM no_such_table")
    assert proxy.calls == calls + 1 and sleeps == []


def test_database_in_the_url_is_not_used_to_connect() -> None:
    from driftline.sinks.server import _without_database

    assert _without_database("http://u:p@h:8123/driftline?x=1") == "http://u:p@h:8123?x=1"
    assert _without_database("https://h/db") == "https://h"
    assert _without_database("chdb:///var/lib/chdb") == "chdb:///var/lib/chdb"


class Recording(Flaky):
    """Forwards to a real client and records the SQL of every command it is sent."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        object.__setattr__(self, "sent", [])

    def __getattr__(self, name: str) -> Any:
        call = super().__getattr__(name)
        if name != "command":
            return call

        def command(sql: str, *args: Any, **kwargs: Any) -> Any:
            self.sent.append(sql)
            return call(sql, *args, **kwargs)

        return command


def test_a_reader_store_sends_no_ddl_and_migrate_still_creates_the_database(
    chdb_path: Path,
) -> None:
    """``create_database=False`` (readers, the API: a read-only user is refused DDL) connects
    without CREATE DATABASE; its migrate() creates the database itself."""
    recorder = Recording(clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}", tz_mode="aware"))
    reader = ServerStore("unused", "reader_db", client_factory=lambda: recorder,
                         create_database=False)  # fmt: skip
    try:
        with pytest.raises(StoreError, match="reader_db does not exist"):  # reads, nothing else
            reader.query("SELECT 1")
        assert recorder.sent == []
        reader.migrate()  # the API's store, with a user allowed to
        assert recorder.sent[0] == "CREATE DATABASE IF NOT EXISTS reader_db"
        assert reader.query("SELECT count() FROM schema_migrations FINAL")[0][0] > 0
    finally:
        reader.command("DROP DATABASE IF EXISTS reader_db")
        reader.close()
    writer = Recording(clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}", tz_mode="aware"))
    store = ServerStore("unused", "writer_db", client_factory=lambda: writer)
    try:
        store.query("SELECT 1")
        assert writer.sent == ["CREATE DATABASE IF NOT EXISTS writer_db"]
    finally:
        store.command("DROP DATABASE IF EXISTS writer_db")
        store.close()
