"""Silences: label matchers that mute alerts between ``starts_at`` and ``ends_at``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Request, Response, status

from .. import crud
from ..control_plane import Record
from ..deps import ControlPlaneDep, IfMatch, ReadKey, WriteKey
from ..models import Message, SilenceCreate, SilencePublic, SilencesPublic
from .common import (
    audit,
    conditional_write,
    expected_version,
    get_readable,
    meta,
    readables,
    set_etag,
)

router = APIRouter(prefix="/silences", tags=["silences"])


def silence_public(record: Record) -> SilencePublic:
    state = crud.silence_state(record.data, datetime.now(UTC))
    return SilencePublic.model_validate({**record.data, **meta(record), "state": state})


def _get(control_plane: ControlPlaneDep, silence_id: str) -> Record:
    return get_readable(control_plane, "silence", silence_id, silence_public)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SilencePublic)
def create_silence(
    silence_in: SilenceCreate,
    request: Request,
    response: Response,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
) -> SilencePublic:
    record = crud.create_silence(
        control_plane=control_plane, silence_in=silence_in, actor=principal.actor
    )
    audit(request, record, op="upsert")
    set_etag(response, record)
    response.headers["Location"] = f"/v1/silences/{record.id}"
    return silence_public(record)


@router.get("", response_model=SilencesPublic)
def list_silences(
    control_plane: ControlPlaneDep,
    _: ReadKey,
    state: Literal["pending", "active", "expired"] | None = None,
) -> SilencesPublic:
    silences = readables(silence_public, crud.list_silences(control_plane=control_plane))
    if state is not None:
        silences = [s for s in silences if s.state == state]
    return SilencesPublic(data=silences, count=len(silences))


@router.get("/{silence_id}", response_model=SilencePublic, responses={404: {"model": Message}})
def read_silence(
    silence_id: str, response: Response, control_plane: ControlPlaneDep, _: ReadKey
) -> SilencePublic:
    record = _get(control_plane, silence_id)
    set_etag(response, record)
    return silence_public(record)


@router.delete(
    "/{silence_id}",
    response_model=SilencePublic,
    responses={404: {"model": Message}, 412: {"model": Message}},
)
def expire_silence(
    silence_id: str,
    request: Request,
    response: Response,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
    if_match: IfMatch,
) -> SilencePublic:
    """Expire the silence now (it stays listed, as ``expired``)."""
    current = _get(control_plane, silence_id)
    expect = expected_version(current, if_match=if_match, body_version=None)
    with conditional_write(if_match):
        record = crud.expire_silence(
            control_plane=control_plane, current=current, actor=principal.actor, expect=expect
        )
    if record is not current:
        audit(request, record, op="upsert")
    set_etag(response, record)
    return silence_public(record)
