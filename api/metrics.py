"""The API's Prometheus metrics, on ``prometheus_client``: request counts and latency histograms
by route template and status, counters the routes bump, and control-plane gauges read at scrape
time. Each app owns a ``CollectorRegistry``, so several apps in one process (tests) never share
or clash on a series."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .control_plane import BaseControlPlane

__all__ = ["COUNTERS", "Metrics", "MetricsMiddleware"]

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Counters a route may bump with ``Metrics.inc(name)``: declared up front so each is exposed
# (at 0) before its first event, which is what rate() and alerting on it need.
COUNTERS = {"driftline_api_audit_failures_total": "Audit rows the store refused."}


class ControlPlaneCollector(Collector):
    """Gauges read from the control plane at scrape time (a snapshot, not a running tally)."""

    def __init__(self, control_plane: BaseControlPlane) -> None:
        self.control_plane = control_plane

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Given, so registering does not call collect() (and the control plane) to learn names.
        return self._families(with_samples=False)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return self._families(with_samples=True)

    def _families(self, with_samples: bool) -> Iterator[GaugeMetricFamily]:
        cp = self.control_plane
        rules = GaugeMetricFamily(
            "driftline_api_rules", "Alert rules on the control plane.", labels=["state"]
        )
        if with_samples:
            enabled = sum(r.data.get("enabled", True) for r in cp.list("rule"))
            rules.add_metric(["enabled"], enabled)
            rules.add_metric(["disabled"], cp.count("rule") - enabled)
        yield rules
        unlabelled: list[tuple[str, str, Callable[[], float]]] = [
            ("driftline_api_silences", "Silences on the control plane.",
             lambda: cp.count("silence")),
            ("driftline_api_subscriptions", "Subscriptions on the control plane.",
             lambda: cp.count("subscription")),
            ("driftline_api_control_plane_lag",
             "Control-plane records not yet applied to the API's view.", cp.lag),
            ("driftline_api_control_plane_ready",
             "1 when the control-plane view has caught up with the topic.",
             lambda: float(cp.ready())),
        ]  # fmt: skip
        for name, help_text, read in unlabelled:
            yield GaugeMetricFamily(name, help_text, value=read() if with_samples else None)


class Metrics:
    """One app's metrics, in a registry of its own (``registry``)."""

    def __init__(self, control_plane: BaseControlPlane) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "driftline_api_requests_total",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "driftline_api_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.counters = {
            name: Counter(name, help_text, registry=self.registry)
            for name, help_text in COUNTERS.items()
        }
        self.registry.register(ControlPlaneCollector(control_plane))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def inc(self, name: str) -> None:
        """Bump a counter declared in ``COUNTERS`` (an undeclared name is a KeyError)."""
        self.counters[name].inc()

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (body, content type) in the format the scraper's ``Accept`` asks for:
        OpenMetrics or Prometheus text, text format 0.0.4 when it names neither."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


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
