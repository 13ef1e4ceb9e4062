"""Where a running worker serves its embedded store, so that readers find it by themselves.

chdb lets one process open a data dir. A worker started with ``DRIFTLINE_CLICKHOUSE_HTTP_PORT``
serves its store over ClickHouse's HTTP protocol and records the endpoint in the data dir
(``clickhouse-endpoint.json``: URL without credentials, database, pid, whether it needs a
password); ``driftline report`` and other readers use it while that process lives, and
otherwise open the embedded store, or say in one line what to pass.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "ENDPOINT_FILE",
    "ReaderStoreError",
    "clear_endpoint",
    "open_reader_store",
    "record_endpoint",
    "running_endpoint",
]

ENDPOINT_FILE = "clickhouse-endpoint.json"


class ReaderStoreError(Exception):
    """No store to read: the message is one line saying what to pass."""


def record_endpoint(data_dir: Path, url: str, database: str, users: list[str]) -> Path:
    """Write the endpoint record (no passwords: only which users exist)."""
    path = Path(data_dir) / ENDPOINT_FILE
    record = {"url": url, "database": database, "pid": os.getpid(), "users": sorted(users)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    tmp.replace(path)  # readers never see half a file
    return path


def clear_endpoint(data_dir: Path) -> None:
    """Remove this process's record (a record of another live process stays)."""
    path = Path(data_dir) / ENDPOINT_FILE
    record = _read(path)
    if record is not None and record.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def running_endpoint(data_dir: Path) -> dict[str, Any] | None:
    """The record of a process that still runs, else None (a killed worker leaves its file)."""
    record = _read(Path(data_dir) / ENDPOINT_FILE)
    if record is None or not _alive(int(record.get("pid", 0))):
        return None
    return record


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "url" in record else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True


def open_reader_store(settings: Any, url: str | None = None) -> Any:
    """A store to read: ``url``, else ``settings.clickhouse_url``, else the endpoint a running
    worker recorded in the data dir, else the embedded store. Raises :class:`ReaderStoreError`
    (one line) when the embedded store is held by another process that serves no endpoint."""
    from driftline.sinks import EmbeddedStore, ServerStore, StoreError
    from driftline.sinks.embedded import _locked_by_another_process, _open_paths

    database = settings.clickhouse_database
    url = url or settings.clickhouse_url
    # a reader never migrates: no DDL on connect, so a read-only user can read
    if url:
        return ServerStore(url, database, create_database=False)
    data_dir = getattr(settings, "data_dir", None)
    endpoint = running_endpoint(data_dir) if data_dir is not None else None
    if endpoint is not None:
        if endpoint.get("users"):
            host = endpoint["url"].split("://", 1)[-1]
            raise ReaderStoreError(
                f"the worker (pid {endpoint['pid']}) serving this data dir's store at "
                f"{endpoint['url']} needs a user ({', '.join(endpoint['users'])}): pass "
                f"--clickhouse-url http://USER:PASSWORD@{host}"
            )
        return ServerStore(
            endpoint["url"], endpoint.get("database", database), create_database=False
        )
    held = ReaderStoreError(
        f"the embedded store at {settings.chdb_path} is open in another process (a running "
        "worker?) that does not serve it: start that worker with "
        "DRIFTLINE_CLICKHOUSE_HTTP_PORT=8123 and this command finds it, or pass "
        "--clickhouse-url http://USER:PASSWORD@HOST:8123"
    )
    # Asked before chdb starts its engine on the path: it would fail the same, but noisily.
    # (Only meaningful while this process holds no engine: flock conflicts within a process.)
    if not any(_open_paths.values()) and _locked_by_another_process(Path(settings.chdb_path)):
        raise held
    try:
        return EmbeddedStore(settings.chdb_path, database)
    except StoreError as exc:
        if "another process owns" in str(exc):
            raise held from exc
        raise ReaderStoreError(str(exc).splitlines()[0]) from exc
