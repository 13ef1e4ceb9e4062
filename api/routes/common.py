"""Helpers the routers share: ETags, version checks, audit rows, Record -> public dicts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from fastapi import HTTPException, Request, Response, status
from pydantic import ValidationError

from ..control_plane import Record, VersionConflict
from ..tables import write_audit

log = logging.getLogger(__name__)
T = TypeVar("T")


def meta(record: Record) -> dict[str, Any]:
    return {
        "id": record.id,
        "version": record.version,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "updated_by": record.updated_by,
    }


def set_etag(response: Response, record: Record) -> None:
    response.headers["ETag"] = f'"{record.version}"'


def expected_version(record: Record, *, if_match: int | None, body_version: int | None) -> int:
    """The version a change is conditional on; 412 for a stale If-Match, 409 for a stale
    ``version`` in the body. Without either the change applies to the current version."""
    if if_match is not None and if_match != record.version:
        raise HTTPException(
            status.HTTP_412_PRECONDITION_FAILED,
            f"If-Match is version {if_match} but {record.kind} {record.id} is at version "
            f"{record.version}",
        )
    if body_version is not None and body_version != record.version:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"version {body_version} is stale: {record.kind} {record.id} is at version "
            f"{record.version}; read it again and reapply your change",
        )
    return record.version


@contextmanager
def conditional_write(if_match: int | None) -> Iterator[None]:
    """Around the write of a change checked by :func:`expected_version`: the control plane
    checks the version again under its write lock, and a writer that got in between makes
    that check fail with :class:`VersionConflict`. When the condition came from ``If-Match``
    that is still a failed precondition (412), however many clients race; only a stale body
    ``version`` is a 409."""
    try:
        yield
    except VersionConflict as exc:
        if if_match is None:
            raise
        raise HTTPException(
            status.HTTP_412_PRECONDITION_FAILED, f"If-Match is version {if_match}: {exc}"
        ) from exc


def not_found(kind: str, ident: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no {kind} {ident!r}")


def audit(request: Request, record: Record, *, op: str, actor: str | None = None) -> None:
    store = request.app.state.store
    if store is not None and not write_audit(store, record, op=op, actor=actor):
        request.app.state.metrics.inc("driftline_api_audit_failures_total")


def readable(build: Callable[[Record], T], record: Record) -> T | None:
    """``build(record)``, or None for a record whose data is not a valid entity (another
    writer's, or an older format): readers skip such records instead of failing."""
    try:
        return build(record)
    except (ValidationError, KeyError, TypeError, ValueError) as exc:
        log.warning("skipping malformed control-plane record %s v%d: %s", record.key,
                    record.version, exc)  # fmt: skip
        return None


def readables(build: Callable[[Record], T], records: Iterable[Record]) -> list[T]:
    return [x for x in (readable(build, r) for r in records) if x is not None]


def get_readable(
    control_plane: Any, kind: str, ident: str, build: Callable[[Record], Any]
) -> Record:
    """The record of ``kind:ident``; 404 when absent or malformed."""
    record = control_plane.get(kind, ident)
    if record is None:
        raise not_found(kind, ident)
    if readable(build, record) is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"{kind} {ident!r} exists on the control plane but is malformed (not written by "
            "this API?), so the API ignores it",
        )
    return record
