"""Window drift tests against scipy and plain numpy references."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from driftline.detectors import window_tests as wt
from driftline.detectors.histogram import CategoricalWindow, NumericWindow
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial import distance

RNG_SEED = 20261123


def rng(offset: int = 0) -> np.random.Generator:
    return np.random.default_rng(RNG_SEED + offset)


# -- KS ------------------------------------------------------------------------------------

KS_SIZES = [
    (31, 31),  # exact, equal sizes
    (40, 73),  # exact, unequal
    (250, 100),  # exact, gcd > 1
    (999, 1000),  # exact, coprime
    (5000, 5000),
    (10_000, 2_500),  # largest exact
    (12_000, 300),  # asymptotic, small effective n
    (20_000, 20_000),  # asymptotic, large effective n
    (60_000, 35),  # asymptotic, n_eff <= 140
]


@pytest.mark.parametrize(("n1", "n2"), KS_SIZES)
@pytest.mark.parametrize("shift", [0.0, 0.03, 0.15, 0.6])
def test_ks_matches_scipy(n1: int, n2: int, shift: float) -> None:
    g = rng(n1 + n2)
    ref, cur = g.normal(0.0, 1.0, n1), g.normal(shift, 1.0, n2)
    ours = wt.ks_2samp(ref, cur, min_samples=1)
    theirs = stats.ks_2samp(ref, cur)
    assert ours.statistic == theirs.statistic
    assert ours.p_value == theirs.pvalue
    assert ours.drift == (theirs.pvalue < 0.05)
    assert (ours.test, ours.threshold, ours.n_reference, ours.n_current) == ("ks", 0.05, n1, n2)


@pytest.mark.parametrize(("n1", "n2"), [(60, 45), (3000, 3000), (15_000, 400)])
def test_ks_with_ties_matches_scipy(n1: int, n2: int) -> None:
    g = rng(7)
    ref = g.integers(0, 6, n1).astype(float)
    cur = g.integers(1, 7, n2).astype(float)
    ours, theirs = wt.ks_2samp(ref, cur, min_samples=1), stats.ks_2samp(ref, cur)
    assert ours.statistic == theirs.statistic
    assert ours.p_value == theirs.pvalue


def test_ks_edge_samples() -> None:
    same = np.arange(50.0)
    result = wt.ks_2samp(same, same)
    assert result.statistic == 0.0 and result.p_value == 1.0 and not result.drift
    apart = wt.ks_2samp(np.arange(50.0), np.arange(50.0) + 100)
    assert apart.statistic == 1.0
    assert apart.p_value == pytest.approx(
        stats.ks_2samp(np.arange(50.0), np.arange(50.0) + 100).pvalue
    )


# -- χ², z ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dof", [1, 2, 3, 7, 40])
@pytest.mark.parametrize("shift", [0.0, 0.05, 0.3, 0.9])
def test_chisquare_p_value_is_scipys_chi2(dof: int, shift: float) -> None:
    g = rng(dof)
    shares = np.full(dof + 1, 1.0 / (dof + 1))
    tilted = shares * np.linspace(1.0 - shift, 1.0 + shift, dof + 1)
    ref = g.multinomial(5000, shares).astype(float)
    cur = g.multinomial(3000, tilted / tilted.sum()).astype(float)
    result = wt.chisquare_counts(ref, cur)
    assert result.p_value == stats.chi2.sf(result.statistic, dof)


@pytest.mark.parametrize("n_current", [40, 300, 5000])
def test_chisquare_matches_scipy_as_evidently_uses_it(n_current: int) -> None:
    g = rng(n_current)
    labels = np.array(["a", "b", "c", "d"])
    ref = g.choice(labels, 700, p=[0.4, 0.3, 0.2, 0.1])
    cur = g.choice(labels, n_current, p=[0.35, 0.3, 0.2, 0.15])
    result = wt.chisquare(ref, cur)
    ref_n = np.array([(ref == k).sum() for k in labels], dtype=float)
    cur_n = np.array([(cur == k).sum() for k in labels], dtype=float)
    expected = stats.chisquare(cur_n, ref_n * n_current / ref_n.sum())
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    assert result.drift == (expected.pvalue < 0.05)


def test_chisquare_new_category_is_drift_and_single_category_is_not() -> None:
    result = wt.chisquare(["a"] * 50 + ["b"] * 50, ["a"] * 50 + ["b"] * 45 + ["c"] * 5)
    assert result.statistic == math.inf and result.p_value == 0.0 and result.drift
    alone = wt.chisquare(["a"] * 50, ["a"] * 60)
    assert alone.statistic == 0.0 and alone.p_value == 1.0 and not alone.drift


@pytest.mark.parametrize(
    ("k1", "n1", "k2", "n2"), [(40, 100, 60, 100), (30, 500, 33, 400), (0, 50, 1, 60)]
)
def test_z_test_matches_pooled_normal_test(k1: int, n1: int, k2: int, n2: int) -> None:
    result = wt.z_test_counts(k1, n1, k2, n2)
    p1, p2, pooled = k1 / n1, k2 / n2, (k1 + k2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert result.statistic == pytest.approx(z, rel=1e-12)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-10)
    labels = wt.z_test(["y"] * k1 + ["n"] * (n1 - k1), ["y"] * k2 + ["n"] * (n2 - k2))
    assert labels.p_value == pytest.approx(result.p_value, rel=1e-12)


def test_z_test_constant_column_is_not_drift() -> None:
    result = wt.z_test(["x"] * 40, ["x"] * 50)
    assert result.p_value == 1.0 and not result.drift
    with pytest.raises(ValueError, match="binary"):
        wt.z_test(["a", "b", "c"] * 20, ["a"] * 40)


# -- distances ------------------------------------------------------------------------------


def numpy_psi(ref: np.ndarray, cur: np.ndarray, bins: int) -> float:
    """Textbook PSI on decile bins, written independently of the module."""
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    # np.histogram bins are [a, b) except the last; with +inf as the last edge that's [a, inf].
    r = np.histogram(ref, edges)[0] / ref.size
    c = np.histogram(cur, edges)[0] / cur.size
    r, c = np.where(r == 0, 1e-4, r), np.where(c == 0, 1e-4, c)
    return float(np.sum((c - r) * np.log(c / r)))


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5, 3.0])
def test_psi_matches_numpy_reference(shift: float) -> None:
    g = rng(11)
    ref, cur = g.normal(0, 1, 2000), g.normal(shift, 1, 1500)
    result = wt.psi(ref, cur)
    assert result.statistic == pytest.approx(numpy_psi(ref, cur, 10), rel=1e-12)
    assert result.drift == (result.statistic >= 0.1) and result.p_value is None


@pytest.mark.parametrize("shift", [0.0, 0.2, 1.0])
def test_jensen_shannon_matches_scipy(shift: float) -> None:
    g = rng(12)
    ref, cur = g.gamma(2.0, 1.0, 3000), g.gamma(2.0, 1.0, 2000) + shift
    edges = wt.quantile_edges(ref, 10)
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
    result = wt.jensen_shannon(ref, cur)
    assert result.statistic == pytest.approx(distance.jensenshannon(r, c), rel=1e-10, abs=1e-12)


def test_jensen_shannon_categorical_and_bounds() -> None:
    result = wt.jensen_shannon_categorical(["a"] * 50, ["b"] * 50)
    assert result.statistic == pytest.approx(math.sqrt(math.log(2)))
    assert result.drift


@pytest.mark.parametrize("shift", [0.0, 0.05, 0.4])
def test_wasserstein_normed_matches_scipy(shift: float) -> None:
    g = rng(13)
    ref, cur = g.lognormal(0, 0.7, 1200), g.lognormal(shift, 0.7, 900)
    result = wt.wasserstein(ref, cur)
    expected = stats.wasserstein_distance(ref, cur) / np.std(ref)
    assert result.statistic == pytest.approx(expected, rel=1e-10)
    assert result.drift == (expected >= 0.1)


def test_wasserstein_constant_reference_uses_std_floor() -> None:
    result = wt.wasserstein(np.full(50, 2.0), np.full(50, 2.5))
    assert result.statistic == pytest.approx(0.5 / 1e-3)


# -- guards, errors, choice ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["ks", "psi", "jensenshannon", "wasserstein"])
def test_too_few_values_give_insufficient_data(name: str) -> None:
    result = wt.run_test(name, np.arange(100.0), np.arange(29.0))
    assert result.insufficient_data and not result.drift
    assert result.statistic is None and result.p_value is None
    assert (result.n_reference, result.n_current) == (100, 29)
    assert not wt.run_test(name, np.arange(100.0), np.arange(30.0)).insufficient_data
    small = wt.run_test(name, np.arange(100.0), np.arange(5.0), min_samples=5)
    assert not small.insufficient_data


def test_categorical_guards() -> None:
    assert wt.chisquare(["a", "b"] * 50, ["a"] * 10).insufficient_data
    assert wt.z_test_counts(5, 100, 1, 10).insufficient_data


@pytest.mark.parametrize(
    "call",
    [
        lambda: wt.ks_2samp([], [1.0, 2.0]),
        lambda: wt.ks_2samp([1.0, 2.0], []),
        lambda: wt.psi([1.0, math.nan], [1.0]),
        lambda: wt.wasserstein([1.0], [math.inf]),
        lambda: wt.ks_2samp([1.0], [1.0], threshold=0.0),
        lambda: wt.ks_2samp([1.0], [1.0], min_samples=0),
        lambda: wt.chisquare(["a", None], ["a"]),
        lambda: wt.chisquare(["a"], ["a", math.nan]),
        lambda: wt.psi_counts([1, 2], [1, 2, 3]),
        lambda: wt.psi_counts([1, -2], [1, 2]),
        lambda: wt.quantile_edges([1.0, 2.0], bins=1),
        lambda: wt.choose_test("text", 10),
        lambda: wt.run_test("anderson", [1.0], [1.0]),
    ],
)
def test_bad_input_raises_value_error(call) -> None:  # noqa: ANN001
    with pytest.raises(ValueError):
        call()


def test_errors_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="index 1 is nan"):
        wt.ks_2samp([1.0, math.nan], [1.0])
    with pytest.raises(ValueError, match="empty"):
        wt.psi([], [1.0])


@pytest.mark.parametrize(
    ("kind", "n", "n_unique", "test", "threshold"),
    [
        ("numeric", 1000, None, "ks", 0.05),
        ("numeric", 1001, None, "wasserstein", 0.1),
        ("numeric", 500, 4, "chisquare", 0.05),
        ("numeric", 500, 2, "z", 0.05),
        ("numeric", 5000, 4, "jensenshannon", 0.1),
        ("categorical", 200, 8, "chisquare", 0.05),
        ("categorical", 200, 2, "z", 0.05),
        ("categorical", 200, None, "chisquare", 0.05),
        ("categorical", 2000, 2, "jensenshannon", 0.1),
        ("categorical", 2000, 50, "jensenshannon", 0.1),
    ],
)
def test_choose_test_follows_evidently_rule(
    kind: str, n: int, n_unique: int | None, test: str, threshold: float
) -> None:
    assert wt.choose_test(kind, n, n_unique) == wt.TestChoice(test, threshold)


# -- windows ------------------------------------------------------------------------------


def feed(window: NumericWindow, xs: np.ndarray, seed: int) -> None:
    """Uneven batches, as Kafka delivers them."""
    cuts = np.sort(rng(seed).choice(np.arange(1, xs.size), size=9, replace=False))
    for batch in np.split(xs, cuts):
        window.update(batch)


def test_numeric_window_counts_equal_one_shot_binning() -> None:
    g = rng(21)
    ref, cur = g.normal(0, 1, 4000), g.normal(0.2, 1.3, 7000)
    window = NumericWindow(ref)
    feed(window, cur, 1)
    assert window.n_current == 7000
    edges = wt.quantile_edges(ref, 10)
    expected = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
    np.testing.assert_array_equal(window.counts, expected)
    assert window.psi().statistic == pytest.approx(wt.psi(ref, cur).statistic, rel=1e-12)
    assert window.jensen_shannon().statistic == pytest.approx(
        wt.jensen_shannon(ref, cur).statistic, rel=1e-12
    )
    assert window.counts.nbytes + window.fine_counts.nbytes < 2000  # counts, not values


def test_numeric_window_ks_is_exact_below_capacity() -> None:
    g = rng(22)
    ref, cur = g.normal(0, 1, 800), g.normal(0.1, 1, 3000)
    window = NumericWindow(ref, ks_capacity=5000)
    feed(window, cur, 2)
    ours, theirs = window.ks(), stats.ks_2samp(ref, cur)
    assert ours.statistic == theirs.statistic
    assert ours.p_value == theirs.pvalue
    assert window.test().test == "ks"  # reference <= 1000 values


def test_numeric_window_reservoir_is_bounded_uniform_and_deterministic() -> None:
    stream = np.arange(200_000, dtype=float)
    one, two = NumericWindow(rng(1).normal(0, 1, 500), ks_capacity=2000, seed=5), None
    feed(one, stream, 3)
    sample = one.current_sample()
    assert sample.size == 2000 and one.n_current == 200_000
    assert np.unique(sample).size == 2000 and np.isin(sample, stream).all()
    # Uniform over the whole stream, not biased to the start or the end.
    assert stats.kstest(sample / 200_000, "uniform").pvalue > 0.01
    two = NumericWindow(rng(1).normal(0, 1, 500), ks_capacity=2000, seed=5)
    feed(two, stream, 3)
    np.testing.assert_array_equal(two.current_sample(), sample)
    result = one.ks()
    assert result.n_current == 200_000 and result.drift


@pytest.mark.parametrize("shift", [0.0, 0.1, 0.5])
def test_numeric_window_wasserstein_is_close_to_exact(shift: float) -> None:
    g = rng(23)
    ref, cur = g.normal(0, 1, 20_000), g.normal(shift, 1.2, 20_000)
    window = NumericWindow(ref)
    feed(window, cur, 4)
    exact = wt.wasserstein(ref, cur).statistic
    assert window.wasserstein().statistic == pytest.approx(exact, abs=0.003)
    assert window.test().test == "wasserstein"


def test_numeric_window_discrete_column() -> None:
    g = rng(24)
    ref = g.choice([0.0, 1.0, 2.0], 600, p=[0.5, 0.3, 0.2])
    cur = g.choice([0.0, 1.0, 2.0], 400, p=[0.3, 0.3, 0.4])
    window = NumericWindow(ref).update(cur)
    result = window.test()
    assert result.test == "chisquare"
    assert result.p_value == pytest.approx(wt.chisquare(ref, cur).p_value, rel=1e-12)
    assert window.wasserstein().statistic == pytest.approx(wt.wasserstein(ref, cur).statistic)
    binary = NumericWindow(ref.clip(0, 1)).update(cur.clip(0, 1))
    assert binary.test().test == "z"


def test_numeric_window_pickles_and_continues_identically() -> None:
    g = rng(25)
    ref, cur = g.normal(0, 1, 3000), g.normal(0, 1, 30_000)
    window = NumericWindow(ref, ks_capacity=1000).update(cur[:10_000])
    copy = pickle.loads(pickle.dumps(window))
    window.update(cur[10_000:])
    copy.update(cur[10_000:])
    np.testing.assert_array_equal(copy.current_sample(), window.current_sample())
    assert copy.ks() == window.ks() and copy.wasserstein() == window.wasserstein()


def test_numeric_window_guard_reset_and_errors() -> None:
    window = NumericWindow(np.arange(100.0))
    assert window.test().insufficient_data  # empty current window: no verdict, no error
    window.update(np.arange(10.0))
    assert window.ks().insufficient_data and window.wasserstein().insufficient_data
    window.update(np.arange(40.0))
    assert not window.ks().insufficient_data
    window.reset()
    assert window.n_current == 0 and window.counts.sum() == 0
    with pytest.raises(ValueError, match="index 2"):
        window.update([1.0, 2.0, math.nan])
    with pytest.raises(ValueError):
        NumericWindow([])
    with pytest.raises(ValueError):
        window.test("anderson")


def test_categorical_window_matches_raw_tests() -> None:
    g = rng(26)
    labels = np.array(["red", "green", "blue"])
    ref = g.choice(labels, 900, p=[0.5, 0.3, 0.2])
    cur = g.choice(labels, 700, p=[0.45, 0.3, 0.25])
    window = CategoricalWindow(ref)
    for batch in np.array_split(cur, 7):
        window.update(batch)
    assert window.n_current == 700
    assert window.test() == wt.chisquare(ref, cur)
    assert window.jensen_shannon().statistic == pytest.approx(
        wt.jensen_shannon_categorical(ref, cur).statistic
    )
    window.update(["purple"] * 3)
    assert window.chisquare().drift and window.chisquare().statistic == math.inf
    big = CategoricalWindow(g.choice(labels, 5000)).update(g.choice(labels, 100))
    assert big.test().test == "jensenshannon"


def test_categorical_window_binary_and_errors() -> None:
    window = CategoricalWindow(["yes"] * 30 + ["no"] * 70).update(["yes"] * 60 + ["no"] * 40)
    result = window.test()
    assert result.test == "z" and result.drift
    expected = wt.z_test(["yes"] * 30 + ["no"] * 70, ["yes"] * 60 + ["no"] * 40)
    assert result.p_value == pytest.approx(expected.p_value)
    with pytest.raises(ValueError, match="missing"):
        window.update(["yes", None])
    with pytest.raises(ValueError):
        window.test("ks")


def test_labels_refuse_missing_in_every_container() -> None:
    for bad in (
        ["a", math.nan],
        ["a", None],
        np.array(["a", None], dtype=object),
        np.array([1.0, math.nan]),
    ):
        with pytest.raises(ValueError, match="missing"):
            wt.chisquare(["a"] * 40, bad)
        with pytest.raises(ValueError, match="missing"):
            CategoricalWindow(["a"] * 40).update(bad)
    # Numpy string arrays take the fast path and count like lists do.
    labels = np.array(["x", "y", "y"] * 20)
    assert wt.chisquare(labels, labels[::-1]) == wt.chisquare(labels.tolist(), labels.tolist())


SMALL_FLOATS = st.lists(
    st.floats(-50, 50, allow_nan=False).map(lambda v: round(v, 1)),  # rounding makes ties
    min_size=1,
    max_size=120,
)


# scipy warns when its exact p-value gives up and it falls back to the asymptotic one; ours
# falls back at the same point, which is what this test checks.
@pytest.mark.filterwarnings("ignore:ks_2samp. Exact calculation unsuccessful:RuntimeWarning")
@settings(max_examples=80, deadline=None)
@given(ref=SMALL_FLOATS, cur=SMALL_FLOATS)
def test_ks_matches_scipy_on_arbitrary_samples(ref: list[float], cur: list[float]) -> None:
    ours = wt.ks_2samp(ref, cur, min_samples=1)
    theirs = stats.ks_2samp(ref, cur)
    assert ours.statistic == theirs.statistic
    assert ours.p_value == theirs.pvalue


@settings(max_examples=40, deadline=None)
@given(
    ref=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200),
    cur=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=0, max_size=400),
    cuts=st.lists(st.integers(0, 400), max_size=5),
)
def test_numeric_window_any_batching_equals_one_shot(
    ref: list[float], cur: list[float], cuts: list[int]
) -> None:
    values = np.array(cur)
    whole = NumericWindow(ref, ks_capacity=50, min_samples=1).update(values)
    parts = NumericWindow(ref, ks_capacity=50, min_samples=1)
    for batch in np.split(values, sorted(c for c in cuts if c <= values.size)):
        parts.update(batch)
    np.testing.assert_array_equal(parts.counts, whole.counts)
    np.testing.assert_array_equal(parts.fine_counts, whole.fine_counts)
    np.testing.assert_array_equal(parts.current_sample(), whole.current_sample())
    assert parts.n_current == len(cur)
    if cur:
        assert parts.test("psi") == whole.test("psi")


def test_numeric_window_single_value_reference() -> None:
    window = NumericWindow(np.zeros(100)).update(np.full(50, 5.0))
    # std floor 1e-3: a shift of 5 is 5000 "stds"; the open outer bin's sum makes it exact.
    assert window.wasserstein().statistic == pytest.approx(5.0 / 1e-3)
    assert window.wasserstein().statistic == pytest.approx(
        wt.wasserstein(np.zeros(100), np.full(50, 5.0)).statistic
    )
    outside = NumericWindow([0.0, 1.0, 2.0] * 30).update([-1.0, 3.0] * 20)
    assert outside.wasserstein().statistic == pytest.approx(
        wt.wasserstein([0.0, 1.0, 2.0] * 30, [-1.0, 3.0] * 20).statistic
    )
