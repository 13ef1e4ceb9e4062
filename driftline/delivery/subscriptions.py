"""Who receives an alert: subscriptions and silences as the control plane has them.

The API writes every subscription and silence to the compacted topic ``driftline.rules.v1``.
:class:`ControlPlaneFollower` keeps them current with the shared contract: the record format,
the "higher version wins" view and the topic follower of :mod:`driftline.schemas.control_plane`,
and the silences of :mod:`driftline.schemas.silences` (the same semantics the workers use).

Matching (:func:`matching_subscriptions`): a subscription receives an alert when it is
enabled, the alert's ``notify`` names it, and its filters (model id globs, severities, label
globs; empty means any) match the alert. The worker decides who is told about a state change
(``notify`` is the rule's list, and empty for changes nobody is told about, such as a PENDING
alert that resolved without firing); a subscription's filters can only narrow that, e.g. a team
that wants only its own models' alerts from a rule that watches many.

>>> sub = Subscription.from_data("sub-1", 1, {"name": "ops", "url": "http://x",
...     "secret": "0123456789abcdef", "filters": {"severities": ["critical"]}})
>>> alert = {"model_id": "churn", "severity": "critical", "notify": ["sub-1"], "labels": {}}
>>> [s.id for s in matching_subscriptions([sub], alert)]
['sub-1']
>>> [s.id for s in matching_subscriptions([sub], {**alert, "severity": "info"})]
[]
>>> [s.id for s in matching_subscriptions([sub], {**alert, "notify": []})]
[]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from driftline.delivery.alerts import alert_label_set
from driftline.schemas import topics
from driftline.schemas.control_plane import CompactedTopicFollower, VersionedView
from driftline.schemas.silences import Silence, SilenceError

__all__ = [
    "ControlPlaneFollower",
    "Silence",
    "Subscription",
    "active_silences_for",
    "matching_subscriptions",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subscription:
    id: str
    version: int
    name: str
    url: str
    secret: str
    enabled: bool = True
    models: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_data(cls, ident: str, version: int, data: Mapping[str, Any]) -> Subscription:
        filters = data.get("filters") or {}
        return cls(
            id=ident,
            version=version,
            name=str(data.get("name", ident)),
            url=str(data["url"]),
            secret=str(data.get("secret") or ""),
            enabled=bool(data.get("enabled", True)),
            models=tuple(filters.get("models") or ()),
            severities=tuple(s.lower() for s in filters.get("severities") or ()),
            labels=dict(filters.get("labels") or {}),
        )

    def filters_match(self, alert: Mapping[str, Any]) -> bool:
        """Every non-empty filter matches (model id globs, severities, label globs)."""
        model_id = str(alert.get("model_id") or "")
        if self.models and not any(fnmatchcase(model_id, g) for g in self.models):
            return False
        if self.severities and str(alert.get("severity") or "").lower() not in self.severities:
            return False
        if self.labels:
            labels = alert_label_set(alert)
            for name, glob in self.labels.items():
                if name not in labels or not fnmatchcase(labels[name], glob):
                    return False
        return True


def matching_subscriptions(
    subscriptions: Iterable[Subscription], alert: Mapping[str, Any]
) -> list[Subscription]:
    """The subscriptions that receive ``alert`` (see the module docstring), by id."""
    named = set(alert.get("notify") or ())
    out = [s for s in subscriptions if s.enabled and s.id in named and s.filters_match(alert)]
    return sorted(out, key=lambda s: s.id)


def active_silences_for(
    silences: Iterable[Silence], alert: Mapping[str, Any], now_ms: int | None = None
) -> list[str]:
    """Ids of the silences active now that match ``alert``'s label set."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    labels = alert_label_set(alert)
    return [s.id for s in silences if s.mutes(labels, now_ms)]


class ControlPlaneFollower:
    """Subscriptions and silences from the control-plane topic, kept current by the shared
    :class:`~driftline.schemas.control_plane.CompactedTopicFollower`.

    ``apply`` is the whole update rule, so tests (and callers with another source) can feed
    records without a broker. A subscription or silence whose ``data`` is not usable keeps its
    version (ordering stays right) and is left out, with a warning.
    """

    def __init__(
        self,
        bootstrap: str | None = None,
        topic: str = topics.RULES,
        *,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._client_config = dict(client_config or {})
        self._view = VersionedView()
        self._subscriptions: dict[str, Subscription] = {}
        self._silences: dict[str, Silence] = {}
        self._follower: CompactedTopicFollower | None = None

    # -- the update rule --------------------------------------------------------------------

    def apply(self, key: str, value: bytes | None, partition: int = -1, offset: int = -1) -> None:
        kind, _, ident = key.partition(":")
        if kind not in ("subscription", "silence") or not self._view.apply(key, value):
            return
        record = self._view.by_key(key)
        # Replace the dicts instead of mutating them: readers on other threads take a list()
        # of whichever one they see.
        subscriptions, silences = dict(self._subscriptions), dict(self._silences)
        subscriptions.pop(ident, None)
        silences.pop(ident, None)
        if record is not None:
            try:
                if kind == "subscription":
                    subscriptions[ident] = Subscription.from_data(
                        ident, record.version, record.data
                    )
                else:
                    silences[ident] = Silence.from_record(ident, record.version, record.data)
            except (SilenceError, KeyError, TypeError, ValueError) as exc:
                log.warning("control-plane %s v%d is not usable by delivery: %s", key,
                            record.version, exc)  # fmt: skip
        self._subscriptions, self._silences = subscriptions, silences

    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions.values())

    def silences(self) -> list[Silence]:
        return list(self._silences.values())

    # -- the reader thread ------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> ControlPlaneFollower:
        if self.bootstrap is None:
            raise ValueError("a follower without bootstrap servers is fed through apply()")
        if self._follower is None:
            self._follower = CompactedTopicFollower(
                self.bootstrap,
                self.apply,
                self.topic,
                name="delivery-view",
                client_config=self._client_config,
            )
        self._follower.start(timeout)
        return self

    def ready(self) -> bool:
        """True once everything that was on the topic at start has been applied."""
        return self._follower is not None and self._follower.ready()

    def wait_ready(self, timeout: float = 30.0) -> bool:
        return self._follower is not None and self._follower.wait_ready(timeout)

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()
