"""Data-quality tests of a current window against a reference profile.

Each returns a :class:`~driftline.detectors.window_tests.WindowTestResult` whose ``statistic``
is the rate in the current window and whose ``p_value`` is the probability of seeing at least
that many bad values if the window came from the reference's distribution. ``drift`` is
``p_value < alpha``, so quality signals share the false-alarm budget with the drift tests
(:mod:`driftline.detectors.budget`).

=====================  ======================================================================
test                   null model (why its p-value is valid)
=====================  ======================================================================
``missing_rate``       one-sided Fisher exact test: the current window's missing count against
                       the reference's, both samples of one missing-rate (hypergeometric)
``out_of_range``       exchangeability: with ``n`` reference and ``m`` current values from one
                       continuous distribution, ``P(k current values below the reference
                       minimum) = C(m, k) / C(n + m, k)``; same above the maximum, the two sides
                       Bonferroni-combined. Ties (counts, rounded values) only make it smaller.
``unseen_categories``  binomial with the Good–Turing chance of a new category,
                       ``(singletons + 1) / (n + 1)``: an approximation for long-tailed columns,
                       exact enough for a closed set of categories
``constant``           all ``m`` values equal: at most ``top_share ** (m - 1)`` where
                       ``top_share`` is the reference's most common value's share
``wrong_type``         no test: a string where the reference has numbers (or the reverse) is
                       never chance; ``drift`` whenever the count is above 0 (not budgeted)
=====================  ======================================================================

>>> from driftline.detectors.quality import missing_rate, out_of_range
>>> missing_rate(10, 10_000, 600, 1000, alpha=1e-6).drift
True
>>> missing_rate(10, 10_000, 2, 1000, alpha=1e-6).drift
False
>>> r = out_of_range(10_000, 0, 1, 1000, alpha=1e-6)
>>> r.statistic, r.drift
(0.001, False)
"""

from __future__ import annotations

import math

from .window_tests import DEFAULT_MIN_SAMPLES, WindowTestResult, _insufficient

__all__ = [
    "QUALITY_TESTS",
    "constant",
    "missing_rate",
    "out_of_range",
    "unseen_categories",
    "wrong_type",
]

# The data-quality tests that carry a p-value and so count against the budget, per column kind.
QUALITY_TESTS = {
    "numeric": ("missing_rate", "out_of_range", "constant"),
    "categorical": ("missing_rate", "unseen_categories", "constant"),
}


def _result(
    test: str, bad: int, n_ref: int, n_cur: int, p_value: float, alpha: float
) -> WindowTestResult:
    p_value = min(max(p_value, 0.0), 1.0)
    return WindowTestResult(test, bad / n_cur, p_value, alpha, p_value < alpha, n_ref, n_cur)


def missing_rate(
    reference_missing: int,
    reference_total: int,
    current_missing: int,
    current_total: int,
    alpha: float,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """Is the current window's share of missing values higher than the reference's?"""
    if current_total < min_samples or reference_total < min_samples:
        return _insufficient("missing_rate", alpha, reference_total, current_total)
    if current_missing == 0:
        return _result("missing_rate", 0, reference_total, current_total, 1.0, alpha)
    from scipy.stats import hypergeom  # late: scipy.stats takes ~0.5 s to import

    p_value = float(
        hypergeom.sf(
            current_missing - 1,
            reference_total + current_total,
            reference_missing + current_missing,
            current_total,
        )
    )
    return _result(
        "missing_rate", current_missing, reference_total, current_total, p_value, alpha
    )


def _log_tail_below(n: int, m: int, k: int) -> float:
    """ln C(m, k) / C(n + m, k): all ``k`` smallest of the pooled values are current ones."""
    if k <= 0:
        return 0.0
    if k > m:
        return -math.inf
    lg = math.lgamma
    return (lg(m + 1) - lg(m - k + 1)) - (lg(n + m + 1) - lg(n + m - k + 1))


def out_of_range(
    reference_total: int,
    current_below: int,
    current_above: int,
    current_total: int,
    alpha: float,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """Values below the reference minimum or above its maximum (present values only)."""
    if current_total < min_samples or reference_total < min_samples:
        return _insufficient("out_of_range", alpha, reference_total, current_total)
    bad = current_below + current_above
    if bad == 0:
        return _result("out_of_range", 0, reference_total, current_total, 1.0, alpha)
    low = math.exp(_log_tail_below(reference_total, current_total, current_below))
    high = math.exp(_log_tail_below(reference_total, current_total, current_above))
    return _result(
        "out_of_range", bad, reference_total, current_total, 2.0 * min(low, high), alpha
    )


def unseen_categories(
    reference_total: int,
    reference_singletons: int,
    current_unseen: int,
    current_total: int,
    alpha: float,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """Values of categories the reference never had (present values only)."""
    if current_total < min_samples or reference_total < min_samples:
        return _insufficient("unseen_categories", alpha, reference_total, current_total)
    if current_unseen == 0:
        return _result("unseen_categories", 0, reference_total, current_total, 1.0, alpha)
    from scipy.stats import binom

    chance = (reference_singletons + 1) / (reference_total + 1)
    p_value = float(binom.sf(current_unseen - 1, current_total, chance))
    return _result(
        "unseen_categories", current_unseen, reference_total, current_total, p_value, alpha
    )


def constant(
    reference_total: int,
    top_share: float,
    current_distinct: int,
    current_total: int,
    alpha: float,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> WindowTestResult:
    """A window whose present values are all equal, where the reference had variety."""
    if current_total < min_samples or reference_total < min_samples:
        return _insufficient("constant", alpha, reference_total, current_total)
    if current_distinct != 1:
        return _result("constant", 0, reference_total, current_total, 1.0, alpha)
    p_value = top_share ** (current_total - 1) if top_share < 1.0 else 1.0
    return _result("constant", current_total, reference_total, current_total, p_value, alpha)


def wrong_type(
    reference_total: int, current_wrong: int, current_total: int
) -> WindowTestResult:
    """Values of the other kind (strings for a numeric reference column, or numbers for a
    categorical one). Not a statistical question: any such value is reported."""
    total = max(current_total, 1)
    return WindowTestResult(
        "wrong_type",
        current_wrong / total,
        None,
        0.0,
        current_wrong > 0,
        reference_total,
        current_total,
    )
