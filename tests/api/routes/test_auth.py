"""API keys: 401 without a valid key, 403 without the scope, both headers, admin endpoints."""

from __future__ import annotations

from api_factories import drift_rule
from conftest import auth
from driftline.api import ControlPlane, crud
from fastapi.testclient import TestClient


def test_every_endpoint_but_health_needs_a_key(app, control_plane: ControlPlane) -> None:  # type: ignore[no-untyped-def]
    anonymous = TestClient(app)
    for path in ("/health", "/ready", "/metrics"):
        assert anonymous.get(path).status_code == 200, path
    spec = app.openapi()
    for path, methods in spec["paths"].items():
        if path in ("/health", "/ready", "/metrics"):
            continue
        concrete = path.replace("{", "").replace("}", "")
        for method in methods:
            response = anonymous.request(method.upper(), concrete)
            assert response.status_code == 401, (method, path, response.text)
            assert "missing API key" in response.json()["detail"]
            assert response.headers["WWW-Authenticate"] == "Bearer"


def test_malformed_unknown_and_revoked_keys_are_401(app, control_plane: ControlPlane) -> None:  # type: ignore[no-untyped-def]
    def status(token: str) -> tuple[int, str]:
        response = TestClient(app, headers=auth(token)).get("/v1/rules")
        return response.status_code, response.json().get("detail", "")

    assert status("not-a-key") == (401, "malformed API key (expected dl_<id>_<secret>)")
    token, record = crud.create_api_key(
        control_plane=control_plane, name="short-lived", scopes=["read"], actor="tests"
    )
    assert status(token)[0] == 200
    key_id, secret = token.split("_", 2)[1:]
    assert status(f"dl_{key_id}_{'A' * 43}") == (401, "invalid or revoked API key")
    assert status(f"dl_{'0' * 12}_{secret}") == (401, "invalid or revoked API key")
    crud.revoke_api_key(control_plane=control_plane, key_id=record.id, actor="tests")
    assert status(token) == (401, "invalid or revoked API key")
    # Only the hash is on the control plane.
    assert secret not in repr(record.data) and record.data["hash"] != secret


def test_scopes_nest_read_write_admin(app, tokens: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    reader = TestClient(app, headers=auth(tokens["read"]))
    writer = TestClient(app, headers={"X-API-Key": tokens["write"]})
    admin = TestClient(app, headers=auth(tokens["admin"]))

    refused = reader.post("/v1/rules", json=drift_rule())
    assert refused.status_code == 403
    assert "needs 'write'" in refused.json()["detail"]
    created = writer.post("/v1/rules", json=drift_rule())
    assert created.status_code == 201
    assert reader.get(f"/v1/rules/{created.json()['id']}").status_code == 200
    assert (
        admin.patch(f"/v1/rules/{created.json()['id']}", json={"enabled": False}).status_code == 200
    )

    assert writer.get("/v1/api-keys").status_code == 403
    assert admin.get("/v1/api-keys").status_code == 200


def test_admin_creates_and_revokes_keys_over_http(app, tokens: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    admin = TestClient(app, headers=auth(tokens["admin"]))
    created = admin.post("/v1/api-keys", json={"name": "ci", "scopes": ["read"]})
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert token.startswith(f"dl_{created.json()['id']}_")
    listed = admin.get("/v1/api-keys").json()["data"]
    assert "token" not in str(listed) and "hash" not in str(listed)
    assert any(k["id"] == created.json()["id"] for k in listed)
    assert TestClient(app, headers=auth(token)).get("/v1/rules").status_code == 200
    assert admin.delete(f"/v1/api-keys/{created.json()['id']}").status_code == 204
    assert TestClient(app, headers=auth(token)).get("/v1/rules").status_code == 401
    assert admin.post("/v1/api-keys", json={"name": "x", "scopes": ["root"]}).status_code == 422
