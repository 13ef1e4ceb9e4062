"""The false-alarm budget's share for the sequential detectors: ADWIN's delta from the budget,
and the window tests' share of what is left (the window tests' own alpha is tested in
test_profile_stats.py)."""

from __future__ import annotations

import numpy as np
import pytest
from driftline.detectors.adwin import ADWIN
from driftline.detectors.budget import (
    ADWIN_CLOCK,
    DEFAULT_BUDGET,
    SEQUENTIAL_SHARE,
    SEQUENTIAL_STREAMS,
    FalseAlarmBudget,
    per_test_alpha,
    sequential_delta,
    window_budget,
)


def test_delta_spreads_the_share_over_every_check_of_every_stream() -> None:
    budget = FalseAlarmBudget(false_alarms=2.0, days=7.0)
    delta = sequential_delta(budget, 48_000, streams=3, clock=16, share=0.25)
    checks_per_stream = 48_000 * 7 / 16
    assert delta == pytest.approx(0.25 * 2.0 / (3 * checks_per_stream))
    # at the defaults: half of one false alarm per 30 days over the score and error streams
    # of a million events a day
    default = sequential_delta(DEFAULT_BUDGET, 1_000_000)
    assert default == pytest.approx(0.5 / (2 * 1_000_000 * 30 / 32))


def test_sequential_and_window_shares_add_up_to_the_budget() -> None:
    budget = FalseAlarmBudget(false_alarms=3.0, days=10.0)
    events, windows, tests = 200_000, 50.0, 40
    delta = sequential_delta(budget, events)
    sequential = delta * SEQUENTIAL_STREAMS * events * budget.days / ADWIN_CLOCK
    alpha = per_test_alpha(window_budget(budget), windows, tests)
    windowed = budget.expected_false_alarms(alpha, windows, tests)
    assert sequential == pytest.approx(SEQUENTIAL_SHARE * 3.0)
    assert sequential + windowed == pytest.approx(3.0)


def test_more_traffic_or_streams_means_a_smaller_delta() -> None:
    base = sequential_delta(DEFAULT_BUDGET, 1_000_000)
    assert sequential_delta(DEFAULT_BUDGET, 2_000_000) == pytest.approx(base / 2)
    assert sequential_delta(DEFAULT_BUDGET, 1_000_000, streams=4) == pytest.approx(base / 2)
    assert sequential_delta(FalseAlarmBudget(1.0, 365.0), 1_000_000) < base


def test_the_clock_is_adwins() -> None:
    assert ADWIN().clock == ADWIN_CLOCK


def test_adwin_stays_under_its_bound_on_bounded_stationary_values() -> None:
    # The assumption the delta rests on: on bounded i.i.d. values ADWIN false-alarms at most
    # delta per check. A budget loose enough that the bound is a countable number of alarms
    # in 2M values (delta ~ 1e-3); ADWIN's cut is conservative, so far fewer are measured.
    budget = FalseAlarmBudget(false_alarms=1.0, days=1.0)
    delta = sequential_delta(budget, 16_000.0, streams=1, share=0.5)
    n = 2_000_000
    bound = delta * n / ADWIN_CLOCK
    assert 10 < bound < 100
    values = (np.random.default_rng(5).random(n) < 0.1).astype(float)
    alarms = len(ADWIN(delta=delta).update_many(values).drift)
    assert alarms <= bound / 5, (alarms, bound)


@pytest.mark.parametrize(
    "bad",
    [
        lambda: sequential_delta(DEFAULT_BUDGET, 0.0),
        lambda: sequential_delta(DEFAULT_BUDGET, float("nan")),
        lambda: sequential_delta(DEFAULT_BUDGET, 1000.0, streams=0),
        lambda: sequential_delta(DEFAULT_BUDGET, 1000.0, clock=0),
        lambda: sequential_delta(DEFAULT_BUDGET, 1000.0, share=0.0),
        lambda: sequential_delta(DEFAULT_BUDGET, 1000.0, share=1.0),
        # an alarm allowed at every check is no budget
        lambda: sequential_delta(FalseAlarmBudget(1e6, 1.0), 1000.0),
        lambda: window_budget(DEFAULT_BUDGET, share=-0.1),
    ],
)
def test_refuses_nonsense(bad) -> None:  # noqa: ANN001
    with pytest.raises(ValueError):
        bad()
