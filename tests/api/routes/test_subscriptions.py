"""Subscriptions through the real app and broker: the secret is shown once, then masked."""

from __future__ import annotations

from api_factories import drift_rule
from driftline.api import ControlPlane
from fastapi.testclient import TestClient

SECRET = "s3cr3t-s3cr3t-s3cr3t-42"


def test_secret_is_returned_once_then_masked(
    client: TestClient, control_plane: ControlPlane
) -> None:
    created = client.post(
        "/v1/subscriptions",
        json={
            "name": "oncall",
            "url": "https://hooks.example.com/driftline",
            "secret": SECRET,
            "filters": {
                "models": ["churn-*"],
                "severities": ["critical"],
                "labels": {"team": "growth"},
            },
        },
    )
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["secret"] == SECRET
    read = client.get(f"/v1/subscriptions/{sub['id']}").json()
    assert read["secret"] == "****" + SECRET[-4:]
    listed = client.get("/v1/subscriptions").json()
    assert SECRET not in str(listed)
    assert read["filters"] == {
        "models": ["churn-*"],
        "severities": ["critical"],
        "labels": {"team": "growth"},
    }
    # The workers need the secret to sign: it is on the control plane.
    assert control_plane.get("subscription", sub["id"]).data["secret"] == SECRET

    patched = client.patch(f"/v1/subscriptions/{sub['id']}", json={"enabled": False, "version": 1})
    assert patched.status_code == 200 and patched.json()["secret"].startswith("****")
    assert control_plane.get("subscription", sub["id"]).data["secret"] == SECRET
    rotated = client.patch(f"/v1/subscriptions/{sub['id']}", json={"secret": "n" * 32})
    assert rotated.json()["secret"] == "n" * 32
    assert (
        client.patch(f"/v1/subscriptions/{sub['id']}", json={"name": "x", "version": 1}).status_code
        == 409
    )


def test_generated_secret_and_rules_that_notify(client: TestClient) -> None:
    sub = client.post("/v1/subscriptions", json={"name": "n", "url": "http://localhost:9/x"}).json()
    assert len(sub["secret"]) >= 32
    rule = client.post("/v1/rules", json=drift_rule(notify=[sub["id"]]))
    assert rule.status_code == 201, rule.text
    # A subscription still notified by a rule cannot go.
    refused = client.delete(f"/v1/subscriptions/{sub['id']}")
    assert refused.status_code == 409 and rule.json()["id"] in refused.json()["detail"]
    client.patch(f"/v1/rules/{rule.json()['id']}", json={"notify": []})
    assert client.delete(f"/v1/subscriptions/{sub['id']}").status_code == 204
    assert client.get(f"/v1/subscriptions/{sub['id']}").status_code == 404


def test_invalid_subscriptions(client: TestClient) -> None:
    def locs(body: dict) -> list:
        response = client.post("/v1/subscriptions", json=body)
        assert response.status_code == 422, response.text
        return [e["loc"] for e in response.json()["detail"]]

    base = {"name": "n", "url": "https://h.example/x"}
    assert ["body", "url"] in locs({**base, "url": "ftp://h.example/x"})
    assert ["body", "secret"] in locs({**base, "secret": "short"})
    assert ["body", "filters", "severities", 0] in locs(
        {**base, "filters": {"severities": ["page"]}}
    )
    assert ["body", "token"] in locs({**base, "token": "x"})
