"""The dashboard: server-rendered pages (Jinja2) with small scripts, under ``/ui``.

Pages need a session (log in with an API key at ``/ui/login``); their data comes from
``/ui/data/*`` (below) and the ``/v1`` API itself, both with the session cookie, so a
read-only key can look and only a ``write`` key can acknowledge, silence or save rules:
the API's own scope checks decide, not the page. Live updates come from ``/v1/feed`` (SSE).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from ..auth import grants, parse_token, verify_secret
from ..deps import Principal, ReadKey, StoreDep, authenticate
from . import data
from .sessions import COOKIE, SessionStore

__all__ = ["router", "pages", "install"]

HERE = Path(__file__).parent
STATIC = HERE / "static"
# Served without a session: the login page's look. Everything else needs one.
PUBLIC_STATIC = frozenset({"app.css"})
templates = Jinja2Templates(directory=HERE / "templates")

pages = APIRouter(prefix="/ui", include_in_schema=False)
# The pages' own data: outside the versioned /v1 API (and its OpenAPI document), free to
# change with the pages.
router = APIRouter(prefix="/ui/data", tags=["dashboard"], include_in_schema=False)

ModelId = Annotated[str, PathParam(min_length=1, max_length=200)]
Millis = Annotated[int | None, Query(ge=0, le=4_102_444_800_000)]
Text = Annotated[str, Query(max_length=400)]
DAY_MS = 86_400_000
# Pages run only our own scripts (no inline ones), talk only to this origin and cannot be
# framed (a framed page could be clicked into acknowledging). Inline styles: the heatmap's
# cell colours are style attributes.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def install(app: Any, *, session_ttl_s: float = 8 * 3600) -> list[str]:
    """Mount the dashboard on ``app`` (its sessions live in ``app.state.sessions``); returns
    its path templates (for the request metrics)."""
    app.state.sessions = SessionStore(ttl_s=session_ttl_s)
    app.include_router(pages)
    app.include_router(router)
    return [route.path for route in (*pages.routes, *router.routes)]


def _range(since: int | None, until: int | None) -> tuple[int, int]:
    """Default: the last 7 days. 422 for an empty or reversed range."""
    until = int(time.time() * 1000) if until is None else until
    since = until - 7 * DAY_MS if since is None else since
    if since >= until:
        raise HTTPException(422, "since must be before until")
    return since, until


# -- sessions ----------------------------------------------------------------------------------


def _principal(request: Request) -> Principal | None:
    """The session's key, if the session is live and the key still valid."""
    if request.cookies.get(COOKIE) is None:
        return None
    try:
        return authenticate(request, request.app.state.control_plane, None, None)
    except HTTPException:
        return None


def _login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/login?next={quote(target)}", status.HTTP_303_SEE_OTHER)


def _safe_next(value: str | None) -> str:
    # Only our own pages: an open redirect after login would be a phishing aid.
    if value and value.startswith("/ui") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui"


def _page(request: Request, template: str, principal: Principal, **context: Any) -> Response:
    session = request.app.state.sessions.get(request.cookies.get(COOKIE))
    return templates.TemplateResponse(
        request,
        template,
        {
            "principal": principal,
            "can_write": grants(principal.scopes, "write"),
            "csrf": session.csrf if session else "",
            **context,
        },
        headers=PAGE_HEADERS,
    )


@pages.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    return templates.TemplateResponse(
        request, "login.html", {"next": _safe_next(next)}, headers=PAGE_HEADERS
    )


@pages.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the key like every API request does; a session for a key with ``read`` scope."""
    body = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (body.get("key") or [""])[0].strip()
    target = _safe_next((body.get("next") or [""])[0])
    control_plane = request.app.state.control_plane
    parsed = parse_token(token)
    record = control_plane.get("apikey", parsed[0]) if parsed else None
    error = None
    if parsed is None:
        error = "That is not an API key (expected dl_<id>_<secret>)."
    elif record is None and not control_plane.ready():
        error = "The API is still starting (its view of the API keys is loading); try again."
    elif record is None or not verify_secret(parsed[1], record.data.get("hash", "")):
        error = "Invalid or revoked API key."
    elif not grants(record.data.get("scopes", ()), "read"):
        error = "This key has no read scope."
    if error is not None:
        return templates.TemplateResponse(
            request, "login.html", {"next": target, "error": error},
            status_code=status.HTTP_401_UNAUTHORIZED, headers=PAGE_HEADERS,
        )  # fmt: skip
    sid, _ = request.app.state.sessions.create(token)
    response = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE,
        sid,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
        max_age=int(request.app.state.sessions.ttl_s),
    )
    return response


@pages.post("/logout")
def logout(request: Request, _: ReadKey) -> Response:
    """CSRF-checked like every action (the ReadKey dependency does it for cookie sessions)."""
    request.app.state.sessions.drop(request.cookies.get(COOKIE))
    response = RedirectResponse("/ui/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE, path="/")
    return response


@pages.get("/static/{name}")
def static(request: Request, name: Annotated[str, PathParam(pattern=r"^[\w.-]{1,100}$")]
           ) -> Response:  # fmt: skip
    path = (STATIC / name) if (STATIC / name).is_file() else (STATIC / "vendor" / name)
    if not path.is_file() or name.startswith("."):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no static file {name!r}")
    if name not in PUBLIC_STATIC and _principal(request) is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "log in at /ui/login first")
    return FileResponse(path, headers={"Cache-Control": "private, max-age=300"})


# -- pages -------------------------------------------------------------------------------------


def _render(request: Request, template: str, **context: Any) -> Response:
    principal = _principal(request)
    if principal is None:
        return _login_redirect(request)
    return _page(request, template, principal, **context)


@pages.get("", response_class=HTMLResponse)
def overview_page(request: Request) -> Response:
    return _render(request, "overview.html", page="overview")


@pages.get("/models/{model_id}", response_class=HTMLResponse)
def model_page(request: Request, model_id: ModelId) -> Response:
    return _render(request, "model.html", page="model", model_id=model_id)


@pages.get("/alerts", response_class=HTMLResponse)
def alerts_page(request: Request) -> Response:
    return _render(request, "alerts.html", page="alerts")


@pages.get("/rules", response_class=HTMLResponse)
def rules_page(request: Request) -> Response:
    return _render(request, "rules.html", page="rules")


@pages.get("/rules/new", response_class=HTMLResponse)
def new_rule_page(request: Request) -> Response:
    return _render(request, "rule_edit.html", page="rule_edit", rule_id="")


@pages.get("/rules/{rule_id}", response_class=HTMLResponse)
def rule_page(request: Request, rule_id: Annotated[str, PathParam(max_length=128)]) -> Response:
    return _render(request, "rule_edit.html", page="rule_edit", rule_id=rule_id)


# -- data --------------------------------------------------------------------------------------


@router.get("/overview")
def overview(_: ReadKey, store: StoreDep, since: Millis = None, until: Millis = None) -> dict:
    """Per model and version: traffic, label coverage, accuracy or MAE, drift, open alerts."""
    since, until = _range(since, until)
    return {"since": since, "until": until, "data": data.overview(store, since, until)}


@router.get("/models/{model_id}/series")
def model_series(
    model_id: ModelId,
    _: ReadKey,
    store: StoreDep,
    since: Millis = None,
    until: Millis = None,
    segment: Text = "",
    version: Text = "",
) -> dict:
    """Metrics per bucket with drift, retraining and version markers."""
    since, until = _range(since, until)
    return data.series(store, model_id, since, until, segment=segment, version=version)


@router.get("/models/{model_id}/heatmap")
def model_heatmap(
    model_id: ModelId,
    _: ReadKey,
    store: StoreDep,
    since: Millis = None,
    until: Millis = None,
    bucket: Annotated[int, Query(ge=1, le=30 * 86400)] = 60,
) -> dict:
    """Drift events and detector estimates per stream and bucket."""
    since, until = _range(since, until)
    return data.heatmap(store, model_id, since, until, bucket)


@router.get("/models/{model_id}/drifts")
def model_drifts(
    model_id: ModelId,
    _: ReadKey,
    store: StoreDep,
    since: Millis = None,
    until: Millis = None,
    stream: Text = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict:
    """The raw evidence: drift events with statistic, threshold, evidence map, source event."""
    since, until = _range(since, until)
    rows = data.drifts(store, model_id, since, until, limit=limit, stream=stream)
    return {"data": rows, "count": len(rows)}


@router.get("/models/{model_id}/events/{event_id}")
def model_event(
    model_id: ModelId,
    event_id: Annotated[str, PathParam(min_length=1, max_length=200)],
    _: ReadKey,
    store: StoreDep,
) -> dict:
    """A prediction or outcome by id (a drift's source event) with its joined label rows."""
    found = data.event(store, model_id, event_id)
    if not any(found.values()):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no prediction or outcome {event_id!r} of model {model_id!r} (raw events expire "
            "with the tables' TTL)",
        )
    return found


@router.get("/models/{model_id}/dimensions")
def model_dimensions(model_id: ModelId, _: ReadKey, store: StoreDep) -> dict:
    """The segments and versions to choose from."""
    return {"segments": data.segments(store, model_id), "versions": data.versions(store, model_id)}
