"""Open the configured store: a ClickHouse server when a URL is set, else embedded chdb."""

from __future__ import annotations

from pathlib import Path

from .base import DEFAULT_TTL_DAYS, Store, StoreError, StoreUnavailable
from .embedded import EmbeddedStore
from .server import ServerStore

__all__ = [
    "Store",
    "StoreError",
    "StoreUnavailable",
    "EmbeddedStore",
    "ServerStore",
    "open_store",
]


def open_store(
    clickhouse_url: str | None,
    database: str,
    data_path: Path,
    *,
    ttl_days: int | None = DEFAULT_TTL_DAYS,
) -> Store:
    """The store for ``settings.clickhouse_url``, ``settings.clickhouse_database`` and
    ``settings.chdb_path``. Does not migrate: call ``store.migrate()`` once at startup.
    Opening a server store does not connect, so it works while the server is down; see
    ``Store.ping`` and :func:`driftline.sinks.resilience.wait_until` to wait for it.

    >>> import tempfile, pathlib
    >>> store = open_store(None, "demo_open", pathlib.Path(tempfile.mkdtemp()))
    >>> store
    EmbeddedStore(..., 'demo_open')
    >>> store.close()
    """
    if clickhouse_url:
        return ServerStore(clickhouse_url, database, ttl_days=ttl_days)
    return EmbeddedStore(data_path, database, ttl_days=ttl_days)
