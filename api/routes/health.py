"""Liveness, readiness and Prometheus metrics (no auth: probes and scrapers carry no key)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse

from ..deps import ControlPlaneDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, str]:
    """The process is up (whether or not its dependencies are: see ``/ready``)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "Not ready, with the reasons"}})
def ready(request: Request, control_plane: ControlPlaneDep) -> Response:
    """Ready when the broker answers now, the control-plane view has caught up with the topic,
    and the store (if one is configured) answers and is migrated. Checked at most about once a
    second (the broker by the control plane's reader, the store by a cached ping), so it turns
    503 within seconds of a dependency going away."""
    problems = []
    problem = control_plane.problem()
    if problem:
        problems.append(problem)
    store_readiness = request.app.state.store_readiness
    if store_readiness is not None:
        problem = store_readiness.problem()
        if problem:
            problems.append(problem)
    if problems:
        return JSONResponse(
            {"status": "not ready", "problems": problems},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    return JSONResponse({"status": "ready", "control_plane_lag": control_plane.lag()})


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(request: Request) -> Response:
    """Prometheus exposition: text format 0.0.4, or OpenMetrics when the scraper asks for it."""
    body, content_type = request.app.state.metrics.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
