"""Models and their versions: what the workers saw (ClickHouse ``model_versions``, filled from
``driftline.models.v1`` and from predictions), verdicts, lineage; and publishing a version for
publishers that do not use Kafka (``ModelPublished`` on ``driftline.models.v1``).

As in MLflow's model registry a version is immutable: publishing the same content again
answers 200 with the version as it is, different content for an existing version 409.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from driftline.schemas.control_plane import Unavailable
from driftline.schemas.model_versions import content_hash, make_published
from driftline.schemas.validation import InvalidEvent
from driftline.sinks import StoreError
from driftline.sinks.lineage import model_lineage, model_versions, published_row
from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from pydantic import Field

from ..deps import ReadKey, StoreDep, WriteKey
from ..models import Strict

log = logging.getLogger(__name__)
router = APIRouter(prefix="/models", tags=["models"])

ModelPath = Annotated[str, Path(pattern=r"^[^\s@*?\[\]]{1,200}$")]
# Share of traffic: the model's predictions over this long before its latest one.
TRAFFIC_WINDOW_MS = 3_600_000
# ClickHouse's DateTime64 ends with 2299; later times could not be stored
MAX_TIME_MS = 10_413_792_000_000 - 1


class VersionCreate(Strict):
    """A version to publish; the model comes from the path."""

    version: str = Field(min_length=1, max_length=256, pattern=r"^\S+$", examples=["7"])
    artifact_uri: str = Field("", max_length=4096, examples=["s3://models/churn/7"])
    training_window_start: int | None = Field(
        None, ge=0, le=MAX_TIME_MS, description="epoch ms, inclusive"
    )
    training_window_end: int | None = Field(
        None, ge=0, le=MAX_TIME_MS, description="epoch ms, exclusive"
    )
    retraining_request_id: str | None = Field(None, max_length=64)
    previous_version: str | None = Field(None, max_length=256)
    metrics: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict, max_length=200
    )
    tags: dict[str, Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=200
    )
    reference_profile_id: str | None = Field(None, max_length=64)


def _registry(request: Request) -> Any:
    registry = getattr(request.app.state, "model_registry", None)
    if registry is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "no model registry (Kafka) is configured for the API; publish to "
            "driftline.models.v1 directly",
        )
    return registry


@router.get("", summary="Models driftline has seen, with their serving version")
def list_models(_: ReadKey, store: StoreDep) -> dict[str, Any]:
    rows = store.query(
        "SELECT model_id, count() AS versions, countIf(published = 1) AS published, "
        "argMaxIf(version, last_seen, last_seen IS NOT NULL) AS serving, max(last_seen) "
        "FROM (SELECT model_id, version, max(published) AS published, max(last_seen) AS "
        "last_seen FROM model_versions GROUP BY model_id, version) "
        "GROUP BY model_id ORDER BY model_id"
    )
    data = [
        {
            "model_id": model,
            "versions": int(n),
            "published_versions": int(published),
            "serving_version": serving or None,
            "last_seen": None if last is None else int(last.timestamp() * 1000),
        }
        for model, n, published, serving, last in rows
    ]
    return {"data": data, "count": len(data)}


@router.get("/{model}/versions", summary="A model's versions: published, serving, verdicts")
def list_versions(model: ModelPath, _: ReadKey, store: StoreDep) -> dict[str, Any]:
    versions = model_versions(store, model)
    if not versions:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no versions of model {model!r} known")
    shares = dict(
        store.query(
            "SELECT model_version, count() FROM predictions WHERE model_id = {model:String} "
            "AND event_time >= (SELECT max(event_time) FROM predictions WHERE "
            "model_id = {model:String}) - toIntervalMillisecond({window:Int64}) "
            "GROUP BY model_version",
            {"model": model, "window": TRAFFIC_WINDOW_MS},
        )
    )
    total = sum(shares.values()) or 1
    verdicts: dict[str, list[dict[str, Any]]] = {}
    for event, version, previous, verdict, p_value, rollback in store.query(
        "SELECT event_id, version, previous_version, verdict, p_value, rollback_to "
        "FROM model_verdicts FINAL WHERE model_id = {model:String} ORDER BY decided_at",
        {"model": model},
    ):
        verdicts.setdefault(version, []).append(
            {"event_id": event, "previous_version": previous, "verdict": verdict,
             "p_value": p_value, "rollback_to": rollback}  # fmt: skip
        )
    for item in versions:
        item["traffic_share"] = round(shares.get(item["version"], 0) / total, 6)
        item["verdicts"] = verdicts.get(item["version"], [])
    return {"data": versions, "count": len(versions)}


@router.post(
    "/{model}/versions",
    status_code=status.HTTP_201_CREATED,
    summary="Publish a version (ModelPublished on driftline.models.v1)",
    responses={200: {"description": "the same version with the same content, published before"},
               409: {"description": "the version exists with other content"}},  # fmt: skip
)
def publish_version(
    model: ModelPath,
    body: VersionCreate,
    request: Request,
    response: Response,
    principal: WriteKey,
) -> dict[str, Any]:
    registry = _registry(request)
    try:
        record = make_published(
            model,
            body.version,
            published_at=int(time.time() * 1000),
            publisher=principal.actor,
            **body.model_dump(exclude={"version"}),
        )
    except InvalidEvent as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, exc.detail) from exc
    known = registry.get(model, body.version)
    if known is not None:
        if content_hash(known) != content_hash(record):
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"version {body.version!r} of model {model!r} was published with other content "
                f"(event {known['event_id']}); versions are immutable: publish a new version",
            )
        response.status_code = status.HTTP_200_OK
        return known
    try:
        registry.publish(record)
    except Unavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    winner = registry.get(model, body.version)
    if winner is not None and content_hash(winner) != content_hash(record):
        # another writer published this version first (the topic's order decides)
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"version {body.version!r} of model {model!r} was published concurrently with "
            "other content",
        )
    store = request.app.state.store
    if store is not None:  # the workers write it too; this makes a GET right after see it
        try:
            store.insert_rows("model_versions", [published_row(record)])
        except StoreError as exc:  # published all the same: the workers write the row
            log.warning("version %s of %s published; its row waits for a worker: %s",
                        body.version, model, exc)  # fmt: skip
    return record


@router.get("/{model}/lineage", summary="drift → alert → retraining → version → verdict")
def lineage(model: ModelPath, _: ReadKey, store: StoreDep) -> dict[str, Any]:
    result = model_lineage(store, model)
    if not result["versions"]:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no versions of model {model!r} known")
    return result
