"""Subscriptions: webhooks that receive alerts, signed with HMAC-SHA256 of their secret.

The secret is returned in full only by the creation response (or when a PATCH rotates it);
every other response masks it."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from .. import crud
from ..control_plane import Record
from ..deps import ControlPlaneDep, IfMatch, ReadKey, WriteKey
from ..models import (
    Message,
    SubscriptionCreate,
    SubscriptionPublic,
    SubscriptionsPublic,
    SubscriptionUpdate,
)
from .common import (
    audit,
    conditional_write,
    expected_version,
    get_readable,
    meta,
    readables,
    set_etag,
)

router = APIRouter(prefix="/subscriptions", tags=["subscriptions"])
ERRORS = {404: {"model": Message}, 409: {"model": Message}, 412: {"model": Message}}


def subscription_public(record: Record, *, reveal: bool = False) -> SubscriptionPublic:
    data = dict(record.data)
    secret = data.get("secret", "")
    data["secret"] = secret if reveal else crud.mask_secret(secret)
    return SubscriptionPublic.model_validate({**data, **meta(record)})


def _get(control_plane: ControlPlaneDep, subscription_id: str) -> Record:
    return get_readable(control_plane, "subscription", subscription_id, subscription_public)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SubscriptionPublic)
def create_subscription(
    subscription_in: SubscriptionCreate,
    request: Request,
    response: Response,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
) -> SubscriptionPublic:
    record = crud.create_subscription(
        control_plane=control_plane, subscription_in=subscription_in, actor=principal.actor
    )
    audit(request, record, op="upsert")
    set_etag(response, record)
    response.headers["Location"] = f"/v1/subscriptions/{record.id}"
    return subscription_public(record, reveal=True)


@router.get("", response_model=SubscriptionsPublic)
def list_subscriptions(control_plane: ControlPlaneDep, _: ReadKey) -> SubscriptionsPublic:
    subscriptions = readables(subscription_public, control_plane.list("subscription"))
    return SubscriptionsPublic(data=subscriptions, count=len(subscriptions))


@router.get("/{subscription_id}", response_model=SubscriptionPublic, responses={404: ERRORS[404]})
def read_subscription(
    subscription_id: str, response: Response, control_plane: ControlPlaneDep, _: ReadKey
) -> SubscriptionPublic:
    record = _get(control_plane, subscription_id)
    set_etag(response, record)
    return subscription_public(record)


@router.patch("/{subscription_id}", response_model=SubscriptionPublic, responses=ERRORS)
def update_subscription(
    subscription_id: str,
    changes: SubscriptionUpdate,
    request: Request,
    response: Response,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
    if_match: IfMatch,
) -> SubscriptionPublic:
    current = _get(control_plane, subscription_id)
    expect = expected_version(current, if_match=if_match, body_version=changes.version)
    with conditional_write(if_match):
        record = crud.update_subscription(
            control_plane=control_plane,
            current=current,
            changes=changes,
            actor=principal.actor,
            expect=expect,
        )
    audit(request, record, op="upsert")
    set_etag(response, record)
    return subscription_public(record, reveal=changes.secret is not None)


@router.delete(
    "/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=ERRORS,
)
def delete_subscription(
    subscription_id: str,
    request: Request,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
    if_match: IfMatch,
) -> Response:
    current = _get(control_plane, subscription_id)
    expect = expected_version(current, if_match=if_match, body_version=None)
    users = [
        r.id for r in control_plane.list("rule") if subscription_id in r.data.get("notify", [])
    ]
    if users:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"subscription {subscription_id} is notified by rules {users}; remove it there first",
        )
    with conditional_write(if_match):
        deleted = crud.delete_subscription(
            control_plane=control_plane,
            subscription_id=subscription_id,
            actor=principal.actor,
            expect=expect,
        )
    audit(request, deleted, op="delete", actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
