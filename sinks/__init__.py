"""driftline.sinks: ClickHouse stores (embedded chdb or a server), DDL migrations, batch writers.

Typical use by the worker::

    store = open_store(settings.clickhouse_url, settings.clickhouse_database, settings.chdb_path)
    store.migrate()
    sink = Sink(store, max_rows=50_000, max_seconds=1.0)
    sink.add("predictions", decoded_prediction_events)   # row dicts, times in epoch ms
    sink.flush_all()                                      # once per worker batch

Tables are ReplacingMergeTree keyed on the event identity: read with ``FINAL`` (or the
``*_dedup`` views) for exact counts under replays.
"""

from .base import Migration, Store, StoreError, load_migrations
from .chtypes import dense_map
from .embedded import EmbeddedStore
from .server import ServerStore
from .store import open_store
from .tables import TABLES, TableSpec, columns_for, joined_label
from .writer import BatchWriter, Sink

__all__ = [
    "Store",
    "StoreError",
    "EmbeddedStore",
    "ServerStore",
    "open_store",
    "Migration",
    "load_migrations",
    "TABLES",
    "TableSpec",
    "columns_for",
    "dense_map",
    "joined_label",
    "BatchWriter",
    "Sink",
]
