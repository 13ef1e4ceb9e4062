"""HTTP sessions: what ``SET`` and ``USE`` leave behind for the next request of a session.

A request with ``session_id`` runs in that session: its database (``USE``) and settings
(``SET``) apply to every later request of the session. Sessions belong to the user who opened
them, run one request at a time (a concurrent one gets ``Code: 373``, as in ClickHouse) and
expire after ``session_timeout`` seconds (default 60, at most 3600) without a request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from .errors import ClickHouseError

__all__ = ["Session", "Sessions"]

_DEFAULT_TIMEOUT = 60.0
_MAX_TIMEOUT = 3600.0


@dataclass
class Session:
    """One session's state; the engine connection itself is shared and put back per request."""

    user: str
    database: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    expires: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Sessions:
    """The open sessions, at most ``max_sessions`` (the least recently used go first)."""

    def __init__(self, max_sessions: int = 1000) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    @contextmanager
    def entered(self, params: Mapping[str, str], user: str) -> Iterator[Session | None]:
        """The request's session, held for the ``with`` block (``None`` without ``session_id``).

        Raises ``Code: 372`` for ``session_check=1`` on an unknown session, ``373`` for
        another user's session or one busy with a concurrent request.
        """
        session = self._find(params, user)
        if session is None:
            yield None
            return
        if not session.lock.acquire(blocking=False):
            raise ClickHouseError(
                373, f"Session {params['session_id']} is locked by a concurrent client"
            )
        try:
            yield session
        finally:
            session.lock.release()

    def _find(self, params: Mapping[str, str], user: str) -> Session | None:
        session_id = params.get("session_id")
        if not session_id:
            return None
        try:
            timeout = float(params.get("session_timeout", _DEFAULT_TIMEOUT))
        except ValueError as exc:
            raise ClickHouseError(36, "Invalid session timeout") from exc
        timeout = min(max(timeout, 0.0), _MAX_TIMEOUT)
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            session = self._sessions.get(session_id)
            if session is not None and session.user != user:
                # Sessions belong to the user who opened them (ClickHouse: SESSION_IS_LOCKED).
                raise ClickHouseError(373, f"Session {session_id} belongs to another user")
            if session is None:
                if params.get("session_check") == "1":
                    raise ClickHouseError(372, f"Session {session_id} not found")
                if len(self._sessions) >= self.max_sessions:
                    oldest = min(self._sessions, key=lambda k: self._sessions[k].expires)
                    del self._sessions[oldest]
                session = self._sessions[session_id] = Session(user=user)
            session.expires = now + timeout
            return session

    def _expire(self, now: float) -> None:
        # A session running a request outlives its timeout until the request ends.
        for key in [k for k, s in self._sessions.items() if s.expires < now]:
            if not self._sessions[key].lock.locked():
                del self._sessions[key]
