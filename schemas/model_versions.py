"""The ModelPublished contract every writer and reader shares (the trainer, the API, the
workers): what a version's content is, its deterministic id, and the checks a record passes
before it is published.

A version is immutable, as in MLflow's model registry: publishing the same (model, version)
again with the same content is a harmless duplicate (same ``event_id``); with different
content it is refused (the API answers 409, the workers dead-letter it).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from typing import Any

from driftline.schemas.ids import event_id
from driftline.schemas.validation import InvalidEvent

__all__ = ["PublishedVersions", "content_hash", "published_event_id", "make_published", "validate_published"]

# Not part of what a version *is*: a re-publication by another publisher, at another time,
# is the same version.
_NOT_CONTENT = frozenset({"event_id", "published_at", "publisher"})
MAX_TEXT = 4096


def content_hash(record: dict[str, Any]) -> str:
    """Hash of a ModelPublished record's content (all but event id, publisher and time).

    >>> a = make_published("churn", "2", published_at=1, publisher="a")
    >>> content_hash(a) == content_hash({**a, "published_at": 2, "publisher": "b"})
    True
    """
    content = {k: v for k, v in sorted(record.items()) if k not in _NOT_CONTENT}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def published_event_id(record: dict[str, Any]) -> str:
    """The deterministic id of a ModelPublished record, from its content."""
    return event_id("model-published", record["model_id"], record["version"], content_hash(record))


def make_published(
    model_id: str,
    version: str,
    *,
    published_at: int,
    artifact_uri: str = "",
    training_window_start: int | None = None,
    training_window_end: int | None = None,
    retraining_request_id: str | None = None,
    previous_version: str | None = None,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
    reference_profile_id: str | None = None,
    publisher: str = "",
) -> dict[str, Any]:
    """A complete, validated ModelPublished record with its deterministic ``event_id``."""
    record: dict[str, Any] = {
        "event_id": "",
        "model_id": model_id,
        "version": version,
        "artifact_uri": artifact_uri,
        "training_window_start": training_window_start,
        "training_window_end": training_window_end,
        "retraining_request_id": retraining_request_id,
        "previous_version": previous_version,
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "tags": {k: str(v) for k, v in (tags or {}).items()},
        "reference_profile_id": reference_profile_id,
        "publisher": publisher,
        "published_at": int(published_at),
    }
    validate_published(record)
    record["event_id"] = published_event_id(record)
    return record


def validate_published(record: dict[str, Any]) -> None:
    """Raise ``InvalidEvent`` (with a DLQ reason) for a record no reader should take."""
    for name in ("model_id", "version"):
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            raise InvalidEvent("missing_field", f"{name} must be a non-empty string")
        if len(value) > 256 or "@" in value and name == "model_id":
            raise InvalidEvent(
                "invalid_value", f"{name} must be at most 256 characters (and a model id has no '@')"
            )
    if len(record.get("artifact_uri") or "") > MAX_TEXT:
        raise InvalidEvent("too_large", f"artifact_uri longer than {MAX_TEXT} characters")
    start, end = record.get("training_window_start"), record.get("training_window_end")
    for name, value in (("training_window_start", start), ("training_window_end", end)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise InvalidEvent("invalid_value", f"{name} must be epoch milliseconds >= 0")
    if start is not None and end is not None and end < start:
        raise InvalidEvent("invalid_value", "training_window_end is before training_window_start")
    for name, value in (record.get("metrics") or {}).items():
        if not isinstance(value, float | int) or not math.isfinite(value):
            raise InvalidEvent("non_finite_value", f"metric {name!r} must be a finite number")
    if not isinstance(record.get("published_at"), int) or record["published_at"] < 0:
        raise InvalidEvent("invalid_value", "published_at must be epoch milliseconds >= 0")


class PublishedVersions:
    """Every published version by (model, version), first one wins: what the workers' book
    and the API's registry both keep while they follow ``driftline.models.v1``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}

    def add(self, record: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """(new, conflicting): ``new`` when the version was not known; ``conflicting`` the
        record already published for it with other content (then ``record`` is refused)."""
        ident = (record["model_id"], record["version"])
        digest = content_hash(record)
        with self._lock:
            known = self._versions.get(ident)
            if known is None:
                self._versions[ident] = (digest, record)
                return True, None
        return False, (None if known[0] == digest else known[1])

    def get(self, model_id: str, version: str) -> dict[str, Any] | None:
        with self._lock:
            known = self._versions.get((model_id, version))
        return None if known is None else known[1]
