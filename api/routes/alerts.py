"""Alerts: current state and history (written by the workers to ClickHouse ``alerts``), and
acknowledgements (recorded on the control plane as ``ack:<fingerprint>``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request

from .. import crud
from ..control_plane import BaseControlPlane, Record
from ..deps import ConfigDep, ControlPlaneDep, ReadKey, StoreDep, WriteKey
from ..models import AckCreate, AckPublic, AlertPublic, AlertsPublic, Message
from ..sql import hexed, text
from .common import audit, not_found, readable

router = APIRouter(prefix="/alerts", tags=["alerts"])

Fingerprint = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
_COLUMNS = (
    "fingerprint, rule_id, rule_version, alertname, model_id, severity, state, labels, "
    "annotations, value, toUnixTimestamp64Milli(starts_at), "
    "if(ends_at IS NULL, NULL, toUnixTimestamp64Milli(assumeNotNull(ends_at))), "
    "toUnixTimestamp64Milli(updated_at), trigger_event_ids"
)
# Columns the workers' evaluator adds (sinks migration 0004); a table the API created itself,
# before any worker migrated it, lacks them, so they are read when present.
_OPTIONAL = {"silenced": "toUInt8(0)", "silence_ids": "CAST([], 'Array(String)')",
             "inhibited_by": "CAST(NULL, 'Nullable(String)')"}  # fmt: skip


def _columns(store: Any) -> str:
    present = store.column_types("alerts")
    extra = [name if name in present else f"{default} AS {name}"
             for name, default in _OPTIONAL.items()]  # fmt: skip
    return _COLUMNS + ", " + ", ".join(extra)


_FILTERS = (
    f" WHERE ({text('model')} = '' OR model_id = {text('model')})"
    f" AND ({text('rule_id')} = '' OR rule_id = {text('rule_id')})"
    f" AND ({text('severity')} = '' OR severity = {text('severity')})"
    f" AND ({text('fingerprint')} = '' OR fingerprint = {text('fingerprint')})"
    " AND updated_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')"
    " AND updated_at < fromUnixTimestamp64Milli({until:Int64}, 'UTC')"
)


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _ack_public(record: Record) -> AckPublic:
    return AckPublic.model_validate({**record.data, "version": record.version})


def _ack(control_plane: BaseControlPlane, fingerprint: str) -> AckPublic | None:
    record = control_plane.get("ack", fingerprint)
    return None if record is None else readable(_ack_public, record)


def _alert(row: tuple, control_plane: BaseControlPlane) -> AlertPublic:
    (fp, rule_id, rule_version, name, model, severity, state, labels, annotations, value,
     starts, ends, updated, triggers, silenced, silence_ids, inhibited_by) = row  # fmt: skip
    return AlertPublic(
        fingerprint=fp,
        rule_id=rule_id,
        rule_version=rule_version,
        alertname=name,
        model_id=model,
        severity=severity,
        state=state,
        labels=dict(labels or {}),
        annotations=dict(annotations or {}),
        value=value,
        starts_at=_time(starts),
        ends_at=_time(ends),
        updated_at=_time(updated),
        trigger_event_ids=list(triggers or []),
        silenced=bool(silenced),
        silence_ids=list(silence_ids or []),
        inhibited_by=inhibited_by,
        acknowledgement=_ack(control_plane, fp),
    )


def _params(**values: Any) -> dict[str, Any]:
    since, until = values.pop("since"), values.pop("until")
    params = {k: hexed(v or "") for k, v in values.items()}
    params["since"] = int(since.timestamp() * 1000) if since else 0
    # Far future, in DateTime64(3)'s range.
    params["until"] = int(until.timestamp() * 1000) if until else 4_102_444_800_000
    return params


Model = Annotated[str | None, Query(max_length=200)]
Ident = Annotated[str | None, Query(max_length=128)]
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("", response_model=AlertsPublic, responses={503: {"model": Message}})
def list_alerts(
    _: ReadKey,
    store: StoreDep,
    control_plane: ControlPlaneDep,
    config: ConfigDep,
    state: Literal["pending", "firing", "resolved"] | None = None,
    model: Model = None,
    rule_id: Ident = None,
    severity: Literal["info", "warning", "critical"] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
) -> AlertsPublic:
    """Current state of each alert (its latest row), newest first."""
    params = _params(model=model, rule_id=rule_id, severity=severity, fingerprint=None,
                     since=since, until=until)  # fmt: skip
    params.update(state=hexed(state or ""), limit=min(limit, config.max_alerts))
    rows = store.query(
        f"SELECT * FROM (SELECT {_columns(store)}, updated_at AS t FROM alerts FINAL{_FILTERS}"
        " ORDER BY fingerprint, updated_at DESC LIMIT 1 BY fingerprint)"
        f" WHERE ({text('state')} = '' OR state = {text('state')})"
        " ORDER BY t DESC LIMIT {limit:UInt32}",
        params,
    )
    data = [_alert(row[:-1], control_plane) for row in rows]
    return AlertsPublic(data=data, count=len(data))


@router.get("/history", response_model=AlertsPublic, responses={503: {"model": Message}})
def alert_history(
    _: ReadKey,
    store: StoreDep,
    control_plane: ControlPlaneDep,
    config: ConfigDep,
    fingerprint: Ident = None,
    model: Model = None,
    rule_id: Ident = None,
    severity: Literal["info", "warning", "critical"] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
) -> AlertsPublic:
    """Every state change (pending, firing, resolved), newest first."""
    params = _params(model=model, rule_id=rule_id, severity=severity, fingerprint=fingerprint,
                     since=since, until=until)  # fmt: skip
    params["limit"] = min(limit, config.max_alerts)
    rows = store.query(
        f"SELECT {_columns(store)} FROM alerts FINAL{_FILTERS} ORDER BY updated_at DESC "
        "LIMIT {limit:UInt32}",
        params,
    )
    data = [_alert(row, control_plane) for row in rows]
    return AlertsPublic(data=data, count=len(data))


@router.get(
    "/{fingerprint}",
    response_model=AlertPublic,
    responses={404: {"model": Message}, 503: {"model": Message}},
)
def read_alert(
    fingerprint: Fingerprint, _: ReadKey, store: StoreDep, control_plane: ControlPlaneDep
) -> AlertPublic:
    params = _params(model=None, rule_id=None, severity=None, fingerprint=fingerprint,
                     since=None, until=None)  # fmt: skip
    rows = store.query(
        f"SELECT {_columns(store)} FROM alerts FINAL{_FILTERS} ORDER BY updated_at DESC LIMIT 1",
        params,
    )
    if not rows:
        raise not_found("alert", fingerprint)
    return _alert(rows[0], control_plane)


@router.post("/{fingerprint}/ack", response_model=AckPublic)
def acknowledge_alert(
    fingerprint: Fingerprint,
    ack_in: AckCreate,
    request: Request,
    control_plane: ControlPlaneDep,
    principal: WriteKey,
) -> AckPublic:
    """Acknowledge an alert with a comment; a later ack replaces the earlier one (the audit
    table keeps them all). Works without a store: the ack lives on the control plane."""
    record = crud.acknowledge(
        control_plane=control_plane,
        fingerprint=fingerprint,
        comment=ack_in.comment,
        actor=principal.actor,
    )
    audit(request, record, op="upsert")
    return AckPublic.model_validate({**record.data, "version": record.version})
