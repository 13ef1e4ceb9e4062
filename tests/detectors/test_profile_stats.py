"""Two-sample tests, data-quality tests and the false-alarm budget against scipy and brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from driftline.detectors import quality
from driftline.detectors.budget import FalseAlarmBudget, per_test_alpha, windows_per_day
from driftline.detectors.two_sample import chisquare_homogeneity, pool_rare_cells, psi_test
from scipy import stats

# -- two-sample tests --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_chisquare_homogeneity_is_scipys_contingency_test(seed: int) -> None:
    g = np.random.default_rng(seed)
    ref = g.integers(20, 400, 6).astype(float)
    cur = g.integers(20, 400, 6).astype(float)
    ours = chisquare_homogeneity(ref, cur, alpha=0.01)
    statistic, p_value, dof, _ = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert ours.statistic == pytest.approx(statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(p_value, rel=1e-9, abs=1e-300)
    assert ours.drift == (p_value < 0.01)
    assert (ours.n_reference, ours.n_current) == (int(ref.sum()), int(cur.sum()))


def test_rare_cells_are_pooled_before_the_chi_square() -> None:
    ref = np.array([5000.0, 4000.0, 1.0, 0.0])
    cur = np.array([500.0, 400.0, 0.0, 3.0])  # 3 values of a brand-new rare category
    pooled_ref, pooled_cur = pool_rare_cells(ref, cur)
    assert pooled_ref.sum() == ref.sum() and pooled_cur.sum() == cur.sum()
    # Unpooled, three values of a new category give p ~ 1e-6, which a budgeted alpha would
    # call drift; the unseen-categories test is the one that judges them.
    assert stats.chi2_contingency(np.vstack([ref, cur]), correction=False)[1] < 1e-5
    assert chisquare_homogeneity(ref, cur, alpha=1e-6).p_value > 1e-3


def test_psi_p_value_uses_the_effective_sample_size() -> None:
    ref = np.array([300.0, 300.0, 400.0])
    cur = np.array([120.0, 80.0, 100.0])
    result = psi_test(ref, cur, alpha=0.05)
    p, q = ref / ref.sum(), cur / cur.sum()
    psi = float(np.sum((q - p) * np.log(q / p)))
    n_eff = 1000 * 300 / 1300
    assert result.statistic == pytest.approx(psi)
    assert result.p_value == pytest.approx(stats.chi2.sf(psi * n_eff, 2))


def test_two_sample_tests_guard_small_windows() -> None:
    result = chisquare_homogeneity(np.array([100.0, 100.0]), np.array([3.0, 4.0]), alpha=0.01)
    assert result.insufficient_data and not result.drift and result.statistic is None
    with pytest.raises(ValueError, match="alpha"):
        psi_test(np.array([100.0, 100.0]), np.array([50.0, 40.0]), alpha=0.0)


# -- data quality ----------------------------------------------------------------------------


@pytest.mark.parametrize(("ref_missing", "cur_missing"), [(0, 1), (10, 3), (10, 40), (500, 600)])
def test_missing_rate_is_one_sided_fisher(ref_missing: int, cur_missing: int) -> None:
    result = quality.missing_rate(ref_missing, 10_000, cur_missing, 1000, alpha=1e-4)
    table = [[cur_missing, 1000 - cur_missing], [ref_missing, 10_000 - ref_missing]]
    expected = stats.fisher_exact(table, alternative="greater").pvalue
    assert result.p_value == pytest.approx(expected, rel=1e-9)
    assert result.statistic == cur_missing / 1000


def _brute_force_below(n: int, m: int, k: int) -> float:
    """P(at least k current values below every reference value), by enumerating rank sets."""
    hits = total = 0
    for current_ranks in itertools.combinations(range(n + m), m):
        total += 1
        below = 0
        while below < m and below in current_ranks:
            below += 1
        hits += below >= k
    return hits / total


@pytest.mark.parametrize(("n", "m", "k"), [(6, 4, 1), (6, 4, 2), (5, 5, 3), (8, 3, 3)])
def test_out_of_range_tail_matches_enumeration(n: int, m: int, k: int) -> None:
    assert math.exp(quality._log_tail_below(n, m, k)) == pytest.approx(_brute_force_below(n, m, k))


def test_out_of_range_p_values_are_valid_on_unchanged_data() -> None:
    g = np.random.default_rng(11)
    p_values = []
    for _ in range(4000):
        ref, cur = g.lognormal(0, 1, 200), g.lognormal(0, 1, 50)
        below, above = int((cur < ref.min()).sum()), int((cur > ref.max()).sum())
        p_values.append(quality.out_of_range(200, below, above, 50, alpha=0.05).p_value)
    rates = [float(np.mean(np.asarray(p_values) <= a)) for a in (0.01, 0.05, 0.2)]
    # Valid means P(p <= a) <= a; the binomial noise of 4000 draws is ~0.007 at a = 0.2.
    assert rates[0] <= 0.01 + 0.006 and rates[1] <= 0.05 + 0.01 and rates[2] <= 0.2 + 0.02


def test_unseen_categories_and_constant_and_wrong_type() -> None:
    unseen = quality.unseen_categories(10_000, 0, 50, 1000, alpha=1e-6)
    assert unseen.drift and unseen.statistic == 0.05
    assert unseen.p_value == pytest.approx(stats.binom.sf(49, 1000, 1 / 10_001))
    assert not quality.unseen_categories(10_000, 200, 25, 1000, alpha=1e-6).drift
    assert quality.constant(10_000, 0.3, 1, 1000, alpha=1e-6).drift
    assert not quality.constant(10_000, 0.3, 2, 1000, alpha=1e-6).drift
    assert not quality.constant(10_000, 0.999, 1, 1000, alpha=1e-6).drift  # nearly constant ref
    assert not quality.constant(10_000, 1.0, 1, 1000, alpha=1e-6).drift
    wrong = quality.wrong_type(10_000, 3, 1000)
    assert wrong.drift and wrong.p_value is None
    assert not quality.wrong_type(10_000, 0, 1000).drift
    assert quality.missing_rate(0, 10_000, 5, 10, alpha=0.01).insufficient_data


# -- budget ----------------------------------------------------------------------------------


def test_budget_spreads_over_windows_and_tests() -> None:
    budget = FalseAlarmBudget(false_alarms=2.0, days=7.0)
    alpha = per_test_alpha(budget, windows_per_day=48.0, tests_per_window=25)
    assert alpha == pytest.approx(2.0 / (7 * 48 * 25))
    assert budget.expected_false_alarms(alpha, 48.0, 25) == pytest.approx(2.0)
    assert windows_per_day(240_000, 2000) == 120.0
    assert windows_per_day(240_000, 2000, 3600) == 144.0


@pytest.mark.parametrize(
    "bad",
    [
        lambda: FalseAlarmBudget(false_alarms=0.0),
        lambda: FalseAlarmBudget(days=float("inf")),
        lambda: per_test_alpha(FalseAlarmBudget(), 0.0, 3),
        lambda: per_test_alpha(FalseAlarmBudget(), 10.0, 0),
        lambda: windows_per_day(100.0, 0),
        lambda: windows_per_day(-1.0, 10),
    ],
)
def test_budget_refuses_nonsense(bad) -> None:  # noqa: ANN001
    with pytest.raises(ValueError):
        bad()
