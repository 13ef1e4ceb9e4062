"""Model versions in the worker: the registry it follows, which version serves, re-baselining
and post-deploy verdicts.

* :class:`VersionBook` follows the compacted ``driftline.models.v1`` (``ModelPublished``
  records, every version of every model) on its own thread, refuses a version published again
  with different content (first one wins, the other goes to the DLQ as ``version_conflict``)
  and hands the processor ``model_versions`` rows to write with its next batch.
* :class:`VersionTracker` (part of each model's checkpointed ``ModelState``) remembers, per
  version, the version it replaced and its labelled results. :func:`observe_predictions`
  registers versions as they start serving and writes their first/last seen times;
  :func:`observe_labels` takes the verdict once a new version has ``min_labels`` labelled
  predictions: its first ``min_labels`` against the last ``min_labels`` of the version it
  replaced, a two-proportion z-test on accuracy (classification) or Welch's t-test on the
  absolute error (regression).
* Re-baselining is per-version detector streams: the processor's prediction and error streams
  are registered under :func:`versioned` names (``score@7``, ``error@7``), so a new version
  starts with fresh detectors and two versions served side by side (canary, shadow) each have
  their own. Feature streams stay per model: inputs do not change with the model. The window
  tests re-baseline at a version's first prediction (``streams/profiles.py``).

Everything here depends on the event sequence only (predictions and joined pairs in order),
never on where a batch ends, so a replay or a restart takes the same verdicts with the same ids.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from driftline.schemas import Codec, event_id, topics
from driftline.schemas.model_versions import PublishedVersions
from driftline.sinks.lineage import published_row, serving_row

log = logging.getLogger("driftline.worker")

__all__ = [
    "VerdictConfig",
    "VersionBook",
    "VersionTracker",
    "observe_labels",
    "observe_predictions",
    "split_versioned",
    "two_proportion_z",
    "versioned",
    "welch_t",
]

ACCURACY = "accuracy"
MAE = "mean_absolute_error"


@dataclass(frozen=True)
class VerdictConfig:
    """When and how a new version is judged against the one it replaced.

    ``min_labels``: labelled predictions of the new version (and at most as many of the
    previous one) in the comparison; ``min_previous``: below this many labels of the previous
    version the verdict is ``INCONCLUSIVE``; ``alpha``: two-sided significance level (0.01:
    a rollback recommendation is expensive, so false ones should be rare).
    """

    min_labels: int = 500
    min_previous: int = 30
    alpha: float = 0.01

    def __post_init__(self) -> None:
        if self.min_labels < 2:
            raise ValueError(f"min_labels must be >= 2, got {self.min_labels}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")


# -- names ----------------------------------------------------------------------------------
def versioned(name: str, version: str) -> str:
    """The detector stream of ``name`` for one model version.

    >>> versioned("error", "7"), split_versioned("error@7")
    ('error@7', ('error', '7'))
    """
    return f"{name}@{version}"


def split_versioned(key: str) -> tuple[str, str | None]:
    """(stream name, version) of a versioned stream; version None for one without."""
    name, sep, version = key.partition("@")
    return (name, version) if sep else (key, None)


def version_groups(versions: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Distinct versions in order of first appearance, and each element's group index."""
    n = len(versions)
    if n == 0:
        return [], np.empty(0, np.int64)
    first = versions[0]
    if bool(np.equal(versions, first).all()):  # the common case: one version per batch
        return [str(first)], np.zeros(n, np.int64)
    keys, index, inverse = np.unique(
        versions.astype(str), return_index=True, return_inverse=True
    )
    order = np.argsort(index, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    return [str(keys[i]) for i in order], rank[inverse.reshape(-1)]


def ranks_within(rows: np.ndarray) -> np.ndarray:
    """Each element's rank among the elements before it with the same value.

    >>> ranks_within(np.array([3, 1, 3, 3, 1])).tolist()
    [0, 0, 1, 2, 1]
    """
    n = len(rows)
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    out = np.empty(n, np.int64)
    out[order] = np.arange(n) - group_start
    return out


# -- the registry ---------------------------------------------------------------------------
@dataclass
class Refused:
    """A ModelPublished record the book did not take (for the DLQ)."""

    key: bytes | None
    value: bytes | None
    offset: int
    reason: str
    detail: str


class VersionBook:
    """Every published version, from ``driftline.models.v1`` (fed by a
    ``schemas.control_plane.CompactedTopicFollower`` on its own thread)."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._lock = threading.Lock()
        self._published = PublishedVersions()
        self._rows: list[dict[str, Any]] = []
        self._refused: list[Refused] = []
        self.applied = 0
        self.conflicts = 0

    def on_record(self, key: Any, value: bytes | None, partition: int, offset: int) -> None:
        if value is None:
            return  # a tombstone: versions are never forgotten here (the table keeps them)
        try:
            _, record = self.codec.decode(value, expected=topics.MODEL_PUBLISHED)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the reader
            reason = getattr(exc, "reason", topics.UNDECODABLE)
            self._refuse(key, value, offset, reason, str(exc))
            return
        self.add(record, key=key, value=value, offset=offset)

    def add(
        self,
        record: dict[str, Any],
        *,
        key: Any = None,
        value: bytes | None = None,
        offset: int = -1,
    ) -> bool:
        """Take a published version; False (and a refusal for the DLQ) if the same version
        was published before with different content."""
        new, known = self._published.add(record)
        if new:
            with self._lock:
                self._rows.append(published_row(record))
                self.applied += 1
            return True
        if known is None:
            return True  # a re-publication: nothing new
        with self._lock:
            self.conflicts += 1
        ident = (record["model_id"], record["version"])
        detail = (
            f"model {ident[0]!r} version {ident[1]!r} was already published with other content "
            f"(event {known['event_id']}); versions are immutable: publish a new version"
        )
        log.warning("refusing a ModelPublished record at offset %d: %s", offset, detail)
        self._refuse(key, value, offset, topics.VERSION_CONFLICT, detail)
        return False

    def _refuse(self, key: Any, value: bytes | None, offset: int, reason: str, detail: str) -> None:
        with self._lock:
            raw_key = key.encode() if isinstance(key, str) else key
            self._refused.append(Refused(raw_key, value, offset, reason, detail))

    def get(self, model_id: str, version: str) -> dict[str, Any] | None:
        return self._published.get(model_id, version)

    def drain(self) -> tuple[list[dict[str, Any]], list[Refused]]:
        """Rows and refusals not handed out yet (the processor writes them with a batch)."""
        with self._lock:
            rows, self._rows = self._rows, []
            refused, self._refused = self._refused, []
        return rows, refused


# -- per-model state ------------------------------------------------------------------------
@dataclass
class VersionRecord:
    previous: str | None
    first_seen_ms: int
    metric: str = ""  # ACCURACY or MAE, from the version's first labelled pair
    n_labels: int = 0
    first: list[float] = field(default_factory=list)  # its first min_labels labelled values
    recent: list[float] = field(default_factory=list)  # its last min_labels labelled values
    verdict_id: str | None = None


@dataclass
class VersionTracker:
    """Which version serves a model, and what each of its versions did (checkpointed)."""

    current: str | None = None
    versions: dict[str, VersionRecord] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "versions": {v: r.__dict__ for v, r in sorted(self.versions.items())},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> VersionTracker:
        if not data:
            return cls()
        return cls(
            data["current"], {v: VersionRecord(**r) for v, r in data["versions"].items()}
        )


def observe_predictions(
    tracker: VersionTracker,
    model_id: str,
    versions: np.ndarray,
    times: np.ndarray,
    result: Any,
) -> tuple[list[str], np.ndarray]:
    """Register versions that start serving (the version they replaced: the one whose
    prediction came just before their first) and add their ``model_versions`` serving rows.
    Returns :func:`version_groups` of ``versions`` for the detectors."""
    keys, groups = version_groups(versions)
    if not keys:
        return keys, groups
    if len(keys) == 1:  # the common case, without ufunc.at's per-element cost
        first_at, low, high = np.zeros(1, np.int64), times.min(keepdims=True), times.max(
            keepdims=True
        )
    else:
        first_at = np.full(len(keys), len(groups))
        np.minimum.at(first_at, groups, np.arange(len(groups)))
        low = np.full(len(keys), np.iinfo(np.int64).max)
        high = np.full(len(keys), np.iinfo(np.int64).min)
        np.minimum.at(low, groups, times)
        np.maximum.at(high, groups, times)
    for g in np.argsort(first_at, kind="stable").tolist():
        version = keys[g]
        record = tracker.versions.get(version)
        if record is None:
            at = int(first_at[g])
            # the version of the prediction just before this version's first one
            previous = str(versions[at - 1]) if at > 0 else tracker.current
            record = tracker.versions[version] = VersionRecord(previous, int(low[g]))
        result.rows["model_versions"].append(
            serving_row(model_id, version, record.previous, int(low[g]), int(high[g]))
        )
    tracker.current = str(versions[-1])
    return keys, groups


def observe_labels(
    tracker: VersionTracker,
    model_id: str,
    pair_versions: np.ndarray,
    correct: np.ndarray,
    error: np.ndarray,
    outcome_time: np.ndarray,
    config: VerdictConfig,
    book: VersionBook | None,
    result: Any,
) -> None:
    """Add a batch's labelled pairs (in join order) to their versions; take the verdict of
    every version whose first ``min_labels`` are complete."""
    labelled = (correct >= 0) | ~np.isnan(error)
    if not labelled.any():
        return
    at = np.flatnonzero(labelled)  # pair indices
    is_class = correct[at] >= 0
    values = np.where(is_class, correct[at].astype(np.float64), error[at])
    metrics = np.where(is_class, ACCURACY, MAE)
    keys, groups = version_groups(pair_versions[at])
    n = config.min_labels
    per_version: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for g, version in enumerate(keys):
        record = tracker.versions.get(version)
        if record is None:  # labels of a version whose predictions predate tracking
            record = tracker.versions[version] = VersionRecord(None, int(outcome_time[at[0]]))
        mine = groups == g
        if not record.metric:
            record.metric = str(metrics[mine][0])
        mine &= metrics == record.metric  # a pair of the other kind: not comparable
        per_version[version] = (at[mine], values[mine])
    # verdicts first, against the other versions' results as they were before the pair that
    # completed the sample (so where the batch ends does not matter)
    for version, (where, vals) in per_version.items():
        record = tracker.versions[version]
        need = n - len(record.first)
        if record.verdict_id is not None or record.previous is None or need <= 0:
            continue
        if len(vals) < need:
            continue
        completing = int(where[need - 1])
        sample = [*record.first, *vals[:need].tolist()]
        previous = tracker.versions.get(record.previous)
        before: list[float] = []
        if previous is not None and previous.metric == record.metric:
            p_where, p_vals = per_version.get(record.previous, (np.empty(0), np.empty(0)))
            before = [*previous.recent, *p_vals[p_where < completing].tolist()][-n:]
        _verdict(
            model_id, version, record, sample, before, int(outcome_time[completing]),
            config, book, result,
        )  # fmt: skip
    for version, (_, vals) in per_version.items():
        record = tracker.versions[version]
        record.n_labels += len(vals)
        values_list = vals.tolist()
        if record.verdict_id is not None or record.previous is None:
            record.first = []  # no verdict (to come) needs them: keep checkpoints small
        elif len(record.first) < n:
            record.first += values_list[: n - len(record.first)]
        record.recent = [*record.recent, *values_list][-n:]


def _verdict(
    model_id: str,
    version: str,
    record: VersionRecord,
    sample: list[float],
    before: list[float],
    decided_at: int,
    config: VerdictConfig,
    book: VersionBook | None,
    result: Any,
) -> None:
    previous = str(record.previous)
    new, old = np.asarray(sample), np.asarray(before)
    evidence: dict[str, str] = {}
    if len(old) < config.min_previous:
        statistic, p_value, kind = 0.0, 1.0, "INCONCLUSIVE"
        evidence["note"] = (
            f"the previous version had {len(old)} comparable labelled predictions "
            f"(fewer than {config.min_previous})"
        )
        test = "two_proportion_z" if record.metric == ACCURACY else "welch_t"
    else:
        if record.metric == ACCURACY:
            test = "two_proportion_z"
            statistic, p_value = two_proportion_z(new, old)
            improved = statistic > 0
        else:
            test = "welch_t"
            statistic, p_value, dof = welch_t(new, old)
            evidence["degrees_of_freedom"] = repr(dof)
            improved = statistic < 0  # a lower error is better
        kind = "INCONCLUSIVE"
        if p_value < config.alpha:
            kind = "BETTER" if improved else "WORSE"
    n_labels = len(new)
    ident = event_id("verdict", model_id, version, previous, str(n_labels))
    record.verdict_id = ident
    published = book.get(model_id, version) if book is not None else None
    value = float(new.mean())
    previous_value = float(old.mean()) if len(old) else math.nan
    verdict = {
        "event_id": ident,
        "model_id": model_id,
        "version": version,
        "previous_version": previous,
        "verdict": kind,
        "metric": record.metric,
        "test": test,
        "value": value,
        "previous_value": previous_value,
        "n_labels": n_labels,
        "n_previous": len(old),
        "statistic": float(statistic),
        "p_value": float(p_value),
        "alpha": config.alpha,
        "decided_at": decided_at,
        "published_event_id": published["event_id"] if published else None,
        "evidence": evidence,
    }
    result.records.append((topics.VERDICTS, topics.MODEL_VERDICT, verdict))
    row = {**verdict, "rollback_event_id": None, "rollback_to": None}
    if kind == "WORSE":
        rollback = {
            "event_id": event_id("rollback", ident),
            "model_id": model_id,
            "from_version": version,
            "to_version": previous,
            "verdict_event_id": ident,
            "reason": (
                f"{record.metric} {value:.4f} (version {version}, {n_labels} labels) vs "
                f"{previous_value:.4f} (version {previous}, {len(old)} labels); {test} "
                f"p={p_value:.3g} < {config.alpha}"
            ),
            "recommended_at": decided_at,
        }
        result.records.append((topics.VERDICTS, topics.ROLLBACK_RECOMMENDED, rollback))
        row.update(rollback_event_id=rollback["event_id"], rollback_to=previous)
    result.rows["model_verdicts"].append(row)
    log.info("verdict: model=%s version %s vs %s: %s (%s %.4f vs %.4f, p=%.3g)", model_id,
             version, previous, kind, record.metric, value, previous_value, p_value)  # fmt: skip


# -- the tests ------------------------------------------------------------------------------
def two_proportion_z(new: np.ndarray, old: np.ndarray) -> tuple[float, float]:
    """Pooled two-proportion z-test of 0/1 samples: (z of new minus old, two-sided p).

    >>> z, p = two_proportion_z(np.r_[np.ones(90), np.zeros(10)], np.r_[np.ones(70), np.zeros(30)])
    >>> round(z, 3), round(p, 5)
    (3.536, 0.00041)
    """
    n1, n2 = len(new), len(old)
    p1, p2 = float(new.mean()), float(old.mean())
    pooled = (new.sum() + old.sum()) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0.0:  # both all right or all wrong: nothing tells them apart
        return 0.0, 1.0
    z = (p1 - p2) / se
    return z, math.erfc(abs(z) / math.sqrt(2))  # two-sided normal tail


def welch_t(new: np.ndarray, old: np.ndarray) -> tuple[float, float, float]:
    """Welch's unequal-variance t-test (scipy): (t of new minus old, two-sided p, dof)."""
    if new.var() == 0.0 and old.var() == 0.0:
        if new.mean() == old.mean():
            return 0.0, 1.0, float(len(new) + len(old) - 2)
        t = math.copysign(math.inf, new.mean() - old.mean())
        return t, 0.0, float(len(new) + len(old) - 2)
    from scipy import stats  # here: scipy.stats costs ~0.5 s of every worker's start

    test = stats.ttest_ind(new, old, equal_var=False)
    return float(test.statistic), float(test.pvalue), float(test.df)

