"""Fixtures for the sinks tests: one real embedded ClickHouse (chdb) per module.

chdb runs one engine per process, bound to one data path, so every test of a module shares
the module's path and gets a fresh *database* in it instead of a fresh directory.
Set DRIFTLINE_TEST_CLICKHOUSE_URL to run the store tests against a ClickHouse server too.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from driftline.sinks import EmbeddedStore, ServerStore, Store


def server_url() -> str | None:
    """Read when used: the root conftest starts driftline's own ClickHouse HTTP endpoint and
    sets the variable after this module is imported."""
    return os.environ.get("DRIFTLINE_TEST_CLICKHOUSE_URL")



@pytest.fixture(scope="module")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("chdb")
    # Keep one connection open for the module so the engine is not restarted per test.
    keeper = EmbeddedStore(path, "keeper")
    try:
        yield path
    finally:
        keeper.close()


_databases = itertools.count()


def _database_for(request: pytest.FixtureRequest) -> str:
    # unique per test *and* per parameter (names truncated alike must not share a database)
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:50]
    return f"t{next(_databases)}_{name}_{os.getpid()}"


_SERVER_HTTP = pytest.param(
    "server-http",
    marks=pytest.mark.skipif(
        "not os.environ.get('DRIFTLINE_TEST_CLICKHOUSE_URL')",
        reason="DRIFTLINE_TEST_CLICKHOUSE_URL not set",
    ),
)
#: Every Store implementation. ServerStore also runs over clickhouse-connect's in-process chdb
#: backend: the real client code (insert contexts, Native format, typed results) on the real
#: engine, minus HTTP.
STORE_KINDS = ["embedded", "server-chdb", _SERVER_HTTP]
#: ... plus the embedded store's alternative insert path (used by test_store.py only).
ALL_STORE_KINDS = ["embedded", "embedded-arrowstream", "server-chdb", _SERVER_HTTP]


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, chdb_path: Path) -> Iterator[Store]:
    """A migrated store in a database of its own, for each Store implementation."""
    yield from make_store(request, chdb_path, request.param)


@pytest.fixture
def embedded_store(request: pytest.FixtureRequest, chdb_path: Path) -> Iterator[Store]:
    """For tests of code above the Store interface (writers, SQL views): one store is enough."""
    yield from make_store(request, chdb_path, "embedded")


def make_store(request: pytest.FixtureRequest, chdb_path: Path, kind: str) -> Iterator[Store]:
    database = _database_for(request)
    if kind.startswith("embedded"):
        s: Store = EmbeddedStore(chdb_path, database)
        if kind == "embedded-arrowstream":
            s.insert_path = "arrowstream"  # type: ignore[attr-defined]
    elif kind == "server-chdb":
        s = ServerStore(f"chdb://{chdb_path}", database)
    else:
        url = server_url()
        assert url
        s = ServerStore(url, database)
        s.command(f"DROP DATABASE IF EXISTS {database}")
    s.migrate()
    try:
        yield s
    finally:
        if kind == "server-http":  # the chdb databases go with the module's temp dir
            s.command(f"DROP DATABASE IF EXISTS {database}")
        s.close()


def now_ms() -> int:
    # Recent times on purpose: rows older than the tables' TTL are deleted by the next merge.
    return int(time.time() * 1000)


def make_predictions(
    n: int,
    *,
    start_ms: int | None = None,
    model_id: str = "m1",
    seed: int = 0,
    n_features: int = 20,
    step_ms: int = 250,
) -> list[dict]:
    rng = np.random.default_rng(seed)
    start = now_ms() - 3_600_000 if start_ms is None else start_ms
    feats = rng.normal(size=(n, n_features))
    regions, channels = ["eu", "us"], ["web", "app", "store"]
    out = []
    for i in range(n):
        label = "yes" if rng.random() < 0.5 else "no"
        out.append(
            {
                "event_id": f"{model_id}-p{seed}-{i}",
                "model_id": model_id,
                "model_version": "v1" if i % 3 else "v2",
                "event_time": start + i * step_ms,
                "numeric_features": {f"f{j}": float(feats[i, j]) for j in range(n_features)},
                "categorical_features": {"plan": "gold" if i % 2 else "basic"},
                "segments": {"region": regions[i % 2], "channel": channels[i % 3]},
                "prediction_label": label,
                "prediction_score": float(rng.random()),
                "prediction_value": None,
                "probabilities": {"yes": 0.6, "no": 0.4} if i % 4 else None,
            }
        )
    return out
