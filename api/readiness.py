"""What ``/ready`` knows about the ClickHouse store: reachable now (a cached ping) and migrated.

The API starts before its dependencies if it must (``driftline api`` waits for them in the
background); ``/ready`` says which one is missing, and says so again when one goes away later.
A probe storm costs at most one ping per ``ttl_s``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["StoreReadiness"]


class StoreReadiness:
    """The store's part of ``/ready``: ``problem()`` is None when it answers and is migrated."""

    def __init__(self, store: Any, *, ttl_s: float = 1.0, migrated: bool = False) -> None:
        self.store = store
        self.ttl_s = ttl_s
        #: Set once ``store.migrate()`` succeeded (the tables the API reads exist).
        self.migrated = migrated
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._up = False

    def reachable(self) -> bool:
        with self._lock:  # concurrent probes share one ping
            now = time.monotonic()
            if self._checked_at is None or now - self._checked_at >= self.ttl_s:
                self._up = bool(self.store.ping())
                self._checked_at = time.monotonic()
            return self._up

    def problem(self) -> str | None:
        if not self.reachable():
            return f"ClickHouse store unreachable ({self.store!r})"
        if not self.migrated:
            return "ClickHouse store reachable, migrations not applied yet"
        return None

    def migrate(self) -> bool:
        """Apply the migrations; True once done (for ``wait_until``; raises while the store
        is down)."""
        if not self.migrated:
            self.store.migrate()
            self.migrated = True
        return True
