"""Browser sessions for the dashboard: a login with an API key gives an opaque session cookie.

The cookie holds only a random session id (HttpOnly, SameSite=Strict); the key stays in this
process's memory and is checked again on every request, so a revoked key loses its sessions at
once. Requests that change something must also send the session's CSRF token in
``X-CSRF-Token`` (the pages carry it in a ``<meta>``): SameSite already keeps other sites'
requests cookie-less, the token covers older browsers and same-site subdomains.

Sessions live in memory: restarting the API logs everyone out, which is acceptable for a
dashboard and keeps keys off disk.

>>> store = SessionStore(ttl_s=60)
>>> sid, session = store.create("dl_abc_def")
>>> store.get(sid).token, store.get("nope")
('dl_abc_def', None)
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request, status

__all__ = ["COOKIE", "CSRF_HEADER", "Session", "SessionStore", "session_token"]

COOKIE = "driftline_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Session:
    token: str
    csrf: str
    expires: float


class SessionStore:
    """Session id -> :class:`Session`, expiring ``ttl_s`` after login."""

    def __init__(self, ttl_s: float = 8 * 3600, max_sessions: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, token: str) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(token, secrets.token_urlsafe(32), time.monotonic() + self.ttl_s)
        with self._lock:
            self._expire()
            if len(self._sessions) >= self.max_sessions:
                # Drop the oldest: a flood of logins must not grow memory without bound.
                oldest = min(self._sessions, key=lambda k: self._sessions[k].expires)
                del self._sessions[oldest]
            self._sessions[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is not None and session.expires < time.monotonic():
                del self._sessions[sid]
                return None
            return session

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._sessions.pop(sid or "", None)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [k for k, s in self._sessions.items() if s.expires < now]:
            del self._sessions[sid]


def session_token(request: Request) -> str | None:
    """The API key behind the request's session cookie, or None without a (live) session.

    403 for a state-changing request whose ``X-CSRF-Token`` is missing or wrong."""
    sessions: SessionStore | None = getattr(request.app.state, "sessions", None)
    session = sessions.get(request.cookies.get(COOKIE)) if sessions is not None else None
    if session is None:
        return None
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"missing or wrong {CSRF_HEADER} header: a request made with the dashboard's "
                "session cookie must carry the page's CSRF token",
            )
    return session.token
