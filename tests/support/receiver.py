"""A real webhook receiver: a threaded HTTP server on 127.0.0.1 that checks every signature and
dedups on the event id, as docs/delivery.md tells subscribers to."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from driftline.delivery import verify

WAIT = 30.0  # upper bound for "eventually": a failure shows as a timeout, never a pass


class WebhookReceiver:
    """Per path: a secret (default ``secret``), a script of statuses to answer before 200, and
    an optional Event the handler waits on before answering.

    ``requests`` holds every request (signature checked), ``accepted`` the event ids answered
    200 per path, and ``delivered(path)`` the first accepted body of each event id (a
    duplicate is answered 2xx and otherwise ignored).
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.secrets: dict[str, str] = {}
        self.script: dict[str, list[int]] = {}
        self.gates: dict[str, threading.Event] = {}
        self.requests: list[dict[str, Any]] = []
        self.accepted: dict[str, set[str]] = {}
        self.entered: dict[str, threading.Event] = {}
        self._events: dict[str, dict[str, Any]] = {}  # path -> event id -> first accepted body
        self.cond = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver._answer(self, self.path, raw)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _answer(self, handler: BaseHTTPRequestHandler, path: str, raw: bytes) -> None:
        with self.cond:
            self.entered.setdefault(path, threading.Event()).set()
            self.cond.notify_all()
        gate = self.gates.get(path)
        if gate is not None:
            gate.wait(60)
        signature_ok = verify(
            self.secrets.get(path, self.secret), raw, handler.headers.get("X-Driftline-Signature")
        )
        event_id = handler.headers.get("X-Driftline-Event-Id")
        with self.cond:
            script = self.script.get(path, [])
            status = script.pop(0) if script else 200
            if not signature_ok:
                status = 401
            body = json.loads(raw)
            self.requests.append(
                {
                    "path": path,
                    "event_id": event_id,
                    "status": status,
                    "signature_ok": signature_ok,
                    "headers": dict(handler.headers),
                    "body": body,
                    "raw": raw,
                }
            )
            if status == 200:
                self.accepted.setdefault(path, set()).add(event_id)
                self._events.setdefault(path, {}).setdefault(event_id, body)
            self.cond.notify_all()
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def wait_for(self, predicate: Callable[[], Any], timeout: float = WAIT) -> Any:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def to(self, path: str) -> list[dict[str, Any]]:
        """Every request to ``path``, in order."""
        with self.cond:
            return [r for r in self.requests if r["path"] == path]

    def delivered(self, path: str) -> dict[str, dict[str, Any]]:
        """Event id -> body of every event accepted on ``path`` (each once)."""
        with self.cond:
            return dict(self._events.get(path, {}))

    def close(self) -> None:
        for gate in self.gates.values():
            gate.set()
        self.server.shutdown()
        self.server.server_close()
