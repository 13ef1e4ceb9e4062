"""Keyword-only operations on the control plane, one group per entity.

They validate before they write (nothing half-written on error: a record either lands whole,
or nothing does) and return :class:`Record`s; routers turn them into ``XPublic`` models.
"""

from __future__ import annotations

import fnmatch
import secrets
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from driftline.schemas.monitoring import KIND as MONITORING
from driftline.schemas.silences import Silence, SilenceError

from .auth import new_api_key
from .control_plane import MUST_NOT_EXIST, BaseControlPlane, Record
from .models import (
    RuleBase,
    RuleCreate,
    RuleUpdate,
    SilenceCreate,
    SubscriptionCreate,
    SubscriptionUpdate,
    dump,
)
from .validation import check_rule, check_silence

__all__ = [
    "new_id",
    "create_rule",
    "list_rules",
    "update_rule",
    "replace_rule",
    "delete_rule",
    "rule_applies_to",
    "create_silence",
    "list_silences",
    "silence_state",
    "expire_silence",
    "create_subscription",
    "update_subscription",
    "delete_subscription",
    "mask_secret",
    "acknowledge",
    "create_api_key",
    "revoke_api_key",
    "effective_monitoring",
    "set_monitoring",
    "delete_monitoring",
]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


# -- rules ------------------------------------------------------------------------------------


def create_rule(*, control_plane: BaseControlPlane, rule_in: RuleCreate, actor: str) -> Record:
    check_rule(rule_in, control_plane=control_plane)
    return control_plane.put("rule", new_id("r"), dump(rule_in), actor=actor, expect=MUST_NOT_EXIST)


def rule_applies_to(data: Mapping[str, Any], model_id: str) -> bool:
    """Whether a rule watches ``model_id``, as far as the model id alone can tell: listed in
    ``models``, or matching the selector's ``model_id`` glob (a selector without one may match
    through other model labels, so it counts)."""
    if data.get("models") is not None:
        return model_id in data["models"]
    pattern = (data.get("model_selector") or {}).get("model_id")
    return pattern is None or fnmatch.fnmatchcase(model_id, pattern)


def list_rules(
    *,
    control_plane: BaseControlPlane,
    model: str | None = None,
    labels: Mapping[str, str] | None = None,
    enabled: bool | None = None,
) -> list[Record]:
    found = []
    for record in control_plane.list("rule"):
        data = record.data
        if enabled is not None and data.get("enabled", True) != enabled:
            continue
        if model is not None and not rule_applies_to(data, model):
            continue
        if labels and any(data.get("labels", {}).get(k) != v for k, v in labels.items()):
            continue
        found.append(record)
    return found


def replace_rule(
    *,
    control_plane: BaseControlPlane,
    current: Record,
    rule_in: RuleBase,
    actor: str,
    expect: int | None,
) -> Record:
    check_rule(rule_in, control_plane=control_plane)
    data = dump(RuleCreate.model_validate(rule_in.model_dump(by_alias=True, exclude={"version"})))
    return control_plane.put("rule", current.id, data, actor=actor, expect=expect)


def update_rule(
    *,
    control_plane: BaseControlPlane,
    current: Record,
    changes: RuleUpdate,
    actor: str,
    expect: int | None,
) -> Record:
    """Merge the fields ``changes`` sets into the current rule, validate the whole, write."""
    patch = changes.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"version"})
    merged = {**current.data, **patch}
    # Setting one way of choosing models replaces the other.
    if "models" in patch and patch["models"] is not None and "model_selector" not in patch:
        merged["model_selector"] = None
    if "model_selector" in patch and patch["model_selector"] is not None and "models" not in patch:
        merged["models"] = None
    rule = RuleCreate.model_validate(merged)
    return replace_rule(
        control_plane=control_plane, current=current, rule_in=rule, actor=actor, expect=expect
    )


def delete_rule(
    *, control_plane: BaseControlPlane, rule_id: str, actor: str, expect: int | None
) -> Record:
    return control_plane.delete("rule", rule_id, actor=actor, expect=expect)


# -- silences ---------------------------------------------------------------------------------


def create_silence(
    *, control_plane: BaseControlPlane, silence_in: SilenceCreate, actor: str
) -> Record:
    now = datetime.now(UTC)
    starts, ends = check_silence(silence_in, now=now)
    data = dump(silence_in)
    data.update(starts_at=_iso(starts), ends_at=_iso(ends), created_by=actor)
    return control_plane.put("silence", new_id("s"), data, actor=actor, expect=MUST_NOT_EXIST)


def silence_state(data: Mapping[str, Any], now: datetime) -> str:
    """``pending``, ``active`` or ``expired`` at ``now``, by the one silence semantics the
    workers and delivery use (``schemas/silences.py``); ``invalid`` for a record that is not a
    silence (written by another tool: it mutes nothing)."""
    try:
        silence = Silence.from_record("", 0, data)
    except SilenceError:
        return "invalid"
    at = round(now.timestamp() * 1000)
    if at < silence.starts_ms:
        return "pending"
    return "active" if silence.active(at) else "expired"


def list_silences(*, control_plane: BaseControlPlane, state: str | None = None) -> list[Record]:
    now = datetime.now(UTC)
    records = control_plane.list("silence")
    if state is None:
        return records
    return [r for r in records if silence_state(r.data, now) == state]


def expire_silence(
    *, control_plane: BaseControlPlane, current: Record, actor: str, expect: int | None
) -> Record:
    """End a silence now. The record stays (with ``ends_at`` = now) as the silence's history;
    compaction or an explicit purge removes it later."""
    now = datetime.now(UTC)
    data = dict(current.data)
    if silence_state(data, now) == "expired":
        return current
    data["ends_at"] = _iso(now)
    if silence_state(current.data, now) == "pending":
        data["starts_at"] = data["ends_at"]
    return control_plane.put("silence", current.id, data, actor=actor, expect=expect)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- subscriptions ----------------------------------------------------------------------------


def mask_secret(secret: str) -> str:
    return "****" + secret[-4:] if len(secret) >= 16 else "****"


def create_subscription(
    *, control_plane: BaseControlPlane, subscription_in: SubscriptionCreate, actor: str
) -> Record:
    data = dump(subscription_in)
    if not data.get("secret"):
        data["secret"] = secrets.token_urlsafe(32)
    return control_plane.put(
        "subscription", new_id("sub"), data, actor=actor, expect=MUST_NOT_EXIST
    )


def update_subscription(
    *,
    control_plane: BaseControlPlane,
    current: Record,
    changes: SubscriptionUpdate,
    actor: str,
    expect: int | None,
) -> Record:
    patch = changes.model_dump(mode="json", exclude_unset=True, exclude={"version"})
    if patch.get("secret") is None:
        patch.pop("secret", None)
    merged = {**current.data, **patch}
    SubscriptionCreate.model_validate(merged)
    return control_plane.put("subscription", current.id, merged, actor=actor, expect=expect)


def delete_subscription(
    *, control_plane: BaseControlPlane, subscription_id: str, actor: str, expect: int | None
) -> Record:
    return control_plane.delete("subscription", subscription_id, actor=actor, expect=expect)


# -- acknowledgements -------------------------------------------------------------------------


def acknowledge(
    *, control_plane: BaseControlPlane, fingerprint: str, comment: str, actor: str
) -> Record:
    """Record (or replace) the acknowledgement of one alert; the latest ack wins."""
    data = {
        "fingerprint": fingerprint,
        "comment": comment,
        "acked_by": actor,
        "acked_at": _iso(datetime.now(UTC)),
    }
    return control_plane.put("ack", fingerprint, data, actor=actor)


# -- api keys ---------------------------------------------------------------------------------


def create_api_key(
    *, control_plane: BaseControlPlane, name: str, scopes: list[str], actor: str
) -> tuple[str, Record]:
    """A new key: the token (show it once; only its hash is stored) and its record."""
    token, data = new_api_key(name=name, scopes=scopes)
    record = control_plane.put("apikey", data["id"], data, actor=actor, expect=MUST_NOT_EXIST)
    return token, record


def revoke_api_key(*, control_plane: BaseControlPlane, key_id: str, actor: str) -> Record:
    return control_plane.delete("apikey", key_id, actor=actor)


# -- a model's monitoring settings ------------------------------------------------------------


def effective_monitoring(
    defaults: Mapping[str, float], settings: Mapping[str, float | int]
) -> Any:
    """The ``MonitorConfig`` the workers use for a model: its own ``settings`` over the
    workers' ``defaults`` (both by setting name). ``ValueError`` naming the setting when the
    monitor refuses a value (``MonitorConfig.with_settings``: the monitor's own checks)."""
    # the monitor's pure settings code, at call time (api imports no detectors at import time)
    from driftline.detectors.monitor import MonitorConfig

    return MonitorConfig().with_settings(**defaults).with_settings(**settings)


def set_monitoring(
    *,
    control_plane: BaseControlPlane,
    model_id: str,
    settings: Mapping[str, float | int | None],
    defaults: Mapping[str, float],
    actor: str,
    expect: int | None,
) -> Record:
    """Replace the model's own settings with those in ``settings`` that are not None (the rest
    take the workers' ``defaults``). ``ValueError`` naming the setting, and nothing written,
    when the monitor refuses a value."""
    data = {name: value for name, value in settings.items() if value is not None}
    effective_monitoring(defaults, data)
    return control_plane.put(MONITORING, model_id, data, actor=actor, expect=expect)


def delete_monitoring(
    *, control_plane: BaseControlPlane, model_id: str, actor: str, expect: int | None
) -> Record:
    """Back to the workers' defaults: tombstone the model's settings."""
    return control_plane.delete(MONITORING, model_id, actor=actor, expect=expect)
