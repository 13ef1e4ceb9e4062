"""Per-model windows of features and predictions, tested against a reference profile.

A :class:`ProfileMonitor` watches one model. Events arrive in batches of columns
(:class:`FeatureBatch`); the monitor cuts the model's event sequence into windows of
``window_size`` events, or fewer when ``max_window_ms`` of event time has passed since the
window's first event (the event that crosses the bound opens the next window). Window
boundaries depend on the event sequence only, so any batching of the same events gives the
same windows and the same results, and a monitor restored from :meth:`to_bytes` continues
exactly where it stopped.

When a window closes, every column of the reference is tested (:class:`WindowReport`):

* drift, numeric — ``ks`` and two-sample ``chisquare`` over the reference deciles (p-values,
  see :mod:`driftline.detectors.two_sample`), with the normed ``wasserstein`` distance as the
  effect size; categorical — two-sample ``chisquare`` (p-value), with the ``jensenshannon``
  distance as the effect size. A column drifts when one of its p-values is below the per-test
  ``alpha`` *and* its effect size reaches ``min_wasserstein`` / ``min_jensenshannon`` (so a
  huge window cannot call a negligible difference drift). ``psi`` is reported beside them
  (statistic, asymptotic p-value, the 0.1 rule of thumb) but never decides;
* data quality (:mod:`driftline.detectors.quality`) — ``missing_rate``, ``out_of_range`` /
  ``unseen_categories``, ``constant`` (p-values), ``wrong_type`` and ``new_feature`` (counts);
* multivariate — mean PCA reconstruction error of the window's numeric inputs against the
  reference's (NannyML's method), one-sided z-test (``pca_reconstruction``).

``alpha`` comes from the false-alarm budget (:func:`driftline.detectors.budget.per_test_alpha`)
with every p-value test of a window counted, over the part of the budget the sequential
detectors leave (:func:`driftline.detectors.budget.window_budget`). Without a reference, the
model's first ``auto_reference_events`` events become one (``source = "first_events"``), and
windows start after them.

Example
-------
>>> import numpy as np
>>> from driftline.detectors.monitor import FeatureBatch, MonitorConfig, ProfileMonitor
>>> rng = np.random.default_rng(3)
>>> monitor = ProfileMonitor("churn", config=MonitorConfig(window_size=1000, auto_reference_events=2000))
>>> def batch(n, shift):
...     return FeatureBatch.from_columns(numeric={"x": rng.normal(shift, 1.0, n)}, event_time=np.arange(n))
>>> reports = monitor.update(batch(4000, 0.0)) + monitor.update(batch(1000, 1.0))
>>> [(r.window_index, r.drifted_features) for r in reports]
[(0, []), (1, []), (2, ['x'])]
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import quality
from .budget import (
    DEFAULT_BUDGET,
    FalseAlarmBudget,
    per_test_alpha,
    window_budget,
    windows_per_day,
)
from .histogram import CategoricalWindow, NumericWindow
from .reference import (
    PREDICTION_LABEL,
    PREDICTION_SCORE,
    PREDICTION_VALUE,
    ReferenceProfile,
    build_profile,
)
from .two_sample import chisquare_homogeneity, psi_test
from .window_tests import DEFAULT_MIN_SAMPLES, WindowTestResult, jensen_shannon_counts

__all__ = [
    "MONITOR_SETTINGS",
    "SIGNAL_TESTS",
    "CodedLabels",
    "FeatureBatch",
    "MonitorConfig",
    "ProfileMonitor",
    "TestRow",
    "WindowReport",
]

_MAGIC = b"DLPM1"
# p-value tests per column kind and window: drift tests plus the budgeted quality tests.
# PSI is reported (with its asymptotic p-value) but does not decide: its chi-square
# approximation is too optimistic in the far tail that a budgeted alpha lives in (measured:
# 7.9% of stationary lognormal windows below p = 0.05, and p = 3e-5 once in 1,000 categorical
# windows), while Pearson's statistic on the same cells holds.
_DRIFT_TESTS = {"numeric": ("ks", "chisquare"), "categorical": ("chisquare",)}
PSI_EVIDENCE_THRESHOLD = 0.1  # the usual rule of thumb, reported only
# The ``detector`` of a DriftEvent raised by a window: the deciding drift test, a quality
# test, or the multivariate test (streams/profiles.py). Rules may name them.
SIGNAL_TESTS = (
    "ks",
    "chisquare",
    "missing_rate",
    "out_of_range",
    "unseen_categories",
    "constant",
    "wrong_type",
    "new_feature",
    "pca_reconstruction",
)


# What a model's owner may set per model (``PUT /v1/models/{model}/monitoring``) and a worker
# per deployment (``DRIFTLINE_MONITOR_*``): the budget and how its windows are cut. The rest of
# MonitorConfig is the method's own tuning.
MONITOR_SETTINGS = (
    "false_alarms",
    "days",
    "events_per_day",
    "window_size",
    "max_window_seconds",
    "auto_reference_events",
)


@dataclass(frozen=True)
class MonitorConfig:
    """How windows are cut and tested. ``events_per_day`` is an upper estimate of the model's
    traffic, used only to spread the budget over the windows of a day."""

    window_size: int = 5000
    max_window_ms: int = 86_400_000
    min_samples: int = DEFAULT_MIN_SAMPLES
    budget: FalseAlarmBudget = DEFAULT_BUDGET
    events_per_day: float = 1_000_000.0
    min_wasserstein: float = 0.05
    min_jensenshannon: float = 0.02
    auto_reference_events: int = 10_000
    multivariate: bool = True
    # Segment windows (streams/profiles.py): besides the all-traffic windows, one set per
    # segment value ``key=value`` the model's events carry, for at most this many values per
    # model, admitted in order of first appearance in the event sequence (later values are
    # counted, not tested), so a high-cardinality key cannot grow a worker's memory without
    # bound. 0 (the default) turns segment windows off: each segment key costs about one
    # more all-traffic monitor (benchmarks/pipeline.py, whose events carry one key: 48,000
    # -> 26,000 predictions/s per worker with them on), so a deployment opts in.
    max_segments: int = 0

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {self.window_size}")
        if self.max_window_ms < 1:
            raise ValueError(f"max_window_ms must be >= 1, got {self.max_window_ms}")
        if self.max_segments < 0:
            raise ValueError(f"max_segments must be >= 0, got {self.max_segments}")
        if self.auto_reference_events < self.min_samples:
            raise ValueError(
                f"auto_reference_events ({self.auto_reference_events}) must be at least "
                f"min_samples ({self.min_samples})"
            )

    def windows_per_day(self, segment_keys: int = 0, segment_values: int = 0) -> float:
        """Upper estimate of the windows one model closes per day: its all-traffic windows
        and, with segments, those of ``segment_values`` segment windows over
        ``segment_keys`` keys.

        Every event lands in the all-traffic window and in at most one window per segment
        key (its value of that key), so count-closed windows are at most
        ``(1 + segment_keys) * events_per_day / window_size`` whatever the split between
        values; each window, segment or not, adds at most ``86400 / max_window_seconds``
        time-closed ones.

        >>> MonitorConfig(window_size=5000).windows_per_day()
        201.0
        >>> MonitorConfig(window_size=5000).windows_per_day(segment_keys=2, segment_values=5)
        606.0
        """
        if segment_keys < 0 or segment_values < segment_keys:
            raise ValueError(
                f"need 0 <= segment_keys <= segment_values, got {segment_keys}, {segment_values}"
            )
        # the same float operations as budget.windows_per_day, so a model without segments
        # keeps its alpha to the last bit
        by_count = windows_per_day(self.events_per_day, self.window_size)
        by_time = 86_400.0 / (self.max_window_ms / 1000)
        return float((1 + segment_keys) * by_count + (1 + segment_values) * by_time)

    def with_settings(self, **settings: float | None) -> MonitorConfig:
        """This config with the named :data:`MONITOR_SETTINGS` replaced (None keeps one): a
        model's own settings over a worker's defaults, and the ``DRIFTLINE_MONITOR_*``
        settings over the built-in ones. ``ValueError`` naming the setting when a name is
        unknown or a value unusable.

        >>> config = MonitorConfig().with_settings(window_size=2000, days=90, false_alarms=None)
        >>> config.settings()["window_size"], config.budget
        (2000, FalseAlarmBudget(false_alarms=1.0, days=90.0))
        """
        unknown = sorted(set(settings) - set(MONITOR_SETTINGS))
        if unknown:
            raise ValueError(
                f"unknown monitoring settings {unknown}; known: {list(MONITOR_SETTINGS)}"
            )
        given = {name: value for name, value in settings.items() if value is not None}
        for name, value in given.items():
            # bool is an int to Python, never a count or a rate to a user
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
            if name in ("window_size", "auto_reference_events") and value != int(value):
                raise ValueError(f"{name} must be a whole number of events, got {value}")
        max_window_ms = self.max_window_ms
        if "max_window_seconds" in given:
            max_window_ms = int(given["max_window_seconds"] * 1000)
            if max_window_ms < 1:
                raise ValueError(
                    f"max_window_seconds must be at least 0.001, got {given['max_window_seconds']}"
                )
        config = replace(
            self,
            budget=FalseAlarmBudget(
                float(given.get("false_alarms", self.budget.false_alarms)),
                float(given.get("days", self.budget.days)),
            ),
            events_per_day=float(given.get("events_per_day", self.events_per_day)),
            window_size=int(given.get("window_size", self.window_size)),
            max_window_ms=max_window_ms,
            auto_reference_events=int(
                given.get("auto_reference_events", self.auto_reference_events)
            ),
        )
        config.windows_per_day()  # the budget's own checks, now rather than at a window
        return config

    def settings(self) -> dict[str, float | int]:
        """The :data:`MONITOR_SETTINGS` in effect, by name (what :meth:`with_settings` takes)."""
        return {
            "false_alarms": self.budget.false_alarms,
            "days": self.budget.days,
            "events_per_day": self.events_per_day,
            "window_size": self.window_size,
            "max_window_seconds": self.max_window_ms / 1000,
            "auto_reference_events": self.auto_reference_events,
        }


@dataclass(frozen=True)
class CodedLabels:
    """A label column as integer codes into ``labels`` (-1: missing).

    What a dictionary-encoded Arrow column is, so a worker can count categories with one
    ``bincount`` instead of a Python object per value.
    """

    codes: np.ndarray  # int64
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def __getitem__(self, index: slice) -> CodedLabels:
        return CodedLabels(self.codes[index], self.labels)

    def to_objects(self) -> np.ndarray:
        table = np.array([*self.labels, None], dtype=object)
        return table[np.where(self.codes < 0, len(self.labels), self.codes)]


def _objects(column: Any) -> np.ndarray:
    return column.to_objects() if isinstance(column, CodedLabels) else column


@dataclass
class FeatureBatch:
    """A batch of one model's events in columns. Missing numbers are NaN, missing labels None.

    ``categorical`` values are object arrays or :class:`CodedLabels`; ``label`` (the predicted
    label) likewise.
    """

    numeric_names: tuple[str, ...]
    numeric: np.ndarray  # (n, k) float64
    categorical: dict[str, Any]
    event_time: np.ndarray  # (n,) int64 milliseconds
    score: np.ndarray | None = None
    value: np.ndarray | None = None
    label: Any = None

    @classmethod
    def from_columns(
        cls,
        *,
        numeric: dict[str, Any] | None = None,
        categorical: dict[str, Any] | None = None,
        event_time: Any,
        score: Any = None,
        value: Any = None,
        label: Any = None,
    ) -> FeatureBatch:
        numeric = numeric or {}
        names = tuple(numeric)
        times = np.asarray(event_time, dtype=np.int64)
        n = times.shape[0]
        matrix = (
            np.column_stack([np.asarray(numeric[k], dtype=np.float64) for k in names])
            if names
            else np.empty((n, 0))
        )
        return cls(
            names,
            matrix,
            {k: np.asarray(v, dtype=object) for k, v in (categorical or {}).items()},
            times,
            None if score is None else np.asarray(score, dtype=np.float64),
            None if value is None else np.asarray(value, dtype=np.float64),
            None if label is None else np.asarray(label, dtype=object),
        )

    def __len__(self) -> int:
        return int(self.event_time.shape[0])

    def slice(self, start: int, stop: int) -> FeatureBatch:
        def cut(a: Any) -> Any:
            return None if a is None else a[start:stop]

        return FeatureBatch(
            self.numeric_names,
            self.numeric[start:stop],
            {k: v[start:stop] for k, v in self.categorical.items()},
            self.event_time[start:stop],
            cut(self.score),
            cut(self.value),
            cut(self.label),
        )

    def take(self, rows: np.ndarray) -> FeatureBatch:
        """The events at ``rows`` (increasing positions), in order: one segment's events."""

        def pick(a: Any) -> Any:
            if a is None:
                return None
            if isinstance(a, CodedLabels):
                return CodedLabels(a.codes[rows], a.labels)
            return a[rows]

        return FeatureBatch(
            self.numeric_names,
            self.numeric[rows],
            {k: pick(v) for k, v in self.categorical.items()},
            self.event_time[rows],
            pick(self.score),
            pick(self.value),
            pick(self.label),
        )

    def numeric_columns(self) -> dict[str, np.ndarray]:
        """Numeric inputs and numeric outputs, by profile name."""
        columns = {name: self.numeric[:, j] for j, name in enumerate(self.numeric_names)}
        if self.score is not None:
            columns[PREDICTION_SCORE] = self.score
        if self.value is not None:
            columns[PREDICTION_VALUE] = self.value
        return columns

    def categorical_columns(self) -> dict[str, Any]:
        columns = dict(self.categorical)
        if self.label is not None:
            columns[PREDICTION_LABEL] = self.label
        return columns


@dataclass(frozen=True)
class TestRow:
    """One test of one column in one window (a ``feature_drift`` / ``data_quality`` row)."""

    __test__ = False  # not a pytest class

    feature: str
    kind: str  # "numeric" or "categorical"
    signal: str  # "drift", "quality" or "multivariate"
    result: WindowTestResult


@dataclass
class WindowReport:
    """Everything decided when one window closed."""

    model_id: str
    window_index: int
    first_seq: int  # the window's first and last event, counted from the model's first event
    last_seq: int
    # the event whose arrival closed the window: its last event, or for a window closed by
    # the time bound, the first event past it (always in the batch that closed the window)
    closed_by_seq: int
    start_time_ms: int
    end_time_ms: int
    reference_id: str
    reference_version: str
    reference_source: str
    alpha: float
    rows: list[TestRow]
    drifted_features: list[str]
    quality_issues: list[tuple[str, str]]  # (feature, test)
    multivariate_drift: bool
    # "" for the model's all-traffic windows, else the segment's "key=value"; positions
    # (first/last/closed_by_seq) then count the segment's events
    segment: str = ""

    @property
    def n_events(self) -> int:
        return self.last_seq - self.first_seq + 1

    @property
    def drift(self) -> bool:
        return bool(self.drifted_features or self.quality_issues or self.multivariate_drift)


@dataclass
class _NumericState:
    window: NumericWindow
    below: int = 0
    above: int = 0
    wrong: int = 0


@dataclass
class _CategoricalState:
    window: CategoricalWindow
    wrong: int = 0


@dataclass
class _Window:
    index: int = 0
    first_seq: int = 0
    n_events: int = 0
    start_time_ms: int = 0
    end_time_ms: int = 0
    numeric: dict[str, _NumericState] = field(default_factory=dict)
    categorical: dict[str, _CategoricalState] = field(default_factory=dict)
    new_features: dict[str, int] = field(default_factory=dict)
    # per-event PCA errors of the window, summed once at close in one fixed order, so the
    # mean does not depend on how the events were batched
    pca_errors: list[np.ndarray] = field(default_factory=list)


def _label_counts(column: Any) -> tuple[list[str], list[int]]:
    """Present labels (as strings) and their counts, in label order."""
    if isinstance(column, CodedLabels):
        present = column.codes[column.codes >= 0]
        counts = np.bincount(present, minlength=len(column.labels))
        seen = np.flatnonzero(counts)
        return [str(column.labels[i]) for i in seen.tolist()], counts[seen].tolist()
    # None and float NaN are missing (a NaN label would otherwise become the category "nan")
    present = [str(v) for v in column.tolist() if v is not None and v == v]
    if not present:
        return [], []
    keys, counts = np.unique(np.asarray(present, dtype=str), return_counts=True)
    return keys.tolist(), counts.tolist()


def _add_counts(window: CategoricalWindow, keys: list[str], counts: list[int]) -> None:
    """What ``CategoricalWindow.update`` does with labels, from counts."""
    for key, count in zip(keys, counts, strict=True):
        slot = window._index.get(key)
        if slot is None:
            window.new_categories[key] = window.new_categories.get(key, 0) + count
        else:
            window.counts[slot] += count


def _evidence(psi: WindowTestResult) -> WindowTestResult:
    """PSI as evidence: its p-value kept, ``drift`` by the 0.1 rule of thumb, never deciding."""
    if psi.insufficient_data or psi.statistic is None:
        return psi._replace(threshold=PSI_EVIDENCE_THRESHOLD)
    return psi._replace(
        threshold=PSI_EVIDENCE_THRESHOLD, drift=psi.statistic >= PSI_EVIDENCE_THRESHOLD
    )


class ProfileMonitor:
    """Windows of one model's events tested against its reference profile."""

    def __init__(
        self,
        model_id: str,
        profile: ReferenceProfile | None = None,
        config: MonitorConfig | None = None,
        segment: str = "",
    ) -> None:
        self.model_id = model_id
        self.config = config or MonitorConfig()
        self.segment = segment  # "" = all traffic, else "key=value"
        # (segment keys, segment values) the model's windows are spread over, for the budget
        self.segment_load = (0, 0)
        self.seq = 0  # events seen, over the model's life
        self.profile: ReferenceProfile | None = None
        self.alpha = 1.0
        self._buffer: list[FeatureBatch] = []
        self._buffered = 0
        self._auto_version = ""  # the version a first-events reference is labelled with
        self._window = _Window()
        if profile is not None:
            self.set_reference(profile)

    # -- reference ---------------------------------------------------------------------------
    def set_reference(self, profile: ReferenceProfile) -> None:
        """Use ``profile`` from the next window on; the current window is dropped (its counts
        were against the old reference) and the next one starts at the next event."""
        self.profile = profile
        self._buffer, self._buffered = [], 0
        self.alpha = self._alpha()
        self._window = self._fresh_window(self._window.index)

    def set_config(self, config: MonitorConfig) -> bool:
        """Use ``config`` (a model's own settings) from the next window on; True when it
        changed anything. As for a new reference the open window is dropped and the next one
        starts at the next event: its bounds and its alpha came from the old settings, and
        finishing it under those would hold a shortened time bound back by up to a whole old
        window. A model still collecting its first events keeps them, and builds its
        reference at once if it now has enough."""
        if config == self.config:
            return False
        self.config = config
        if self.profile is not None:
            self.set_reference(self.profile)  # alpha under the new budget, a fresh window
        elif self._buffered >= config.auto_reference_events:
            self._build_auto_reference()
        return True

    def set_segment_load(self, segment_keys: int, segment_values: int) -> None:
        """Spread the budget over the model's segment windows too (``MonitorConfig.
        windows_per_day``): every monitor of a model, all-traffic and segment, takes the same
        share per window, so their false alarms together stay within the model's budget.
        Applies to windows closing from now on, the open one included."""
        load = (segment_keys, segment_values)
        if load != getattr(self, "segment_load", (0, 0)):
            self.segment_load = load
            if self.profile is not None:
                self.alpha = self._alpha()

    def _alpha(self) -> float:
        # absent in monitors checkpointed before segments existed: no segment windows
        keys, values = getattr(self, "segment_load", (0, 0))
        # the sequential detectors (score, error) spend their share of the model's budget
        return per_test_alpha(
            window_budget(self.config.budget),
            self.config.windows_per_day(keys, values),
            self.tests_per_window(),
        )

    def rebaseline(self, profile: ReferenceProfile | None = None, version: str = "") -> None:
        """Start over from the next event, as for a new model version: the open window and
        the reference are dropped, and the next windows are tested against ``profile`` or,
        without one, against the next ``auto_reference_events`` events (their profile is
        labelled ``version``). Event positions and window indices keep counting, so the
        windows after a re-baseline never reuse an earlier window's ids."""
        index = self._window.index  # the dropped window's index goes to the next window
        self.profile = None
        self.alpha = 1.0
        self._buffer, self._buffered = [], 0
        self._auto_version = version
        self._window = _Window(index=index, first_seq=self.seq)
        if profile is not None:
            self.set_reference(profile)

    @property
    def warmup_start(self) -> int:
        """Position of the first event of the first-events reference being collected."""
        return self.seq - self._buffered

    def tests_per_window(self) -> int:
        """Every p-value compared with ``alpha`` when a window closes."""
        profile = self.profile
        if profile is None:
            return 1
        count = 0
        for kind, columns in (("numeric", profile.numeric), ("categorical", profile.categorical)):
            count += len(columns) * (len(_DRIFT_TESTS[kind]) + len(quality.QUALITY_TESTS[kind]))
        if self._pca_active():
            count += 1
        return max(count, 1)

    def _pca_active(self) -> bool:
        return bool(self.config.multivariate and self.profile and self.profile.pca)

    def _fresh_window(self, index: int, previous: _Window | None = None) -> _Window:
        """The next window; ``previous`` (same reference) lends its emptied column windows,
        which saves rebuilding them from the profile at every window."""
        assert self.profile is not None
        window = _Window(index=index, first_seq=self.seq)
        if previous is not None:
            for name, state in previous.numeric.items():
                # Seed the reservoir by window index: replays draw the same samples.
                state.window.seed = index
                state.window.reset()
                window.numeric[name] = _NumericState(state.window)
            for name, cstate in previous.categorical.items():
                cstate.window.reset()
                window.categorical[name] = _CategoricalState(cstate.window)
            return window
        for name, prof in self.profile.numeric.items():
            window.numeric[name] = _NumericState(prof.window(self.config.min_samples, seed=index))
        for name, cat in self.profile.categorical.items():
            window.categorical[name] = _CategoricalState(cat.window(self.config.min_samples))
        return window

    # -- feeding -----------------------------------------------------------------------------
    def update(self, batch: FeatureBatch) -> list[WindowReport]:
        """Add a batch of events (in sequence order); return the windows that closed."""
        reports: list[WindowReport] = []
        start, n = 0, len(batch)
        while start < n:
            if self.profile is None:
                take = min(self.config.auto_reference_events - self._buffered, n - start)
                self._buffer.append(batch.slice(start, start + take))
                self._buffered += take
                self.seq += take
                start += take
                if self._buffered >= self.config.auto_reference_events:
                    self._build_auto_reference()
                continue
            window = self._window
            if window.n_events and batch.event_time[start] >= (
                window.start_time_ms + self.config.max_window_ms
            ):
                reports.append(self._close(closed_by_seq=self.seq))  # the late event
                continue
            stop = min(n, start + self.config.window_size - window.n_events)
            if window.n_events == 0:
                window.start_time_ms = int(batch.event_time[start])
            limit = window.start_time_ms + self.config.max_window_ms
            late = np.flatnonzero(batch.event_time[start:stop] >= limit)
            if late.size:
                stop = start + int(late[0])
            self._add(batch.slice(start, stop))
            start = stop
            if self._window.n_events >= self.config.window_size:
                reports.append(self._close(closed_by_seq=self.seq - 1))
        return reports

    def _build_auto_reference(self) -> None:
        parts = self._buffer
        columns: dict[str, Any] = {}
        numeric_names = sorted({name for p in parts for name in p.numeric_names})
        categorical_names = sorted({name for p in parts for name in p.categorical})
        for name in numeric_names:
            columns[name] = np.concatenate(
                [p.numeric_columns().get(name, np.full(len(p), np.nan)) for p in parts]
            )
        for name in categorical_names:
            columns[name] = np.concatenate(
                [
                    _objects(p.categorical[name])
                    if name in p.categorical
                    else np.full(len(p), None, dtype=object)
                    for p in parts
                ]
            )
        roles: dict[str, str] = {}
        for role, attr in (("prediction_score", "score"), ("prediction_value", "value")):
            if all(getattr(p, attr) is not None for p in parts):
                columns[f"__{attr}"] = np.concatenate([getattr(p, attr) for p in parts])
                roles[role] = f"__{attr}"
        if all(p.label is not None for p in parts):
            columns["__label"] = np.concatenate([_objects(p.label) for p in parts])
            roles["prediction_label"] = "__label"
        # Columns that are entirely missing in the first events cannot be profiled: leave
        # them out (they show up as new features if they start arriving).
        usable = {}
        for name, column in columns.items():
            values = np.asarray(column)
            present = ~np.isnan(values) if values.dtype.kind == "f" else values != None  # noqa: E711
            if present.any():
                usable[name] = column
        roles = {role: col for role, col in roles.items() if col in usable}
        profile = build_profile(
            usable,
            model_id=self.model_id,
            source="first_events",
            # absent in monitors checkpointed before re-baselining existed: the model's first
            # version, whose first-events reference has always been unlabelled
            version=getattr(self, "_auto_version", ""),
            categorical=[n for n in categorical_names if n in usable],
            seed=0,
            **roles,
        )
        self.set_reference(profile)

    def _add(self, part: FeatureBatch) -> None:
        window = self._window
        n = len(part)
        if not n:
            return
        window.n_events += n
        window.end_time_ms = max(window.end_time_ms, int(part.event_time.max()))
        numeric = part.numeric_columns()
        categorical = part.categorical_columns()
        for name, values in numeric.items():
            present = values[~np.isnan(values)]
            state = window.numeric.get(name)
            if state is not None:
                state.window.update(present)
                state.below += int((present < state.window.reference_min).sum())
                state.above += int((present > state.window.reference_max).sum())
            elif name in window.categorical:
                window.categorical[name].wrong += int(present.shape[0])
            elif present.shape[0]:
                window.new_features[name] = window.new_features.get(name, 0) + present.shape[0]
        for name, column in categorical.items():
            keys, counts = _label_counts(column)
            n_present = sum(counts)
            cat = window.categorical.get(name)
            if cat is not None:
                _add_counts(cat.window, keys, counts)
            elif name in window.numeric:
                window.numeric[name].wrong += n_present
            elif n_present:
                window.new_features[name] = window.new_features.get(name, 0) + n_present
        if self._pca_active():
            pca = self.profile.pca  # type: ignore[union-attr]
            matrix = np.column_stack(
                [numeric.get(f, np.full(n, np.nan)) for f in pca.features]
            )
            window.pca_errors.append(pca.errors(matrix))
        self.seq += n

    # -- closing -----------------------------------------------------------------------------
    def _close(self, closed_by_seq: int) -> WindowReport:
        profile, window, alpha = self.profile, self._window, self.alpha
        assert profile is not None
        cfg = self.config
        n_events = window.n_events
        rows: list[TestRow] = []
        drifted: list[str] = []
        issues: list[tuple[str, str]] = []

        def quality_row(feature: str, kind: str, result: WindowTestResult) -> None:
            rows.append(TestRow(feature, kind, "quality", result))
            if result.drift:
                issues.append((feature, result.test))

        for name in sorted(window.numeric):
            state, prof = window.numeric[name], profile.numeric[name]
            w = state.window
            ks = w.ks(0.5)._replace(threshold=alpha)
            ks = ks._replace(drift=ks.p_value is not None and ks.p_value < alpha)
            # chi-square on the reference deciles catches what KS is weak at: tails, and
            # discrete columns (where KS is very conservative).
            chi = chisquare_homogeneity(w.reference_counts, w.counts, alpha, cfg.min_samples)
            psi = _evidence(psi_test(w.reference_counts, w.counts, alpha, cfg.min_samples))
            effect = w.wasserstein(cfg.min_wasserstein)
            rows += [TestRow(name, "numeric", "drift", r) for r in (ks, chi, psi, effect)]
            if (ks.drift or chi.drift) and effect.drift:
                drifted.append(name)
            present = w.n_current
            missing = n_events - present - state.wrong
            quality_row(name, "numeric", quality.missing_rate(
                prof.n_missing, profile.n_events, missing, n_events, alpha, cfg.min_samples))
            quality_row(name, "numeric", quality.out_of_range(
                prof.n_present, state.below, state.above, present, alpha, cfg.min_samples))
            distinct = 1 if present and w.meta[2] == w.meta[3] else 2
            quality_row(name, "numeric", quality.constant(
                prof.n_present, prof.top_share, distinct, present, alpha, cfg.min_samples))
            if state.wrong:
                quality_row(name, "numeric", quality.wrong_type(prof.n_present, state.wrong, n_events))
        for name in sorted(window.categorical):
            cstate, cat = window.categorical[name], profile.categorical[name]
            w = cstate.window
            _, ref_counts, cur_counts = w.aligned_counts()
            chi = chisquare_homogeneity(ref_counts, cur_counts, alpha, cfg.min_samples)
            psi = _evidence(psi_test(ref_counts, cur_counts, alpha, cfg.min_samples))
            effect = jensen_shannon_counts(
                ref_counts, cur_counts, cfg.min_jensenshannon, cfg.min_samples
            )
            rows += [TestRow(name, "categorical", "drift", r) for r in (chi, psi, effect)]
            if chi.drift and effect.drift:
                drifted.append(name)
            present = w.n_current
            missing = n_events - present - cstate.wrong
            quality_row(name, "categorical", quality.missing_rate(
                cat.n_missing, profile.n_events, missing, n_events, alpha, cfg.min_samples))
            unseen = sum(w.new_categories.values())
            quality_row(name, "categorical", quality.unseen_categories(
                cat.n_present, cat.singletons, unseen, present, alpha, cfg.min_samples))
            distinct = int((w.counts > 0).sum()) + len(w.new_categories)
            quality_row(name, "categorical", quality.constant(
                cat.n_present, cat.top_share, distinct, present, alpha, cfg.min_samples))
            if cstate.wrong:
                quality_row(name, "categorical", quality.wrong_type(cat.n_present, cstate.wrong, n_events))
        for name in sorted(window.new_features):
            count = window.new_features[name]
            result = WindowTestResult(
                "new_feature", count / n_events, None, 0.0, True, 0, n_events
            )
            quality_row(name, "", result)
        multivariate = False
        if self._pca_active():
            errors = np.concatenate(window.pca_errors) if window.pca_errors else np.empty(0)
            result = self._pca_test(n_events, float(np.sum(errors)), alpha)
            rows.append(TestRow("*", "numeric", "multivariate", result))
            multivariate = result.drift
        report = WindowReport(
            self.model_id,
            window.index,
            window.first_seq,
            window.first_seq + n_events - 1,
            closed_by_seq,
            window.start_time_ms,
            window.end_time_ms,
            profile.reference_id,
            profile.version,
            profile.source,
            alpha,
            rows,
            drifted,
            issues,
            multivariate,
            getattr(self, "segment", ""),
        )
        self._window = self._fresh_window(window.index + 1, window)
        return report

    def _pca_test(self, n_events: int, error_sum: float, alpha: float) -> WindowTestResult:
        pca = self.profile.pca  # type: ignore[union-attr]
        assert pca is not None
        n_ref = self.profile.n_events  # type: ignore[union-attr]
        if n_events < self.config.min_samples:
            return WindowTestResult("pca_reconstruction", None, None, alpha, False, n_ref, n_events, True)
        mean_error = error_sum / n_events
        spread = max(pca.error_std, 1e-12) / math.sqrt(n_events)
        z = (mean_error - pca.error_mean) / spread
        p_value = 0.5 * math.erfc(z / math.sqrt(2.0))
        return WindowTestResult(
            "pca_reconstruction", mean_error, p_value, alpha, p_value < alpha, n_ref, n_events
        )

    # -- state -------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The whole monitor (reference, open window, counters) for a checkpoint."""
        return _MAGIC + pickle.dumps(self, protocol=5)

    @classmethod
    def from_bytes(cls, data: bytes) -> ProfileMonitor:
        if data[: len(_MAGIC)] != _MAGIC:
            raise ValueError("not a driftline profile monitor state (bad magic bytes)")
        monitor = pickle.loads(data[len(_MAGIC) :])  # noqa: S301 - our own checkpoint
        if not isinstance(monitor, cls):
            raise ValueError("profile monitor state holds something else")
        return monitor
