"""Prometheus text exposition, written by hand (no extra dependency): request counts and
latency histograms by route template and status, plus gauges read at scrape time."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

__all__ = ["Metrics", "MetricsMiddleware"]

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(**labels: str) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.latency_buckets: dict[tuple[str, str], list[int]] = {}
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.latency_count: dict[tuple[str, str], int] = defaultdict(int)
        self.counters: dict[str, int] = defaultdict(int)
        # name -> (help, callable returning [(labels, value)])
        self.gauges: dict[str, tuple[str, Callable[[], list[tuple[dict[str, str], float]]]]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, str(status))] += 1
            key = (method, route)
            buckets = self.latency_buckets.setdefault(key, [0] * len(BUCKETS))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self.latency_sum[key] += seconds
            self.latency_count[key] += 1

    def inc(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def render(self) -> str:
        out = [
            "# HELP driftline_api_requests_total HTTP requests by method, route and status.",
            "# TYPE driftline_api_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), n in sorted(self.requests.items()):
                out.append(
                    f"driftline_api_requests_total{_labels(method=method, route=route, status=status)} {n}"
                )
            out += [
                "# HELP driftline_api_request_duration_seconds HTTP request latency.",
                "# TYPE driftline_api_request_duration_seconds histogram",
            ]
            name = "driftline_api_request_duration_seconds"
            for (method, route), buckets in sorted(self.latency_buckets.items()):
                for bound, n in zip(BUCKETS, buckets, strict=True):
                    lb = _labels(method=method, route=route, le=repr(bound))
                    out.append(f"{name}_bucket{lb} {n}")
                count = self.latency_count[(method, route)]
                out.append(f"{name}_bucket{_labels(method=method, route=route, le='+Inf')} {count}")
                out.append(f"{name}_sum{_labels(method=method, route=route)} "
                           f"{self.latency_sum[(method, route)]:.6f}")  # fmt: skip
                out.append(f"{name}_count{_labels(method=method, route=route)} {count}")
            for counter, n in sorted(self.counters.items()):
                out += [f"# TYPE {counter} counter", f"{counter} {n}"]
        for gauge, (help_text, read) in sorted(self.gauges.items()):
            out += [f"# HELP {gauge} {help_text}", f"# TYPE {gauge} gauge"]
            for labels, value in read():
                out.append(f"{gauge}{_labels(**labels) if labels else ''} {value:g}")
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """Pure ASGI: times every HTTP request and labels it with the matched route's template
    (``/v1/rules/{rule_id}``, not the raw path, so label cardinality stays bounded)."""

    def __init__(self, app: Any, metrics: Metrics, paths: Callable[[], list[str]]) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = paths
        self._compiled: list[tuple[Any, str]] | None = None

    def template(self, scope: dict) -> str:
        # Matched against the OpenAPI path templates rather than read from the scope, where
        # what the router leaves differs between FastAPI versions.
        if self._compiled is None:
            from starlette.routing import compile_path

            self._compiled = [(compile_path(p)[0], p) for p in self.paths()]
        path = scope.get("path", "")
        for regex, template in self._compiled:
            if regex.match(path):
                return template
        return "unmatched"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe(
                scope.get("method", ""),
                self.template(scope),
                status["code"],
                time.perf_counter() - start,
            )
