"""Liveness, readiness and Prometheus metrics (no auth: probes and scrapers carry no key)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse

from ..deps import ControlPlaneDep, OptionalStoreDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "Not ready, with the reasons"}})
def ready(control_plane: ControlPlaneDep, store: OptionalStoreDep) -> Response:
    """Ready when the control-plane view has caught up with the topic and the store (if one is
    configured) answers."""
    problems = []
    if not control_plane.ready():
        problems.append(f"control plane not caught up (lag {control_plane.lag()})")
    if store is not None:
        try:
            store.query("SELECT 1")
        except Exception as exc:
            problems.append(f"store unreachable: {exc}")
    if problems:
        return JSONResponse(
            {"status": "not ready", "problems": problems},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    return JSONResponse({"status": "ready", "control_plane_lag": control_plane.lag()})


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text exposition format 0.0.4."""
    return PlainTextResponse(
        request.app.state.metrics.render(), media_type="text/plain; version=0.0.4"
    )
