"""Silences through the real app and broker: create, state, list by state, expire early."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api_factories import iso, silence
from fastapi.testclient import TestClient


def test_create_list_and_expire_early(client: TestClient) -> None:
    created = client.post("/v1/silences", json=silence())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["state"] == "active" and body["created_by"].endswith("/test-write")
    assert body["matchers"] == [{"name": "model_id", "value": "churn-*", "op": "=~"}]
    assert created.headers["ETag"] == '"1"'
    active = {
        s["id"] for s in client.get("/v1/silences", params={"state": "active"}).json()["data"]
    }
    assert body["id"] in active

    stale = client.delete(f"/v1/silences/{body['id']}", headers={"If-Match": '"7"'})
    assert stale.status_code == 412
    expired = client.delete(f"/v1/silences/{body['id']}")
    assert expired.status_code == 200
    assert expired.json()["state"] == "expired" and expired.json()["version"] == 2
    assert client.get(f"/v1/silences/{body['id']}").json()["state"] == "expired"
    expired_ids = {
        s["id"] for s in client.get("/v1/silences", params={"state": "expired"}).json()["data"]
    }
    assert body["id"] in expired_ids
    # Expiring again is a no-op.
    assert client.delete(f"/v1/silences/{body['id']}").json()["version"] == 2


def test_future_silence_is_pending(client: TestClient) -> None:
    now = datetime.now(UTC)
    body = silence(
        starts_at=iso(now + timedelta(hours=1)),
        ends_at=iso(now + timedelta(hours=2)),
        matchers=[
            {"name": "severity", "value": "critical"},
            {"name": "alertname", "value": "accuracy low", "op": "!="},
            {"name": "rule_id", "value": "r-*", "op": "=~"},
        ],
    )
    created = client.post("/v1/silences", json=body).json()
    assert created["state"] == "pending"
    expired = client.delete(f"/v1/silences/{created['id']}").json()
    assert expired["state"] == "expired" and expired["starts_at"] == expired["ends_at"]


def test_invalid_silences(client: TestClient) -> None:
    now = datetime.now(UTC)

    def loc(body: dict) -> list:
        response = client.post("/v1/silences", json=body)
        assert response.status_code == 422, response.text
        return [e["loc"] for e in response.json()["detail"]]

    assert ["body", "ends_at"] in loc(silence(ends_at=iso(now - timedelta(hours=1))))
    assert ["body", "ends_at"] in loc(
        silence(starts_at=iso(now + timedelta(hours=2)), ends_at=iso(now + timedelta(hours=1)))
    )
    assert ["body", "matchers"] in loc(silence(matchers=[]))
    assert ["body", "matchers", 0, "op"] in loc(
        silence(matchers=[{"name": "model_id", "value": "x", "op": "~"}])
    )
    assert ["body", "matchers", 0, "name"] in loc(
        silence(matchers=[{"name": "model id", "value": "x"}])
    )
    assert ["body", "ends_at"] in loc(silence(ends_at="tomorrow"))
    assert client.get("/v1/silences/s-missing").status_code == 404
