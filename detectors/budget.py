"""A false-alarm budget turned into per-test significance levels.

Users think in "how often may this page me for nothing", not in p-values. A
:class:`FalseAlarmBudget` says "at most ``false_alarms`` false alarms per ``days`` of one
model's traffic"; :func:`per_test_alpha` divides it over every test the model runs in that
time (Bonferroni):

    alpha = false_alarms / (days * windows_per_day * tests_per_window)

Why this holds without independence: the expected number of false alarms is the sum, over all
tests ever run on unchanged data, of each test's false-positive probability (linearity of
expectation needs no independence between windows, features or tests). A test whose p-value is
valid (``P(p <= a) <= a`` on unchanged data) contributes at most ``alpha``, so the sum over
``days * windows_per_day * tests_per_window`` tests is at most the budget. Correlated tests (KS
and PSI on one feature) make Bonferroni conservative, never optimistic.

Assumptions, stated so they can be checked:

* each test's p-value is valid under "no change": exact or conservative for KS (ties only make
  it conservative), asymptotic for χ²-type tests (rare categories are pooled so that expected
  counts stay >= 5), exchangeability of reference and current values for the range and
  unseen-category tests (see :mod:`driftline.detectors.quality`);
* the reference is a sample of the same distribution as unchanged traffic. Conditional on one
  particular reference the false-alarm count varies more than for a fresh reference each
  window (every window shares the reference's own sampling noise); the budget is an
  expectation over references. A larger reference narrows the gap;
* ``windows_per_day`` is an upper estimate of the traffic. Twice the windows means up to twice
  the false alarms; the thresholds move only logarithmically with it, so overestimating
  traffic costs little detection power.

Example
-------
>>> from driftline.detectors.budget import FalseAlarmBudget, per_test_alpha
>>> budget = FalseAlarmBudget(false_alarms=1.0, days=30.0)
>>> alpha = per_test_alpha(budget, windows_per_day=100.0, tests_per_window=50)
>>> f"{alpha:.2e}"
'6.67e-06'
>>> budget.expected_false_alarms(alpha, windows_per_day=100.0, tests_per_window=50)
1.0

The same budget also covers a model's sequential detectors (ADWIN on its score and error
streams, :func:`sequential_delta`): they take :data:`SEQUENTIAL_SHARE` of it and the window
tests the rest (:func:`window_budget`), so the model's total stays within the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "ADWIN_CLOCK",
    "DEFAULT_BUDGET",
    "SEQUENTIAL_SHARE",
    "SEQUENTIAL_STREAMS",
    "FalseAlarmBudget",
    "per_test_alpha",
    "sequential_delta",
    "window_budget",
    "windows_per_day",
]


@dataclass(frozen=True)
class FalseAlarmBudget:
    """At most ``false_alarms`` false alarms (expected) per ``days`` of one model's traffic.

    The default, one per 30 days per model, keeps a fleet of 100 models at about three
    false pages a day in total: noticeable, not a pager that never stops.
    """

    false_alarms: float = 1.0
    days: float = 30.0

    def __post_init__(self) -> None:
        for name in ("false_alarms", "days"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")

    def per_day(self) -> float:
        return self.false_alarms / self.days

    def expected_false_alarms(
        self, alpha: float, windows_per_day: float, tests_per_window: int
    ) -> float:
        """Upper bound on false alarms in ``days`` when every test runs at ``alpha``."""
        return round(alpha * windows_per_day * tests_per_window * self.days, 12)


DEFAULT_BUDGET = FalseAlarmBudget()


def windows_per_day(
    events_per_day: float, window_size: int, max_window_seconds: float | None = None
) -> float:
    """Upper estimate of how many windows close per day.

    A window closes after ``window_size`` events or ``max_window_seconds`` of event time,
    whichever comes first, so at most ``events_per_day / window_size`` count-closed windows
    plus ``86400 / max_window_seconds`` time-closed ones.

    >>> windows_per_day(1_000_000, 2000, 86_400)
    501.0
    """
    if not (math.isfinite(events_per_day) and events_per_day > 0):
        raise ValueError(f"events_per_day must be a positive finite number, got {events_per_day}")
    if window_size < 1:
        raise ValueError(f"window_size must be >= 1, got {window_size}")
    total = events_per_day / window_size
    if max_window_seconds is not None:
        if not (math.isfinite(max_window_seconds) and max_window_seconds > 0):
            raise ValueError(
                f"max_window_seconds must be a positive finite number, got {max_window_seconds}"
            )
        total += 86_400.0 / max_window_seconds
    return float(total)


def per_test_alpha(
    budget: FalseAlarmBudget, windows_per_day: float, tests_per_window: int
) -> float:
    """Significance level of each test so that all tests together stay within ``budget``.

    ``tests_per_window`` counts every p-value compared with the threshold when a window
    closes: each feature's distribution tests and data-quality tests, the prediction tests and
    the multivariate test (segments multiply it).
    """
    if not (math.isfinite(windows_per_day) and windows_per_day > 0):
        raise ValueError(
            f"windows_per_day must be a positive finite number, got {windows_per_day}"
        )
    if tests_per_window < 1:
        raise ValueError(f"tests_per_window must be >= 1, got {tests_per_window}")
    return budget.false_alarms / (budget.days * windows_per_day * tests_per_window)


# The share of a model's budget spent by its sequential detectors; the window tests get the
# rest. Each side's thresholds move with the logarithm of its share (ADWIN's cut with
# ln(1/delta), a window test's critical value with ln(1/alpha)), so the split costs either
# side little: halving a share raises ADWIN's ln(2 ln W / delta) by ln 2 on about 18 at the
# defaults (+2% on its cut), and moves a KS critical value by a similar few percent. An even
# split is the simplest that neither side can call unfair.
SEQUENTIAL_SHARE = 0.5
# Sequential streams per model by default: the score and the error stream (the regression
# prediction value, unbounded like a raw feature, is left to the window tests).
SEQUENTIAL_STREAMS = 2
# ADWIN tests its cuts every ``clock`` values: river's default, and ours
# (:class:`driftline.detectors.adwin.ADWIN`).
ADWIN_CLOCK = 32


def window_budget(budget: FalseAlarmBudget, share: float = SEQUENTIAL_SHARE) -> FalseAlarmBudget:
    """What the window tests may spend once the sequential detectors took ``share``.

    >>> window_budget(FalseAlarmBudget(false_alarms=1.0, days=30.0))
    FalseAlarmBudget(false_alarms=0.5, days=30.0)
    """
    _check_share(share)
    return FalseAlarmBudget(budget.false_alarms * (1.0 - share), budget.days)


def sequential_delta(
    budget: FalseAlarmBudget,
    events_per_day: float,
    *,
    streams: int = SEQUENTIAL_STREAMS,
    clock: int = ADWIN_CLOCK,
    share: float = SEQUENTIAL_SHARE,
) -> float:
    """ADWIN's ``delta`` for a model's sequential streams within ``share`` of ``budget``.

    ADWIN tests its cuts once every ``clock`` values of a stream. A stream that sees at most
    ``events_per_day`` values a day is checked at most ``events_per_day * days / clock`` times
    in the budget's ``days``; over ``streams`` streams, Bonferroni again:

        delta = share * false_alarms / (streams * events_per_day * days / clock)

    Why: Bifet & Gavaldà (2007, Theorem 3.1) bound the probability that one check cuts a
    window whose mean has not changed by ``delta`` (their cut's threshold pays for the many
    cut points of one check), and expected false alarms add up over checks without
    independence, as for the window tests. A model's streams of several versions share its
    traffic, so they add no checks.

    Assumptions, stated so they can be checked:

    * the values are bounded in [0, 1] and independent while nothing changes. The 0/1 error
      of a classifier and a probability score are; an absolute regression error or a raw
      feature is not, and a heavy tail breaks the bound at any ``delta``
      (``benchmarks/drift_quality.py``), hence the worker's bounded error and score streams
      (docs/drift.md, "Sequential detectors and the budget");
    * river's cut (ours is bit-identical) is the paper's practical variant, a Bernstein-style
      bound with the window's variance and ``ln(2 ln W / delta)`` for the cut points; its
      guarantee is approximate, so the benchmark measures it: at ``delta = 0.002`` the bound
      allows 62.5 false alarms per million values (31,250 checks x 0.002) and 0 to 1 are
      measured on bounded streams;
    * ``events_per_day`` is an upper estimate, as for the windows; a stream without values
      (no score, no labels yet) only leaves its share unspent.

    >>> from driftline.detectors.budget import DEFAULT_BUDGET, sequential_delta
    >>> delta = sequential_delta(DEFAULT_BUDGET, events_per_day=1_000_000)
    >>> f"{delta:.3g}"
    '2.67e-07'
    >>> checks = 1_000_000 * 30 / 32  # per stream in 30 days
    >>> round(2 * checks * delta, 12)  # the sequential share of one false alarm
    0.5
    """
    if not (math.isfinite(events_per_day) and events_per_day > 0):
        raise ValueError(f"events_per_day must be a positive finite number, got {events_per_day}")
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    if clock < 1:
        raise ValueError(f"clock must be >= 1, got {clock}")
    _check_share(share)
    if share == 0.0:
        raise ValueError("share must be > 0 for the sequential detectors to run at all")
    checks = events_per_day * budget.days / clock
    delta = share * budget.false_alarms / (streams * checks)
    if not delta < 1.0:
        raise ValueError(
            f"a budget of {budget.false_alarms} false alarms per {budget.days} days allows a "
            f"false alarm at every ADWIN check at {events_per_day} events a day (delta = "
            f"{delta:.3g}); give it fewer false alarms or more events per day"
        )
    return delta


def _check_share(share: float) -> None:
    if not (math.isfinite(share) and 0.0 <= share < 1.0):
        raise ValueError(f"share must be in [0, 1), got {share}")
