"""API keys (admin scope): list, create, revoke. The CLI (``driftline api-key``) does the same
without a running API, which is how the first admin key comes to exist."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from pydantic import Field, StringConstraints

from .. import crud
from ..control_plane import Record
from ..deps import AdminKey, ControlPlaneDep
from ..models import ApiKeyPublic, ApiKeysPublic, Message, Scope, Strict
from .common import audit, not_found, readables

router = APIRouter(prefix="/api-keys", tags=["api-keys"])


class ApiKeyCreate(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=3)]


class ApiKeyCreated(ApiKeyPublic):
    token: str = Field(description="The key itself; shown only in this response.")


def api_key_public(record: Record) -> ApiKeyPublic:
    return ApiKeyPublic(
        id=record.id,
        name=record.data["name"],
        scopes=record.data["scopes"],
        created_at=record.created_at,
        created_by=record.updated_by,
        version=record.version,
    )


@router.get("", response_model=ApiKeysPublic)
def list_api_keys(control_plane: ControlPlaneDep, _: AdminKey) -> ApiKeysPublic:
    keys = readables(api_key_public, control_plane.list("apikey"))
    return ApiKeysPublic(data=keys, count=len(keys))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def create_api_key(
    key_in: ApiKeyCreate, request: Request, control_plane: ControlPlaneDep, principal: AdminKey
) -> ApiKeyCreated:
    token, record = crud.create_api_key(
        control_plane=control_plane, name=key_in.name, scopes=key_in.scopes,
        actor=principal.actor,
    )  # fmt: skip
    audit(request, record, op="upsert")
    return ApiKeyCreated(**api_key_public(record).model_dump(), token=token)


@router.delete(
    "/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {"model": Message}}
)
def revoke_api_key(
    key_id: str, request: Request, control_plane: ControlPlaneDep, principal: AdminKey
) -> Response:
    if control_plane.get("apikey", key_id) is None:
        raise not_found("API key", key_id)
    deleted = crud.revoke_api_key(control_plane=control_plane, key_id=key_id, actor=principal.actor)
    audit(request, deleted, op="delete", actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
