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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEFAULT_BUDGET", "FalseAlarmBudget", "per_test_alpha", "windows_per_day"]


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
