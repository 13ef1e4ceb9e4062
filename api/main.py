"""The app factory: routers under ``/v1``, error mapping, body limit, metrics."""

from __future__ import annotations

import logging
import re
from typing import Any

from driftline.sinks import StoreError
from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from .config import ApiConfig
from .control_plane import BaseControlPlane, NotFound, Unavailable, VersionConflict
from .metrics import Metrics, MetricsMiddleware
from .readiness import StoreReadiness
from .references import References
from .routes import (
    alerts,
    api_keys,
    feed,
    health,
    models,
    monitoring,
    rules,
    silences,
    subscriptions,
)
from .routes import references as reference_routes
from .tables import SerializedStore
from .ui.routes import install as install_dashboard

__all__ = ["create_app"]

log = logging.getLogger(__name__)

DESCRIPTION = """\
Manage driftline's alert rules, silences, subscriptions and alert acknowledgements.

Every endpoint except `/health`, `/ready` and `/metrics` needs an API key:
`Authorization: Bearer dl_<id>_<secret>` or `X-API-Key: dl_<id>_<secret>`.
Scopes: `read` (GET, dry-runs), `write` (changes), `admin` (API keys).
Writes are conditional on `If-Match: "<version>"` (412 when stale) or a `version` field in the
body (409 when stale); every entity's response carries `ETag: "<version>"`.
"""


class BodyLimitMiddleware:
    """413 for request bodies over ``limit`` bytes, declared (Content-Length) or streamed;
    ``overrides`` give paths matching a pattern another limit (reference uploads)."""

    def __init__(
        self, app: Any, limit: int, overrides: tuple[tuple[re.Pattern[str], int], ...] = ()
    ) -> None:
        self.app = app
        self.limit = limit
        self.overrides = overrides

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = next(
            (limit for pattern, limit in self.overrides if pattern.match(path)), self.limit
        )
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, limit)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                await self._refuse(scope, receive, send, limit)
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any, limit: int) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {limit} bytes"},
            status_code=413,
        )
        await response(scope, receive, send)


def _error(code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=code)


def create_app(
    config: ApiConfig,
    *,
    control_plane: BaseControlPlane,
    store: Any | None = None,
    references: References | None = None,
    model_registry: Any | None = None,
) -> FastAPI:
    """The API over a control plane and an optional ClickHouse store
    (``driftline.sinks.Store``; without one, history reads and dry-runs answer 503) and
    references topic (``api.references``; without one, reference routes answer 503).

    The caller owns both and closes them after. The control plane may still be starting
    (``/ready`` answers 503 and key checks 503 until it has caught up); with
    ``config.create_tables`` the migrations are tried once here, otherwise the caller applies
    them through ``app.state.store_readiness.migrate()`` (``driftline api`` does, in the
    background, once the store answers).
    """
    if store is not None:
        store = SerializedStore(store)
    app = FastAPI(title=config.title, version="1.0.0", description=DESCRIPTION)
    app.state.config = config
    app.state.control_plane = control_plane
    app.state.store = store
    app.state.references = references
    # published model versions (api.versions.ModelRegistry); None: POST .../versions is 503
    app.state.model_registry = model_registry
    app.state.store_readiness = StoreReadiness(store) if store is not None else None
    app.state.metrics = metrics = Metrics(control_plane)

    if store is not None and config.create_tables:
        try:
            app.state.store_readiness.migrate()
        except Exception as exc:
            log.warning("could not apply the ClickHouse migrations (alerts, rule_versions): %s",
                        exc)  # fmt: skip

    app.include_router(health.router)
    templates = [route.path for route in health.router.routes]
    for router in (
        rules.router,
        rules.dry_run_router,
        silences.router,
        subscriptions.router,
        alerts.router,
        api_keys.router,
        feed.router,
        reference_routes.router,
        models.router,
        monitoring.router,
    ):
        app.include_router(router, prefix="/v1")
        templates += ["/v1" + route.path for route in router.routes]
    # The dashboard (api/ui): pages under /ui, their data under /ui/data, sessions in memory.
    templates += install_dashboard(app)

    @app.exception_handler(VersionConflict)
    def _conflict(request: Request, exc: VersionConflict) -> JSONResponse:
        return _error(status.HTTP_409_CONFLICT, str(exc))

    @app.exception_handler(NotFound)
    def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _error(status.HTTP_404_NOT_FOUND, str(exc))

    @app.exception_handler(Unavailable)
    def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return _error(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc))

    @app.exception_handler(StoreError)
    def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return _error(status.HTTP_503_SERVICE_UNAVAILABLE, f"ClickHouse store error: {exc}")

    @app.exception_handler(ValidationError)
    def _invalid(request: Request, exc: ValidationError) -> JSONResponse:
        errors = [
            {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    # Outermost first: metrics see the 413s of the body limit too.
    app.add_middleware(
        BodyLimitMiddleware,
        limit=config.max_body_bytes,
        overrides=((reference_routes.UPLOAD_PATH, config.max_reference_bytes),),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, paths=lambda: templates)
    return app
