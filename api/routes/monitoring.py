"""A model's own monitoring settings: its false-alarm budget and how its windows are cut
(docs/drift.md, "Per-model settings").

``PUT /v1/models/{model}/monitoring`` (write scope) replaces the model's settings with the
body; a field left out (or null) takes the workers' default (``DRIFTLINE_MONITOR_*``), so a
changed default still reaches it. ``GET`` (read scope) answers what was set and the settings
in effect; ``DELETE`` (write scope) returns the model to the defaults. The settings are the
control-plane record ``monitoring:<model_id>`` on ``driftline.rules.v1``
(:mod:`driftline.schemas.monitoring`), which every worker follows: a running worker uses them
from the model's next window on. Values are checked by the monitor itself
(``MonitorConfig.with_settings``, ``FalseAlarmBudget``): 422 names the setting, nothing is
written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import quote

from driftline.schemas.monitoring import KIND, MonitoringSettings
from fastapi import APIRouter, HTTPException, Path, Request, Response, status
from pydantic import BaseModel, Field, StrictFloat, StrictInt

from .. import crud
from ..control_plane import MUST_NOT_EXIST, Record
from ..deps import ConfigDep, ControlPlaneDep, IfMatch, ReadKey, WriteKey
from ..models import Message, Strict
from .common import audit, conditional_write, expected_version, meta, set_etag

router = APIRouter(prefix="/models", tags=["monitoring"])

ModelPath = Annotated[str, Path(min_length=1, max_length=255, description="the model_id")]


class MonitoringSettingsIn(Strict):
    """A model's own settings; a field left out or null takes the workers' default. Numbers
    only (strict: ``true`` or ``"2000"`` is not a window size)."""

    false_alarms: StrictFloat | None = Field(
        None, gt=0, allow_inf_nan=False, examples=[1],
        description="the budget: at most this many false alarms, expected, per `days` of "
        "this model's traffic (DRIFTLINE_MONITOR_FALSE_ALARMS)",
    )  # fmt: skip
    days: StrictFloat | None = Field(
        None, gt=0, le=36_500, allow_inf_nan=False, examples=[30],
        description="the budget's period in days (DRIFTLINE_MONITOR_FALSE_ALARM_DAYS)",
    )  # fmt: skip
    events_per_day: StrictFloat | None = Field(
        None, gt=0, allow_inf_nan=False, examples=[200_000],
        description="upper estimate of the model's events per day, to spread the budget "
        "over its windows (DRIFTLINE_MONITOR_EVENTS_PER_DAY)",
    )  # fmt: skip
    window_size: StrictInt | None = Field(
        None, ge=100, examples=[2000],
        description="events per window, at least 100 (DRIFTLINE_MONITOR_WINDOW_SIZE)",
    )  # fmt: skip
    max_window_seconds: StrictFloat | None = Field(
        None, gt=0, allow_inf_nan=False, examples=[3600],
        description="a window also closes once this much event time has passed since its "
        "first event (DRIFTLINE_MONITOR_MAX_WINDOW_SECONDS)",
    )  # fmt: skip
    auto_reference_events: StrictInt | None = Field(
        None, ge=100, examples=[5000],
        description="without an uploaded reference, the model's first N events are its "
        "reference (DRIFTLINE_MONITOR_AUTO_REFERENCE_EVENTS)",
    )  # fmt: skip
    version: int | None = Field(
        None, ge=0,
        description="the version this change is based on (409 when stale); 0: the model must "
        "not have settings yet",
    )  # fmt: skip


class MonitoringEffective(BaseModel):
    """The settings the workers use for the model: its own over their defaults."""

    false_alarms: float
    days: float
    events_per_day: float
    window_size: int
    max_window_seconds: float
    auto_reference_events: int
    windows_per_day: float = Field(
        description="upper estimate of the windows the model closes a day, over which the "
        "budget is spread (docs/drift.md, \"The false-alarm budget\")"
    )


class MonitoringSettingsPublic(BaseModel):
    """A model's monitoring settings: what was set for it, and what is in effect."""

    model_id: str
    version: int | None = Field(
        description="version of the model's own settings; null: it has none (defaults)"
    )
    created_at: str | None = None
    updated_at: str | None = None
    updated_by: str | None = None
    settings: dict[str, float | int] = Field(
        description="the settings set for this model; the others take the defaults"
    )
    effective: MonitoringEffective


def monitoring_public(
    model: str, record: Record | None, defaults: Mapping[str, float]
) -> MonitoringSettingsPublic:
    """The public view; ``ValueError`` for a record that is not usable settings."""
    values: dict[str, float | int] = {}
    stamps: dict[str, Any] = {"version": None}
    if record is not None:
        parsed = MonitoringSettings.from_record(record.id, record.version, record.data)
        values = dict(parsed.values)
        stamps = {k: v for k, v in meta(record).items() if k != "id"}
    config = crud.effective_monitoring(defaults, values)
    effective = MonitoringEffective(**config.settings(), windows_per_day=config.windows_per_day())
    return MonitoringSettingsPublic(model_id=model, settings=values, effective=effective, **stamps)


def _expect(current: Record | None, if_match: int | None, version: int | None) -> int | None:
    """The version a write is conditional on (``expected_version``), for a model that may
    have no settings yet: then only ``version: 0`` (or no condition) can hold."""
    if current is not None:
        if version == 0:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"version 0 is stale: model {current.id!r} has settings at version "
                f"{current.version}; read them again and reapply your change",
            )
        return expected_version(current, if_match=if_match, body_version=version)
    if if_match is not None:
        raise HTTPException(
            status.HTTP_412_PRECONDITION_FAILED,
            f"If-Match is version {if_match} but the model has no settings of its own",
        )
    if version is not None and version != 0:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"version {version} is stale: the model has no settings of its own (use 0)",
        )
    return MUST_NOT_EXIST if version == 0 else None


_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Message, "description": "a model this deployment does not accept"},
    409: {"model": Message, "description": "stale `version` in the body"},
    412: {"model": Message, "description": "`If-Match` does not match the current version"},
}


@router.put(
    "/{model}/monitoring",
    response_model=MonitoringSettingsPublic,
    responses={201: {"model": MonitoringSettingsPublic, "description": "the model's first settings"},
               **_ERRORS},  # fmt: skip
)
def put_monitoring(
    model: ModelPath,
    body: MonitoringSettingsIn,
    request: Request,
    response: Response,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
    config: ConfigDep,
    if_match: IfMatch,
) -> MonitoringSettingsPublic:
    """Replace the model's own settings; the workers use them from its next window on."""
    from driftline.detectors.reference import UnknownModel, check_model_id

    try:
        check_model_id(model, config.known_models)
    except UnknownModel as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    current = control_plane.get(KIND, model)
    expect = _expect(current, if_match, body.version)
    try:
        with conditional_write(if_match):
            record = crud.set_monitoring(
                control_plane=control_plane,
                model_id=model,
                settings=body.model_dump(exclude={"version"}),
                defaults=config.monitor_defaults,
                actor=principal.actor,
                expect=expect,
            )
    except ValueError as exc:  # the monitor's own checks
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["body"], "msg": str(exc), "type": "value_error"}],
        ) from exc
    audit(request, record, op="upsert")
    response.status_code = status.HTTP_200_OK if current is not None else status.HTTP_201_CREATED
    # a header is latin-1: the model id goes percent-encoded, as in a URL
    response.headers["Location"] = f"/v1/models/{quote(model, safe='')}/monitoring"
    set_etag(response, record)
    return monitoring_public(model, record, config.monitor_defaults)


@router.get("/{model}/monitoring", response_model=MonitoringSettingsPublic)
def get_monitoring(
    model: ModelPath,
    response: Response,
    control_plane: ControlPlaneDep,
    _: ReadKey,
    config: ConfigDep,
) -> MonitoringSettingsPublic:
    """The model's own settings (if any) and the settings in effect. A model without its own
    answers 200 with ``version: null`` and the defaults."""
    record = control_plane.get(KIND, model)
    try:
        public = monitoring_public(model, record, config.monitor_defaults)
    except ValueError as exc:
        # written by something other than this API: the workers skip it too (defaults)
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"model {model!r} has a monitoring record this API cannot use ({exc}); the "
            "workers ignore it and use their defaults",
        ) from exc
    if record is not None:
        set_etag(response, record)
    return public


@router.delete(
    "/{model}/monitoring",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"model": Message, "description": "the model has no settings of its own"},
               412: _ERRORS[412]},  # fmt: skip
)
def delete_monitoring(
    model: ModelPath,
    request: Request,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
    if_match: IfMatch,
) -> Response:
    """Back to the workers' defaults from the model's next window on."""
    current = control_plane.get(KIND, model)
    if current is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"model {model!r} has no monitoring settings of its own"
        )
    expect = expected_version(current, if_match=if_match, body_version=None)
    with conditional_write(if_match):
        deleted = crud.delete_monitoring(
            control_plane=control_plane, model_id=model, actor=principal.actor, expect=expect
        )
    audit(request, deleted, op="delete", actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
