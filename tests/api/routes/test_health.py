"""/health, /ready and /metrics (no key needed)."""

from __future__ import annotations

import re

from api_factories import drift_rule
from conftest import auth
from driftline.api import ApiConfig, ControlPlane, InMemoryControlPlane, create_app
from fastapi.testclient import TestClient


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

    def sample(name: str, **labels: str) -> float:
        inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
        match = re.search(rf"^{re.escape(name)}\{{{re.escape(inner)}\}} (\S+)$", text, re.M)
        assert match, (name, labels, text)
        return float(match[1])

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
    assert "driftline_api_control_plane_lag 0" in text
    assert "driftline_api_control_plane_ready 1" in text
    assert "# TYPE driftline_api_request_duration_seconds histogram" in text


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
