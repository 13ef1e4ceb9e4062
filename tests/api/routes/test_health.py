"""/health, /ready and /metrics (no key needed)."""

from __future__ import annotations

from api_factories import drift_rule
from conftest import auth
from driftline.api import ApiConfig, ControlPlane, InMemoryControlPlane, create_app
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families


def test_health_and_ready(app) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(app)
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_not_ready_until_the_view_caught_up(control_plane: ControlPlane) -> None:
    unstarted = ControlPlane(control_plane.bootstrap)  # never started: no reader
    response = TestClient(create_app(ApiConfig(), control_plane=unstarted)).get("/ready")
    assert response.status_code == 503
    assert "control plane not caught up" in response.json()["problems"][0]


def test_metrics_exposition(app, tokens: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(app, headers=auth(tokens["write"]))
    rule = client.post("/v1/rules", json=drift_rule()).json()
    client.get(f"/v1/rules/{rule['id']}")
    client.get("/v1/rules/r-does-not-exist")
    TestClient(app).get("/v1/rules")  # 401
    text = TestClient(app).get("/metrics").text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def sample(name: str, **labels: str) -> float:
        found = [s.value for s in samples if s.name == name and s.labels == labels]
        assert len(found) == 1, (name, labels, text)
        return found[0]

    # Routes are templates, not raw paths (bounded label cardinality).
    assert (
        sample(
            "driftline_api_requests_total", method="GET", route="/v1/rules/{rule_id}", status="200"
        )
        == 1
    )
    assert (
        sample(
            "driftline_api_requests_total", method="GET", route="/v1/rules/{rule_id}", status="404"
        )
        == 1
    )
    assert (
        sample("driftline_api_requests_total", method="GET", route="/v1/rules", status="401") == 1
    )
    assert (
        sample("driftline_api_requests_total", method="POST", route="/v1/rules", status="201") == 1
    )
    assert (
        sample("driftline_api_request_duration_seconds_count", method="POST", route="/v1/rules")
        == 1
    )
    assert (
        sample(
            "driftline_api_request_duration_seconds_bucket",
            method="POST",
            route="/v1/rules",
            le="+Inf",
        )
        == 1
    )
    assert sample("driftline_api_rules", state="enabled") >= 1
    assert sample("driftline_api_control_plane_lag") == 0
    assert sample("driftline_api_control_plane_ready") == 1
    assert sample("driftline_api_audit_failures_total") == 0  # exposed before any failure
    assert "# TYPE driftline_api_request_duration_seconds histogram" in text


def test_metrics_are_per_app_and_speak_openmetrics_when_asked() -> None:
    one = TestClient(create_app(ApiConfig(), control_plane=InMemoryControlPlane()))
    two = TestClient(create_app(ApiConfig(), control_plane=InMemoryControlPlane()))
    one.get("/health")
    plain = one.get("/metrics")
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert 'driftline_api_requests_total{method="GET",route="/health",status="200"} 1.0' in (
        plain.text
    )
    open_metrics = two.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.endswith("# EOF\n")
    assert 'route="/health"' not in open_metrics.text  # the other app's request


def test_openapi_is_versioned_and_documents_auth() -> None:
    spec = create_app(ApiConfig(), control_plane=InMemoryControlPlane()).openapi()
    paths = set(spec["paths"])
    assert {"/health", "/ready", "/metrics"} <= paths
    assert all(p.startswith("/v1/") for p in paths - {"/health", "/ready", "/metrics"})
    assert set(spec["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}
    assert spec["paths"]["/v1/rules/{rule_id}"]["patch"]["responses"].keys() >= {
        "200",
        "409",
        "412",
        "422",
    }
