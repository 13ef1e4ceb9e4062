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

import lazy_loader

# Names load on first use (PEP 562, through lazy_loader), so importing one light
# submodule (the CLI's parsers: `driftline --help`) does not import everything here.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "base": ["Migration", "Store", "StoreError", "load_migrations"],
        "chtypes": ["dense_map"],
        "embedded": ["EmbeddedStore"],
        "server": ["ServerStore"],
        "store": ["open_store"],
        "tables": ["TABLES", "TableSpec", "columns_for", "joined_label"],
        "writer": ["BatchWriter", "Sink"],
    },
)
