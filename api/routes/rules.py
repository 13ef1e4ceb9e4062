"""Alert rules: CRUD with optimistic concurrency, enable/disable, dry-run over history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import StringConstraints

from .. import crud
from ..control_plane import Record
from ..deps import ConfigDep, ControlPlaneDep, IfMatch, ReadKey, StoreDep, WriteKey
from ..dryrun import evaluate
from ..models import (
    DryRunRange,
    DryRunResult,
    DryRunUnsaved,
    Message,
    RuleBase,
    RuleCreate,
    RulePublic,
    RuleReplace,
    RulesPublic,
    RuleUpdate,
)
from ..validation import check_range, check_rule
from .common import (
    audit,
    conditional_write,
    expected_version,
    get_readable,
    meta,
    readables,
    set_etag,
)

router = APIRouter(prefix="/rules", tags=["rules"])

LabelMatcher = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}:.{0,1024}$")
]

ERRORS = {
    404: {"model": Message, "description": "No such rule"},
    409: {"model": Message, "description": "Stale `version` in the body"},
    412: {"model": Message, "description": "`If-Match` does not match the current version"},
}


def rule_public(record: Record) -> RulePublic:
    return RulePublic.model_validate({**record.data, **meta(record)})


def _get(control_plane: ControlPlaneDep, rule_id: str) -> Record:
    return get_readable(control_plane, "rule", rule_id, rule_public)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=RulePublic)
def create_rule(
    rule_in: RuleCreate,
    request: Request,
    response: Response,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
) -> RulePublic:
    record = crud.create_rule(control_plane=control_plane, rule_in=rule_in, actor=principal.actor)
    audit(request, record, op="upsert")
    set_etag(response, record)
    response.headers["Location"] = f"/v1/rules/{record.id}"
    return rule_public(record)


@router.get("", response_model=RulesPublic)
def list_rules(
    control_plane: ControlPlaneDep,
    _: ReadKey,
    model: Annotated[
        str | None, Query(max_length=200, description="Rules that watch this model id")
    ] = None,
    label: Annotated[
        list[LabelMatcher],
        Query(description="Rule label matcher `key:value`; repeat for AND", max_length=32),
    ] = [],  # noqa: B006 - FastAPI copies query defaults
    state: Literal["enabled", "disabled"] | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RulesPublic:
    labels = dict(item.split(":", 1) for item in label)
    enabled = None if state is None else state == "enabled"
    rules = readables(
        rule_public,
        crud.list_rules(control_plane=control_plane, model=model, labels=labels, enabled=enabled),
    )
    return RulesPublic(data=rules[offset : offset + limit], count=len(rules))


@router.get("/{rule_id}", response_model=RulePublic, responses={404: ERRORS[404]})
def read_rule(
    rule_id: str, response: Response, control_plane: ControlPlaneDep, _: ReadKey
) -> RulePublic:
    record = _get(control_plane, rule_id)
    set_etag(response, record)
    return rule_public(record)


@router.put("/{rule_id}", response_model=RulePublic, responses=ERRORS)
def replace_rule(
    rule_id: str,
    rule_in: RuleReplace,
    request: Request,
    response: Response,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
    if_match: IfMatch,
) -> RulePublic:
    current = _get(control_plane, rule_id)
    expect = expected_version(current, if_match=if_match, body_version=rule_in.version)
    with conditional_write(if_match):
        record = crud.replace_rule(
            control_plane=control_plane,
            current=current,
            rule_in=rule_in,
            actor=principal.actor,
            expect=expect,
        )
    audit(request, record, op="upsert")
    set_etag(response, record)
    return rule_public(record)


@router.patch("/{rule_id}", response_model=RulePublic, responses=ERRORS)
def update_rule(
    rule_id: str,
    changes: RuleUpdate,
    request: Request,
    response: Response,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
    if_match: IfMatch,
) -> RulePublic:
    current = _get(control_plane, rule_id)
    expect = expected_version(current, if_match=if_match, body_version=changes.version)
    with conditional_write(if_match):
        record = crud.update_rule(
            control_plane=control_plane,
            current=current,
            changes=changes,
            actor=principal.actor,
            expect=expect,
        )
    audit(request, record, op="upsert")
    set_etag(response, record)
    return rule_public(record)


@router.delete(
    "/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={k: v for k, v in ERRORS.items() if k != 409},
)
def delete_rule(
    rule_id: str,
    request: Request,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
    if_match: IfMatch,
) -> Response:
    current = _get(control_plane, rule_id)
    expect = expected_version(current, if_match=if_match, body_version=None)
    with conditional_write(if_match):
        deleted = crud.delete_rule(
            control_plane=control_plane, rule_id=rule_id, actor=principal.actor, expect=expect
        )
    audit(request, deleted, op="delete", actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _set_enabled(
    rule_id: str,
    enabled: bool,
    request: Request,
    response: Response,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
    if_match: int | None,
) -> RulePublic:
    current = _get(control_plane, rule_id)
    expect = expected_version(current, if_match=if_match, body_version=None)
    if current.data.get("enabled", True) == enabled:
        set_etag(response, current)
        return rule_public(current)
    with conditional_write(if_match):
        record = crud.update_rule(
            control_plane=control_plane,
            current=current,
            changes=RuleUpdate(enabled=enabled),
            actor=principal.actor,
            expect=expect,
        )
    audit(request, record, op="upsert")
    set_etag(response, record)
    return rule_public(record)


@router.post("/{rule_id}/enable", response_model=RulePublic, responses=ERRORS)
def enable_rule(
    rule_id: str,
    request: Request,
    response: Response,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
    if_match: IfMatch,
) -> RulePublic:
    return _set_enabled(rule_id, True, request, response, control_plane, principal, if_match)


@router.post("/{rule_id}/disable", response_model=RulePublic, responses=ERRORS)
def disable_rule(
    rule_id: str,
    request: Request,
    response: Response,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
    if_match: IfMatch,
) -> RulePublic:
    return _set_enabled(rule_id, False, request, response, control_plane, principal, if_match)


DRY_RUN_ERRORS = {503: {"model": Message, "description": "No ClickHouse store configured"}}


def _dry_run(
    rule: RuleBase, start: datetime, end: datetime, store: StoreDep, config: ConfigDep
) -> DryRunResult:
    start, end = check_range(start, end, max_days=config.dry_run_max_days)
    return evaluate(store, rule, start, end, max_rows=config.dry_run_max_rows)


@router.post(
    "/{rule_id}/dry-run",
    response_model=DryRunResult,
    responses={404: ERRORS[404], **DRY_RUN_ERRORS},
)
def dry_run_rule(
    rule_id: str,
    body: DryRunRange,
    _: ReadKey,
    control_plane: ControlPlaneDep,
    store: StoreDep,
    config: ConfigDep,
) -> DryRunResult:
    """Would this saved rule have fired between ``start`` and ``end``? Evaluated on ClickHouse
    history: drift_events for drift signals, model_metrics_minute for metrics, detector_stats
    for statistics."""
    rule = RuleCreate.model_validate(_get(control_plane, rule_id).data)
    return _dry_run(rule, body.start, body.end, store, config)


# Registered on the app as /v1/rules:dry-run (a custom method on the collection, AIP-136).
dry_run_router = APIRouter(tags=["rules"])


@dry_run_router.post("/rules:dry-run", response_model=DryRunResult, responses=DRY_RUN_ERRORS)
def dry_run_unsaved(
    body: DryRunUnsaved,
    _: ReadKey,
    control_plane: ControlPlaneDep,
    store: StoreDep,
    config: ConfigDep,
) -> DryRunResult:
    """Would this unsaved rule have fired between ``start`` and ``end``?"""
    check_rule(body.rule, control_plane=control_plane)
    return _dry_run(body.rule, body.start, body.end, store, config)
