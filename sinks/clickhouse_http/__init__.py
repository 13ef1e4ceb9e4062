"""ClickHouse's HTTP interface over an :class:`~driftline.sinks.embedded.EmbeddedStore`.

chdb binds its data path to one process, so the API, analysts and Grafana cannot open the
worker's embedded store. Serving it over ClickHouse's own HTTP protocol lets every ClickHouse
client in: clickhouse-connect (and so :class:`~driftline.sinks.server.ServerStore`), curl,
Grafana's ClickHouse data source. See ``docs/clickhouse-http.md``.

Modules, one concern each:

* :mod:`.errors` — ClickHouse error codes, HTTP statuses, ``Code: N. DB::Exception`` bodies;
* :mod:`.sql` — just enough lexing to split a statement from its insert data;
* :mod:`.compression` — request bodies (bounded decompression) and compressed responses;
* :mod:`.users` — authentication and ``readonly`` levels;
* :mod:`.sessions` — ``session_id``: ``SET``/``USE`` kept per session;
* :mod:`.protocol` — a request read into the query to run, a result into a response;
* :mod:`.connection` — the store's one chdb connection, borrowed and put back per request;
* :mod:`.interface` — :class:`HttpInterface`, one request to one response, server-agnostic;
* :mod:`.app` — the ASGI app; :mod:`.server` — uvicorn in a background thread
  (:func:`serve_store`); :mod:`.cli` — ``driftline clickhouse serve``.

Example::

    handle = serve_store(store, "127.0.0.1", 8123, {"grafana": ("s3cret", True)})
    ...   # clickhouse_connect.get_client(host="127.0.0.1", port=8123, username="grafana", ...)
    handle.stop()
"""

import lazy_loader

# Names load on first use (PEP 562, through lazy_loader), so importing one light
# submodule (the CLI's parsers: `driftline --help`) does not import everything here.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "cli": ["add_clickhouse_command"],
        "errors": ["ClickHouseError"],
        "interface": ["HttpInterface"],
        "protocol": ["Request", "Response"],
        "server": ["ServerHandle", "serve_store"],
    },
)
