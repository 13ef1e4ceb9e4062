"""Reference profiles: what a model's training data looked like, the baseline its live
traffic is tested against (docs/drift.md).

``PUT /v1/models/{model}/reference`` takes the training data itself — CSV (``text/csv``),
Parquet (``application/vnd.apache.parquet``) or JSON columns (``{"columns": {"age": [..]}}``)
— with the options of ``driftline reference upload`` as query parameters, profiles it here
with the check every uploader shares (:func:`driftline.detectors.reference.prepare_reference`)
and publishes the profile to ``driftline.references.v1``, where running workers pick it up
from the model's next window on. Only the profile is kept, never the rows. A bad reference
changes nothing: 422 with the column and the reason (wrong or mixed types, no rows, a column
with no values, non-finite numbers), 404 for a model outside ``DRIFTLINE_KNOWN_MODELS`` when
that list is set, 413 for a body or profile that is too large, 415 for another content type.

``GET`` answers with the model's current reference: where it came from and per-column
statistics (the rows of the ``reference_profiles`` table in ClickHouse).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from ..deps import ConfigDep, ReadKey, WriteKey
from ..models import Message
from ..references import References

router = APIRouter(prefix="/models", tags=["references"])

#: The upload path, for the body limit (api/main.py gives it ``max_reference_bytes``).
UPLOAD_PATH = re.compile(r"^/v1/models/[^/]+/reference$")
_PARQUET_TYPES = (
    "application/vnd.apache.parquet",
    "application/x-parquet",
    "application/parquet",
    "application/octet-stream",
)


def get_references(request: Request) -> References:
    references = getattr(request.app.state, "references", None)
    if references is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "this API has no connection to the references topic (driftline.references.v1)",
        )
    if not references.ready():
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the API is starting: it has not read the references topic yet",
            headers={"Retry-After": "5"},
        )
    return references


ReferencesDep = Annotated[References, Depends(get_references)]
ModelPath = Annotated[str, Path(min_length=1, max_length=255, description="the model_id")]


class ReferenceColumns(BaseModel):
    """Training data as JSON: one list per column, one value per row (null: missing)."""

    model_config = ConfigDict(extra="forbid")

    columns: dict[str, list[StrictStr | StrictInt | StrictFloat | StrictBool | None]] = Field(
        description="column name -> values; numbers make a numeric column, strings a "
        "categorical one"
    )


class ReferenceColumnPublic(BaseModel):
    """One column of a reference profile."""

    column: str = Field(description="feature name; @prediction_score / _value / _label for "
                        "the model's outputs")  # fmt: skip
    column_kind: str = Field(description="numeric or categorical")
    n_present: int
    n_missing: int
    missing_rate: float
    min: float | None = None
    max: float | None = None
    std: float | None = None
    top_share: float = Field(description="share of the most common value")
    quantiles: list[float] = Field(description="inner bin edges of the chisquare/psi tests")
    bin_counts: list[int] = Field(description="reference count per bin (one more than edges)")
    categories: dict[str, int] = Field(description="count per category (categorical)")


class ReferencePublic(BaseModel):
    """A model's reference profile as the workers use it."""

    model_id: str
    reference_id: str = Field(description="hash of the profile; results carry it")
    version: str = Field(description="the model version the reference was built for")
    source: str = Field(description="uploaded, or first_events (built by a worker)")
    n_events: int = Field(description="rows the profile was built from")
    uploaded_at: datetime | None = None
    uploaded_by: str = ""
    features: list[str] = Field(description="input columns (not the model's outputs)")
    multivariate: list[str] | None = Field(
        None, description="numeric inputs of the PCA reconstruction test; null: not run"
    )
    columns: list[ReferenceColumnPublic]


def reference_public(entry: Any) -> ReferencePublic:
    profile = entry.profile
    summary = profile.summary()
    return ReferencePublic(
        model_id=profile.model_id,
        reference_id=profile.reference_id,
        version=profile.version,
        source=profile.source,
        n_events=profile.n_events,
        uploaded_at=(
            datetime.fromtimestamp(entry.uploaded_at / 1000, UTC) if entry.uploaded_at else None
        ),
        uploaded_by=entry.uploaded_by,
        features=profile.features,
        multivariate=summary["multivariate"],
        columns=[ReferenceColumnPublic(**row) for row in profile.column_stats()],
    )


async def _table(request: Request) -> Any:
    """The request body as columns: a pyarrow Table (CSV, Parquet) or a dict (JSON)."""
    from driftline.detectors.reference import read_table

    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if content_type == "application/json":
        return ReferenceColumns.model_validate_json(body).columns
    try:
        if content_type == "text/csv":
            return await run_in_threadpool(read_table, body, "csv")
        if content_type in _PARQUET_TYPES:
            return await run_in_threadpool(read_table, body, "parquet")
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    raise HTTPException(
        status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
        f"send the reference data as text/csv, application/vnd.apache.parquet or "
        f"application/json (columns), not {content_type or 'no content type'!r}",
    )


_UPLOAD_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": ReferenceColumns.model_json_schema()},
        "text/csv": {"schema": {"type": "string"}},
        "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
    },
}


@router.put(
    "/{model}/reference",
    response_model=ReferencePublic,
    openapi_extra={"requestBody": _UPLOAD_BODY},
    responses={
        201: {"model": ReferencePublic, "description": "the model's first reference"},
        404: {"model": Message, "description": "a model this deployment does not accept"},
        413: {"model": Message, "description": "body or profile too large"},
        415: {"model": Message, "description": "not CSV, Parquet or JSON"},
        422: {"model": Message, "description": "bad reference data; nothing changed"},
    },
)
async def put_reference(
    model: ModelPath,
    request: Request,
    response: Response,
    principal: WriteKey,
    references: ReferencesDep,
    config: ConfigDep,
    version: Annotated[str, Query(max_length=255, description="model version")] = "",
    categorical: Annotated[
        list[str], Query(description="columns to treat as labels even if numeric")
    ] = [],  # noqa: B006 - FastAPI copies query defaults
    score: Annotated[str | None, Query(description="column of the model's score")] = None,
    value: Annotated[str | None, Query(description="column of the model's numeric output")] = None,
    label: Annotated[str | None, Query(description="column of the model's predicted label")] = None,
) -> ReferencePublic:
    """Profile the training data in the body and make it the model's reference."""
    from driftline.detectors.reference import (
        ProfileTooLarge,
        UnknownModel,
        check_model_id,
        prepare_reference,
    )

    try:  # before reading the body: an unknown model is refused whatever it sends
        check_model_id(model, config.known_models)
    except UnknownModel as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    data = await _table(request)
    try:
        profile = await run_in_threadpool(
            lambda: prepare_reference(
                data,
                model_id=model,
                known_models=config.known_models,
                version=version,
                categorical=categorical,
                prediction_score=score,
                prediction_value=value,
                prediction_label=label,
            )
        )
    except UnknownModel as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except ProfileTooLarge as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from exc
    except (ValueError, TypeError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    existed = references.get(model) is not None
    entry = await run_in_threadpool(
        lambda: references.publish(profile, uploaded_by=principal.actor)
    )
    response.status_code = status.HTTP_200_OK if existed else status.HTTP_201_CREATED
    response.headers["ETag"] = f'"{entry.profile.reference_id}"'
    response.headers["Location"] = f"/v1/models/{model}/reference"
    return reference_public(entry)


@router.get(
    "/{model}/reference",
    response_model=ReferencePublic,
    responses={404: {"model": Message, "description": "no reference uploaded for the model"}},
)
def get_reference(
    model: ModelPath, response: Response, _: ReadKey, references: ReferencesDep
) -> ReferencePublic:
    """The model's current uploaded reference. (Without one, workers use the model's first
    events; that reference is in the ``reference_profiles`` table, not here.)"""
    entry = references.get(model)
    if entry is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"no reference uploaded for model {model!r}; the workers use its first events",
        )
    response.headers["ETag"] = f'"{entry.profile.reference_id}"'
    return reference_public(entry)
