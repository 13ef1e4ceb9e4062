"""Request/response models: one family per entity (``XBase``, ``XCreate``, ``XUpdate``,
``XPublic``, ``XsPublic(data, count)``), in the shape of FastAPI's full-stack template.

Every model forbids unknown fields, so a typo (``"severty"``) is a 422, not a silently ignored
setting. Checks that span several fields or need the control plane (a threshold impossible for
its metric, ``notify`` naming an unknown subscription) live in :mod:`driftline.api.validation`,
which reports them with the same field-level 422 shape.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from .catalog import (
    DETECTORS,
    ESTIMATORS,
    METRICS,
    SCOPES,
    STATISTIC_FIELDS,
    STREAM_KINDS,
    VERDICT_OUTCOMES,
    WINDOW_TESTS,
)

# -- scalar types -----------------------------------------------------------------------------

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_UNITS = (86400, 3600, 60, 1)
MAX_DURATION_SECONDS = 90 * 86400


def parse_duration(text: str) -> int:
    """Seconds in a duration like ``"90s"``, ``"5m"``, ``"1h30m"`` or ``"7d"``.

    >>> parse_duration("1h30m"), parse_duration("0s")
    (5400, 0)
    """
    match = _DURATION.match(text)
    if not text or not match:
        raise ValueError(
            f"not a duration: {text!r} (use a number with a unit d/h/m/s, e.g. '30s', '5m', "
            "'1h30m')"
        )
    seconds = sum(int(g) * unit for g, unit in zip(match.groups(), _UNITS, strict=True) if g)
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"duration {text!r} is longer than the 90d maximum")
    return seconds


def _duration(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[
    str,
    StringConstraints(max_length=32),
    AfterValidator(_duration),
    Field(examples=["5m"], description="A duration: digits with units d/h/m/s, e.g. '1h30m'."),
]
LabelName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"), Field(examples=["team"])
]
LabelValue = Annotated[str, StringConstraints(max_length=1024)]
# Model ids and glob patterns: printable, no whitespace, bounded.
ModelId = Annotated[str, StringConstraints(pattern=r"^[^\s*?\[\]]{1,200}$")]
Glob = Annotated[
    str,
    StringConstraints(pattern=r"^\S{1,200}$"),
    Field(description="fnmatch glob: * ? [seq]", examples=["churn-*"]),
]
ResourceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Severity = Literal["info", "warning", "critical"]
Scope = Literal["read", "write", "admin"]
assert set(SCOPES) == {"read", "write", "admin"}

StreamKind = Literal["FEATURE", "PREDICTION", "ERROR", "METRIC"]
# "*" is every detector.
Detector = Literal[
    "*", "ADWIN", "CUSUM", "DDM", "EDDM", "EWMAChart", "HDDM_A", "HDDM_W", "KSWIN", "PageHinkley",
    # window tests against the reference (catalog.WINDOW_TESTS)
    "ks", "chisquare", "missing_rate", "out_of_range", "unseen_categories", "constant",
    "wrong_type", "new_feature", "pca_reconstruction",
    # performance estimates before labels arrive (catalog.ESTIMATORS)
    "CBPE",
]
Metric = Literal[
    "accuracy", "error_rate", "label_coverage", "mae", "rmse", "prediction_count",
    "estimated_accuracy", "estimated_precision", "estimated_recall", "estimated_f1",
]  # fmt: skip
StatisticField = Literal["estimate", "statistic", "p_value", "n_values"]
VerdictOutcome = Literal["BETTER", "WORSE", "INCONCLUSIVE"]
# The Literals above are what OpenAPI shows; the catalog is what tests compare to the project.
assert set(Detector.__args__) == {"*", *DETECTORS, *WINDOW_TESTS, *ESTIMATORS}
assert set(StreamKind.__args__) == set(STREAM_KINDS)
assert set(Metric.__args__) == set(METRICS)
assert set(StatisticField.__args__) == set(STATISTIC_FIELDS)
assert VerdictOutcome.__args__ == VERDICT_OUTCOMES

STRICT = ConfigDict(extra="forbid", populate_by_name=True)


class Strict(BaseModel):
    model_config = STRICT


# -- rule parts -------------------------------------------------------------------------------


class DriftSignal(Strict):
    """Drift events of one detector on one (or every, ``"*"``) stream of a kind."""

    kind: Literal["drift"]
    stream_kind: StreamKind
    stream_name: Annotated[str, StringConstraints(pattern=r"^\S{1,200}$")] = "*"
    detector: Detector = "*"
    # fnmatch glob on the segment of a window test's drift: "" = the model's all-traffic
    # windows only, "region=eu" one segment, "region=*" every value of a key (docs/drift.md)
    segment: Annotated[str, StringConstraints(max_length=400)] = "*"


class MetricSignal(Strict):
    """A model metric over a trailing window (from the per-minute metric views)."""

    kind: Literal["metric"]
    metric: Metric
    window: Duration = "5m"


class StatisticSignal(Strict):
    """A column of a detector's statistics rows (``detector_stats``)."""

    kind: Literal["statistic"]
    stream_kind: StreamKind
    stream_name: Annotated[str, StringConstraints(pattern=r"^\S{1,200}$")] = "*"
    detector: Detector = "*"
    field: StatisticField = "statistic"


class VerdictSignal(Strict):
    """Post-deploy verdicts of new model versions (``ModelVerdict``, docs/versions.md)."""

    kind: Literal["verdict"]


Signal = Annotated[
    DriftSignal | MetricSignal | StatisticSignal | VerdictSignal, Field(discriminator="kind")
]


class DriftDetected(Strict):
    type: Literal["drift_detected"]


class Threshold(Strict):
    type: Literal["threshold"]
    op: Literal["<", "<=", ">", ">="]
    value: float = Field(allow_inf_nan=False)


class VerdictIs(Strict):
    """A verdict signal's condition: the verdict a new version got against the one it
    replaced."""

    type: Literal["verdict_is"]
    outcome: VerdictOutcome = "WORSE"


Condition = Annotated[DriftDetected | Threshold | VerdictIs, Field(discriminator="type")]


class RetrainAction(Strict):
    """Ask for retraining (a RetrainingRequested on ``driftline.retraining.v1``) on firing."""

    type: Literal["retrain"]
    priority: Literal["LOW", "NORMAL", "HIGH"] = "NORMAL"
    lookback: Duration = "1h"


Action = Annotated[RetrainAction, Field(discriminator="type")]


# -- rules ------------------------------------------------------------------------------------


class RuleBase(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="Alert name (the `alertname` label of the alerts it raises)."
    )
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    enabled: bool = True
    models: Annotated[list[ModelId], Field(min_length=1, max_length=1000)] | None = Field(
        None, description="Model ids the rule watches. Exactly one of models/model_selector."
    )
    model_selector: Annotated[dict[LabelName, Glob], Field(min_length=1, max_length=32)] | None = (
        Field(
            None,
            description="Label matchers on model labels (fnmatch globs), e.g. "
            '{"model_id": "churn-*"}. All must match.',
        )
    )
    signal: Signal
    condition: Condition
    min_samples: int = Field(0, ge=0, le=1_000_000_000)
    for_: Duration = Field("0s", alias="for", description="How long the condition must hold.")
    severity: Severity = "warning"
    labels: Annotated[dict[LabelName, LabelValue], Field(max_length=64)] = {}
    annotations: Annotated[
        dict[LabelName, Annotated[str, StringConstraints(max_length=10_000)]],
        Field(max_length=64),
    ] = {}
    cooldown: Duration = "0s"
    repeat_interval: Duration = "4h"
    group_by: Annotated[list[LabelName], Field(max_length=16)] = ["model_id"]
    notify: Annotated[list[ResourceId], Field(max_length=64)] = Field(
        [], description="Subscription ids to notify."
    )
    actions: Annotated[list[Action], Field(max_length=8)] = []


class RuleCreate(RuleBase):
    pass


class RuleUpdate(Strict):
    """A partial update (PATCH) or, with every field, a replacement (PUT uses RuleCreate).

    ``version`` is the version the client last read: a stale one is a 409.
    """

    version: int | None = Field(None, ge=1)
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None
    enabled: bool | None = None
    models: Annotated[list[ModelId], Field(min_length=1, max_length=1000)] | None = None
    model_selector: Annotated[dict[LabelName, Glob], Field(min_length=1, max_length=32)] | None = (
        None
    )
    signal: Signal | None = None
    condition: Condition | None = None
    min_samples: int | None = Field(None, ge=0, le=1_000_000_000)
    for_: Duration | None = Field(None, alias="for")
    severity: Severity | None = None
    labels: Annotated[dict[LabelName, LabelValue], Field(max_length=64)] | None = None
    annotations: (
        Annotated[
            dict[LabelName, Annotated[str, StringConstraints(max_length=10_000)]],
            Field(max_length=64),
        ]
        | None
    ) = None
    cooldown: Duration | None = None
    repeat_interval: Duration | None = None
    group_by: Annotated[list[LabelName], Field(max_length=16)] | None = None
    notify: Annotated[list[ResourceId], Field(max_length=64)] | None = None
    actions: Annotated[list[Action], Field(max_length=8)] | None = None


class RuleReplace(RuleBase):
    """PUT body: a whole rule, optionally with the version the client last read."""

    version: int | None = Field(None, ge=1)


class Meta(Strict):
    id: str
    version: int
    created_at: datetime
    updated_at: datetime
    updated_by: str


class RulePublic(RuleBase, Meta):
    pass


class RulesPublic(Strict):
    data: list[RulePublic]
    count: int


# -- dry-run ----------------------------------------------------------------------------------


class DryRunRange(Strict):
    start: datetime
    end: datetime


class DryRunUnsaved(DryRunRange):
    rule: RuleCreate


class Firing(Strict):
    """One episode that reached FIRING (repeats of the same episode are not listed)."""

    group: dict[str, str] = Field(
        description="The group_by labels (model_id always among the key)."
    )
    model_id: str
    starts_at: datetime = Field(description="When the condition first held (PENDING).")
    at: datetime = Field(description="When it became FIRING.")
    resolved_at: datetime | None = Field(None, description="When it resolved, if in range.")
    value: float | None = Field(
        None, description="Metric/statistic value, or the number of matching drifts so far."
    )
    event_ids: list[str] = Field([], description="The episode's first drift event ids.")


class DryRunResult(Strict):
    would_fire: bool
    firings: list[Firing]
    evaluated: int = Field(description="Rows of history the rule was evaluated on.")
    start: datetime
    end: datetime
    warnings: list[str] = []


# -- silences ---------------------------------------------------------------------------------


class Matcher(Strict):
    """One label matcher: ``=`` equal, ``!=`` not equal, ``=~`` fnmatch glob, ``!~`` not glob."""

    name: LabelName = Field(examples=["model_id"])
    value: Annotated[str, StringConstraints(max_length=1024)]
    op: Literal["=", "!=", "=~", "!~"] = "="


class SilenceBase(Strict):
    matchers: Annotated[list[Matcher], Field(min_length=1, max_length=32)] = Field(
        description="Every matcher must match an alert's labels (model_id, severity, "
        "alertname, rule_id and the rule's labels) for the silence to apply."
    )
    starts_at: datetime | None = Field(None, description="Default: now.")
    ends_at: datetime
    comment: Annotated[str, StringConstraints(max_length=2000)] = ""


class SilenceCreate(SilenceBase):
    pass


class SilencePublic(SilenceBase, Meta):
    starts_at: datetime
    created_by: str
    state: Literal["pending", "active", "expired"]


class SilencesPublic(Strict):
    data: list[SilencePublic]
    count: int


# -- subscriptions ----------------------------------------------------------------------------


class SubscriptionFilter(Strict):
    models: Annotated[list[Glob], Field(max_length=1000)] = Field(
        [], description="Model id globs; empty means every model."
    )
    severities: Annotated[list[Severity], Field(max_length=3)] = Field(
        [], description="Empty means every severity."
    )
    labels: Annotated[dict[LabelName, Glob], Field(max_length=32)] = {}


HttpUrl = Annotated[
    str,
    StringConstraints(pattern=r"^https?://[^\s/?#]+[^\s]*$", max_length=2048),
    Field(examples=["https://hooks.example.com/driftline"]),
]
Secret = Annotated[str, StringConstraints(min_length=16, max_length=256, pattern=r"^\S+$")]


class SubscriptionBase(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    url: HttpUrl
    enabled: bool = True
    filters: SubscriptionFilter = SubscriptionFilter()


class SubscriptionCreate(SubscriptionBase):
    secret: Secret | None = Field(
        None,
        description="HMAC-SHA256 signing secret (>= 16 chars). Generated when omitted and "
        "returned once, in the creation response only.",
    )


class SubscriptionUpdate(Strict):
    version: int | None = Field(None, ge=1)
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    url: HttpUrl | None = None
    enabled: bool | None = None
    filters: SubscriptionFilter | None = None
    secret: Secret | None = Field(None, description="Rotate the signing secret.")


class SubscriptionPublic(SubscriptionBase, Meta):
    secret: str = Field(description="Masked (e.g. '****abcd') except in the creation response.")


class SubscriptionsPublic(Strict):
    data: list[SubscriptionPublic]
    count: int


# -- alerts -----------------------------------------------------------------------------------


class AlertPublic(Strict):
    fingerprint: str
    rule_id: str
    rule_version: int
    alertname: str
    model_id: str
    severity: str
    state: Literal["pending", "firing", "resolved"] | str
    labels: dict[str, str]
    annotations: dict[str, str]
    value: float | None
    starts_at: datetime
    ends_at: datetime | None
    updated_at: datetime
    trigger_event_ids: list[str]
    silenced: bool = Field(False, description="A silence matched (listed in silence_ids).")
    silence_ids: list[str] = []
    inhibited_by: str | None = Field(None, description="Fingerprint of an inhibiting alert.")
    acknowledgement: AckPublic | None = None


class AlertsPublic(Strict):
    data: list[AlertPublic]
    count: int


class AckCreate(Strict):
    comment: Annotated[str, StringConstraints(min_length=1, max_length=2000)]


class AckPublic(Strict):
    fingerprint: str
    comment: str
    acked_by: str
    acked_at: datetime
    version: int


# -- api keys ---------------------------------------------------------------------------------


class ApiKeyPublic(Strict):
    id: str
    name: str
    scopes: list[Scope]
    created_at: datetime
    created_by: str
    version: int


class ApiKeysPublic(Strict):
    data: list[ApiKeyPublic]
    count: int


# -- misc -------------------------------------------------------------------------------------


class Message(Strict):
    detail: str


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-ready dict with aliases (``for``), as stored on the control plane."""
    return model.model_dump(mode="json", by_alias=True)


AlertPublic.model_rebuild()
