"""Silences and their label matchers: one definition, one meaning, for the workers (which mark
an alert ``silenced``), delivery (which does not notify it) and the API (which lists them).

Semantics (docs/alerting.md, "Silences"):

* A silence record's ``data`` has ``matchers`` (at least one), ``ends_at`` and optionally
  ``starts_at``; times are RFC 3339, a time without a zone is UTC. Without ``starts_at`` the
  silence is active from the start of time (the API always writes it: default now).
* It mutes an alert at time ``t`` when ``starts_at <= t < ends_at`` and **every** matcher
  matches the alert's label set (:func:`alert_labels`).
* Matcher ops: ``=`` equal, ``!=`` not equal, ``=~`` fnmatch glob, ``!~`` not glob (globs, not
  Alertmanager's regular expressions). A label the alert does not have is ``""``.
* A record that breaks these rules (no matchers, no ``ends_at``, an unknown op, a bad time) is
  not a silence: :meth:`Silence.from_record` raises :class:`SilenceError` and readers skip it
  with a warning, so it mutes nothing.

>>> s = Silence.from_record("s1", 1, {"matchers": [{"name": "model_id", "value": "churn*",
...     "op": "=~"}], "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-01-02T00:00:00"})
>>> s.mutes({"model_id": "churn-eu"}, parse_time_ms("2026-01-01T12:00:00Z"))
True
>>> s.mutes({"model_id": "fraud"}, parse_time_ms("2026-01-01T12:00:00Z"))
False
>>> s.mutes({"model_id": "churn-eu"}, parse_time_ms("2026-01-02T00:00:00Z"))  # ends_at: over
False
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, Final

__all__ = [
    "MATCHER_OPS",
    "Matcher",
    "Silence",
    "SilenceError",
    "alert_labels",
    "parse_time_ms",
]

MATCHER_OPS: Final = ("=", "!=", "=~", "!~")


class SilenceError(ValueError):
    """A silence record the readers cannot use (skipped with a warning, mutes nothing)."""


def parse_time_ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 time (``Z`` or an offset; no zone means UTC).

    >>> parse_time_ms("2026-01-01T00:00:01.5Z"), parse_time_ms("2026-01-01T00:00:01.5")
    (1767225601500, 1767225601500)
    """
    moment = datetime.fromisoformat(str(text))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Matcher:
    name: str
    value: str
    op: str = "="

    def __post_init__(self) -> None:
        if self.op not in MATCHER_OPS:
            raise SilenceError(f"unknown matcher op {self.op!r} (one of {', '.join(MATCHER_OPS)})")

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        if self.op == "=~":
            return fnmatchcase(actual, self.value)
        return not fnmatchcase(actual, self.value)


@dataclass(frozen=True)
class Silence:
    id: str
    version: int
    matchers: tuple[Matcher, ...]
    starts_ms: int
    ends_ms: int

    @classmethod
    def from_record(cls, ident: str, version: int, data: Mapping[str, Any]) -> Silence:
        """The silence in a control-plane record's ``data``; :class:`SilenceError` if none."""
        try:
            matchers = tuple(
                Matcher(str(m["name"]), str(m["value"]), str(m.get("op", "=")))
                for m in data["matchers"]
            )
            if not matchers:
                raise SilenceError("no matchers (a silence without one would mute everything)")
            if not data.get("ends_at"):
                raise SilenceError("no ends_at")
            starts = data.get("starts_at")
            return cls(
                ident,
                int(version),
                matchers,
                parse_time_ms(starts) if starts else 0,
                parse_time_ms(data["ends_at"]),
            )
        except SilenceError as exc:
            raise SilenceError(f"silence {ident}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise SilenceError(f"silence {ident}: {exc!r}") from exc

    def active(self, at_ms: int) -> bool:
        """Half-open ``[starts_at, ends_at)``."""
        return self.starts_ms <= at_ms < self.ends_ms

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def mutes(self, labels: Mapping[str, str], at_ms: int) -> bool:
        """Active at ``at_ms`` and every matcher matches ``labels``."""
        return self.active(at_ms) and self.matches(labels)


def alert_labels(alert: Mapping[str, Any]) -> dict[str, str]:
    """The label set silences (and subscription label filters) match an AlertEvent on: its
    labels plus ``model_id``, ``severity``, ``alertname`` (the rule name) and ``rule_id``;
    those four win over labels of the same name. The workers put the same four into every
    alert's labels, so matching the record or its labels gives the same answer.

    >>> alert_labels({"labels": {"team": "x"}, "model_id": "m", "rule_name": "drift"})["alertname"]
    'drift'
    """
    labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
    labels.update(
        model_id=str(alert.get("model_id") or ""),
        severity=str(alert.get("severity") or ""),
        alertname=str(alert.get("rule_name") or ""),
        rule_id=str(alert.get("rule_id") or ""),
    )
    return labels
