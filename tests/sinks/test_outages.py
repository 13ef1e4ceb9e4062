"""The server store through a ClickHouse outage, against the real HTTP endpoint driftline serves
(``driftline clickhouse serve`` in a process of its own, killed and restarted mid-test).

Checked: the store opens while the server is down; failures are classified (StoreUnavailable
for an unreachable server, StoreError for statements the server refuses); ``ping`` follows the
server; inserts resume after the restart; a batch retried after its response was lost, or
replayed after the outage, is stored once (raw count with the dedup token, and under FINAL).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from driftline.sinks import ServerStore, StoreError
from driftline.sinks.base import StoreUnavailable
from driftline.sinks.resilience import wait_until
from driftline.sinks.server import is_transient
from support.clickhouse import StoreServer
from support.proxy import FaultyProxy

from .conftest import make_predictions


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[StoreServer]:
    ep = StoreServer(tmp_path / "served")
    try:
        yield ep
    finally:
        ep.kill(signal.SIGTERM)


def count(store: ServerStore, final: bool) -> int:
    return store.query(f"SELECT count() FROM predictions{' FINAL' if final else ''}")[0][0]


def test_store_rides_out_a_server_restart(endpoint: StoreServer) -> None:
    # Opened before the server exists: no error until something is asked of it.
    store = ServerStore(endpoint.url(), "outage", ttl_days=None, backoff_seconds=0.05)
    try:
        assert store.ping() is False
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="unavailable|not reachable"):
            store.migrate()
        assert time.monotonic() - started < 3, "migrate() must fail fast while the store is down"
        with pytest.raises(StoreUnavailable):
            store.query("SELECT 1")

        endpoint.start()
        assert wait_until(store.ping, what="the endpoint", interval_s=0.1, timeout_s=60)
        store.migrate()
        first = make_predictions(150, seed=1)
        store.insert_rows("predictions", first, dedup_token="batch-1")

        # Refusals are permanent: not StoreUnavailable, and not retried.
        for bad in ("SELEC 1", "SELECT 1 + 'a'", "SELECT CAST('abc' AS UInt8)"):
            with pytest.raises(StoreError) as refused:
                store.query(bad)
            assert not isinstance(refused.value, StoreUnavailable), refused.value

        endpoint.kill()  # a crash: SIGKILL, no goodbye
        assert store.ping() is False
        second = make_predictions(120, seed=2)
        with pytest.raises(StoreUnavailable):
            store.insert_rows("predictions", second, dedup_token="batch-2")
        with pytest.raises(StoreUnavailable):
            store.migrate()

        endpoint.start()  # same data dir, same port
        assert wait_until(store.ping, what="the endpoint", interval_s=0.1, timeout_s=60)
        store.insert_rows("predictions", second, dedup_token="batch-2")  # the caller's retry
        store.insert_rows("predictions", first, dedup_token="batch-1")  # a replay after restart
        assert count(store, final=False) == 270  # the token dropped the replay
        assert count(store, final=True) == 270
        assert store.query("SELECT uniqExact(event_id) FROM predictions")[0][0] == 270
    finally:
        store.close()


def test_retried_insert_whose_answer_was_lost_is_stored_once(endpoint: StoreServer) -> None:
    endpoint.start()
    proxy = FaultyProxy(endpoint.port)
    store = ServerStore(endpoint.url(proxy.port), "lost_answers", ttl_days=None,
                        backoff_seconds=0.05)  # fmt: skip
    try:
        store.migrate()
        store.insert_rows("predictions", make_predictions(50, seed=3), dedup_token="warm-up")
        with_token = make_predictions(80, seed=4)
        proxy.lose = 1
        store.insert_rows("predictions", with_token, dedup_token="batch-4")
        assert proxy.lost == 1
        assert count(store, final=False) == 130  # the second copy was dropped on insert
        without_token = make_predictions(60, seed=5)
        proxy.lose = 1
        store.insert_rows("predictions", without_token)
        assert proxy.lost == 2
        assert count(store, final=True) == 190  # ReplacingMergeTree collapses any second copy
    finally:
        store.close()
        proxy.close()


def test_a_data_dir_owned_by_another_process_is_a_configuration_error(
    endpoint: StoreServer,
) -> None:
    endpoint.start()
    script = (
        "import sys\n"
        "from driftline.sinks import EmbeddedStore\n"
        "from driftline.sinks.base import StoreUnavailable\n"
        "try:\n"
        "    EmbeddedStore(sys.argv[1] + '/clickhouse', 'driftline')\n"
        "except Exception as exc:\n"
        "    print('CLASS', type(exc).__name__, isinstance(exc, StoreUnavailable))\n"
        "    print('MESSAGE', exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(endpoint.data_dir)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "CLASS StoreError False" in result.stdout, result.stdout + result.stderr
    assert "another process owns this data dir" in result.stdout
    assert "driftline clickhouse serve" in result.stdout


def test_classification_of_driver_errors() -> None:
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    assert is_transient(OperationalError("Error executing HTTP request"))
    assert is_transient(ConnectionRefusedError())
    assert is_transient(DatabaseError("overloaded", code=202))
    assert is_transient(DatabaseError("HTTP driver received HTTP status 502"))
    assert not is_transient(DatabaseError("syntax", code=62))
    assert not is_transient(DatabaseError("auth", code=516))
    assert not is_transient(DatabaseError("HTTP driver received HTTP status 500"))
    assert not is_transient(ValueError("bad column"))
