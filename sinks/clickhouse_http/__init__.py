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

from .cli import add_clickhouse_command
from .errors import ClickHouseError
from .interface import HttpInterface
from .protocol import Request, Response
from .server import ServerHandle, serve_store

__all__ = [
    "ClickHouseError",
    "HttpInterface",
    "Request",
    "Response",
    "ServerHandle",
    "add_clickhouse_command",
    "serve_store",
]
