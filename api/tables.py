"""The API's side of ClickHouse: audit rows for ``rule_versions`` and a serialising wrapper.

``rule_versions`` is the audit trail of the control plane (compaction keeps only the latest
record per key, so the history lives here). It and ``alerts`` (written by the workers' rule
evaluator, read by ``GET /v1/alerts``) are defined by ``sinks/migrations/0004_alerts.sql``;
the API runs the migrations at startup so reads work before the first worker has.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from .control_plane import Record

__all__ = [
    "SerializedStore",
    "audit_row",
    "write_audit",
]

log = logging.getLogger(__name__)

def _public(record: Record) -> dict[str, Any]:
    """The record as audited: secrets and key hashes never leave the control plane."""
    data = dict(record.data)
    if record.kind == "subscription" and data.get("secret"):
        data["secret"] = "****"
    if record.kind == "apikey":
        data.pop("hash", None)
    return {**record.value(), "data": data}


def audit_row(record: Record, *, op: str, actor: str | None = None) -> dict[str, Any]:
    from datetime import UTC, datetime

    when = datetime.now(UTC) if op == "delete" else datetime.fromisoformat(record.updated_at)
    return {
        "kind": record.kind,
        "id": record.id,
        "version": record.version + (1 if op == "delete" else 0),
        "op": op,
        "updated_at": when,
        "updated_by": actor or record.updated_by,
        "value": json.dumps(_public(record), sort_keys=True),
    }


def write_audit(store: Any, record: Record, *, op: str, actor: str | None = None) -> bool:
    """Insert one audit row; False (logged) if the store refused: the control-plane write has
    already happened and stays the source of truth."""
    try:
        store.insert_rows("rule_versions", [audit_row(record, op=op, actor=actor)])
        return True
    except Exception:
        log.exception("audit row for %s v%d not written", record.key, record.version)
        return False


class SerializedStore:
    """A store whose calls run one at a time.

    FastAPI runs the sync endpoints on a thread pool; a clickhouse-connect client keeps one
    session id by default, and ClickHouse refuses concurrent queries in one session
    (SESSION_IS_LOCKED). The API's store traffic is light, so one lock is the simple answer.
    """

    _LOCKED = ("command", "insert", "insert_rows", "query", "query_df", "column_types")

    def __init__(self, store: Any) -> None:
        self._store = store
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in self._LOCKED:
            return attr

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return locked

    def __repr__(self) -> str:
        return f"SerializedStore({self._store!r})"
