"""Dashboard sessions: log in with a key, cookie flags, CSRF on actions, scopes as in the API.

An in-memory control plane (the API's keys and acks live there; no broker needed) and no store
(the pages and the auth do not read ClickHouse)."""

from __future__ import annotations

import re

import pytest
from driftline.api import ApiConfig, InMemoryControlPlane, create_app, crud
from fastapi.testclient import TestClient


@pytest.fixture
def setup() -> tuple[TestClient, dict[str, str], InMemoryControlPlane]:
    control_plane = InMemoryControlPlane()
    tokens = {
        scope: crud.create_api_key(control_plane=control_plane, name=f"ui-{scope}",
                                   scopes=[scope], actor="tests")[0]  # fmt: skip
        for scope in ("read", "write")
    }
    app = create_app(ApiConfig(), control_plane=control_plane)
    return TestClient(app, follow_redirects=False), tokens, control_plane


def login(client: TestClient, token: str, next_: str = "/ui") -> tuple[int, str]:
    """(status, CSRF token of the page behind the login)."""
    response = client.post("/ui/login", data={"key": token, "next": next_})
    if response.status_code != 303:
        return response.status_code, ""
    page = client.get("/ui")
    assert page.status_code == 200
    (csrf,) = re.findall(r'name="csrf-token" content="([^"]+)"', page.text)
    return 303, csrf


def test_nothing_is_served_without_a_session(setup):
    client, _, _ = setup
    for path in ("/ui", "/ui/models/churn", "/ui/alerts", "/ui/rules", "/ui/rules/new"):
        response = client.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith(
            "/ui/login?next="
        ), path
    assert client.get("/ui/data/overview").status_code == 401
    assert client.get("/ui/static/app.js").status_code == 401
    assert client.get("/ui/static/uPlot.iife.min.js").status_code == 401
    assert client.get("/ui/static/app.css").status_code == 200  # the login page's look
    assert client.get("/v1/feed").status_code == 401
    login_page = client.get("/ui/login")
    assert login_page.status_code == 200
    assert "frame-ancestors 'none'" in login_page.headers["content-security-policy"]


@pytest.mark.parametrize(
    "key,message",
    [
        ("nonsense", "not an API key"),
        ("dl_000000000000_" + "x" * 43, "Invalid or revoked"),
    ],
)
def test_a_wrong_key_gets_no_session(setup, key, message):
    client, _, _ = setup
    response = client.post("/ui/login", data={"key": key})
    assert response.status_code == 401 and message in response.text
    assert "driftline_session" not in response.cookies


def test_a_revoked_key_loses_its_session(setup):
    client, tokens, control_plane = setup
    assert login(client, tokens["read"])[0] == 303
    key_id = tokens["read"].split("_")[1]
    crud.revoke_api_key(control_plane=control_plane, key_id=key_id, actor="tests")
    assert client.get("/ui").status_code == 303


def test_session_cookie_flags_and_safe_redirect(setup):
    client, tokens, _ = setup
    response = client.post(
        "/ui/login", data={"key": tokens["read"], "next": "https://evil.example/ui"}
    )
    assert response.status_code == 303 and response.headers["location"] == "/ui"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    response = client.post("/ui/login", data={"key": tokens["read"], "next": "/ui/alerts"})
    assert response.headers["location"] == "/ui/alerts"


def test_actions_need_the_csrf_token_and_the_scope(setup):
    client, tokens, _ = setup
    _, csrf = login(client, tokens["read"])
    body = {"comment": "on it"}
    # read key: the page reads, the API refuses writes (after CSRF is checked)
    assert client.get("/ui").status_code == 200
    assert client.post("/v1/alerts/fp-1/ack", json=body).status_code == 403
    response = client.post("/v1/alerts/fp-1/ack", json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 403 and "needs 'write'" in response.json()["detail"]

    writer = TestClient(client.app, follow_redirects=False)
    _, csrf = login(writer, tokens["write"])
    response = writer.post("/v1/alerts/fp-1/ack", json=body)
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
    response = writer.post("/v1/alerts/fp-1/ack", json=body, headers={"X-CSRF-Token": "wrong"})
    assert response.status_code == 403
    response = writer.post("/v1/alerts/fp-1/ack", json=body, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200 and response.json()["comment"] == "on it"
    assert 'name="can-write" content="true"' in writer.get("/ui/alerts").text
    assert 'name="can-write" content="false"' in client.get("/ui/alerts").text


def test_logout_is_csrf_checked_and_ends_the_session(setup):
    client, tokens, _ = setup
    _, csrf = login(client, tokens["read"])
    assert client.post("/ui/logout").status_code == 403
    assert client.post("/ui/logout", headers={"X-CSRF-Token": csrf}).status_code == 303
    assert client.get("/ui").status_code == 303


def test_bearer_keys_still_work_beside_sessions(setup):
    client, tokens, _ = setup
    response = client.get("/v1/rules", headers={"Authorization": f"Bearer {tokens['read']}"})
    assert response.status_code == 200
