"""CBPE against the realised performance of synthetic streams whose truth we control.

Tolerance: each window's estimate carries ``accuracy_std_error``, the standard deviation of the
realised accuracy around it when P(y | score) is unchanged (the window's own Bernoulli noise plus
the noise of the calibration map fitted on a finite labelled past). A window passes within 4 of
those: with the 20-40 windows a test checks, a 4-sigma band keeps the chance that an unbiased
estimator fails the test anywhere below 0.3% (two-sided normal tail 6.3e-5 per window), while a
wrong estimator (the raw mean confidence of a miscalibrated model, or any estimate after a
concept change) lies tens of standard errors away — each test checks that too, so it can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from driftline.detectors.cbpe import CBPE, confidence

WINDOW_MS = 2_000  # one prediction per ms: 2,000 predictions a window
CALIBRATION = 20_000
Z = 4.0


def binary(rng: np.random.Generator, n: int, truth, scores=None):
    """A binary model's traffic: positive-class score p, predicted "1" when p >= 0.5, and the
    true label 1 with probability ``truth(p)``. Returns (predicted, p, correct)."""
    p = rng.uniform(0.0, 1.0, n) if scores is None else scores(n)
    predicted = np.where(p >= 0.5, "1", "0").astype(object)
    y = rng.random(n) < truth(p)
    correct = (predicted == "1") == y
    return predicted, p, correct


def fitted(rng: np.random.Generator, truth, **params) -> CBPE:
    cbpe = CBPE(window_ms=WINDOW_MS, calibration_size=CALIBRATION, **params)
    predicted, p, correct = binary(rng, CALIBRATION, truth)
    assert cbpe.observe_labels(predicted, p, correct) == []
    assert cbpe.frozen and cbpe.positive_label == "1"
    return cbpe


def realised(correct: np.ndarray, k: int) -> float:
    return float(correct[k * WINDOW_MS : (k + 1) * WINDOW_MS].mean())


def z_scores(estimates, correct: np.ndarray) -> np.ndarray:
    return np.array(
        [
            (realised(correct, k) - e.accuracy) / e.accuracy_std_error
            for k, e in enumerate(estimates)
        ]
    )


def test_calibrated_scores_track_accuracy_precision_and_recall() -> None:
    rng = np.random.default_rng(1)
    cbpe = fitted(rng, lambda p: p)
    n = 40 * WINDOW_MS
    predicted, p, correct = binary(rng, n, lambda p: p)
    estimates = cbpe.update(np.arange(n), predicted, p)
    assert len(estimates) == 39  # the 40th window is still open
    assert np.abs(z_scores(estimates, correct)).max() < Z
    assert all(
        e.n_predictions == WINDOW_MS and e.calibration_size == CALIBRATION for e in estimates
    )
    # precision and recall of the positive class, pooled over the windows (binomial SE of the
    # realised ratio, doubled for the calibration's share of the noise)
    m = 39 * WINDOW_MS
    pred1, y1 = predicted[:m] == "1", (predicted[:m] == "1") == correct[:m]
    tp = sum(e.expected_tp for e in estimates)
    for est, real, base in (
        (tp / sum(e.expected_tp + e.expected_fp for e in estimates), (pred1 & y1).sum() / pred1.sum(), pred1.sum()),
        (tp / sum(e.expected_tp + e.expected_fn for e in estimates), (pred1 & y1).sum() / y1.sum(), y1.sum()),
    ):  # fmt: skip
        assert abs(est - real) < Z * 2 * np.sqrt(real * (1 - real) / base)
    e = estimates[0]
    assert e.f1 == pytest.approx(2 * e.precision * e.recall / (e.precision + e.recall))


def test_miscalibrated_scores_are_recalibrated_and_follow_a_covariate_shift() -> None:
    """The model's confidence overstates it (truth p**3 for p >= 0.5, mirrored below). Halfway,
    the scores move towards 0.5 (covariate shift, P(y | p) unchanged): accuracy falls, and
    the estimate follows it."""

    def truth(p):
        return np.where(p >= 0.5, p**3, 1 - (1 - p) ** 3)

    rng = np.random.default_rng(2)
    cbpe = fitted(rng, truth)
    n = 20 * WINDOW_MS
    before = binary(rng, n, truth)
    after = binary(rng, n, truth, scores=lambda k: rng.beta(5, 5, k))
    predicted, p, correct = (np.concatenate(pair) for pair in zip(before, after, strict=True))
    estimates = cbpe.update(np.arange(2 * n), predicted, p)
    z = z_scores(estimates, correct)
    assert np.abs(z).max() < Z
    accuracy = np.array([e.accuracy for e in estimates])
    assert accuracy[:20].mean() - accuracy[20:].mean() > 0.1  # the shift lowered it
    # the uncalibrated estimate (mean confidence in the predicted class) is far off: the
    # test separates a working calibration from none
    naive = np.maximum(p, 1 - p)[: len(estimates) * WINDOW_MS].reshape(len(estimates), -1).mean(1)
    errors = np.abs(naive - [realised(correct, k) for k in range(len(estimates))])
    assert (errors > Z * np.array([e.accuracy_std_error for e in estimates])).all()


def test_concept_drift_makes_the_estimate_diverge() -> None:
    """After the change P(y | p) is no longer p (a third of the labels flip); the scores do
    not move, so neither does the estimate, and the realised accuracy leaves it behind."""
    rng = np.random.default_rng(3)
    cbpe = fitted(rng, lambda p: p)
    n = 10 * WINDOW_MS
    before = binary(rng, n, lambda p: p)
    after = binary(rng, n, lambda p: np.where(rng.random(len(p)) < 1 / 3, 1 - p, p))
    predicted, p, correct = (np.concatenate(pair) for pair in zip(before, after, strict=True))
    estimates = cbpe.update(np.arange(2 * n), predicted, p)
    z = z_scores(estimates, correct)
    assert np.abs(z[:10]).max() < Z
    assert (z[10:] < -10).all(), z[10:]  # realised far below the estimate
    gap = np.array([e.accuracy for e in estimates[10:]]) - [
        realised(correct, k) for k in range(10, 19)
    ]
    assert gap.mean() > 0.1


def test_multiclass_through_the_largest_probability() -> None:
    rng = np.random.default_rng(4)
    classes = np.array(["a", "b", "c"], dtype=object)

    def traffic(n):
        probs = rng.dirichlet([0.6, 0.6, 0.6], n)
        y = (probs.cumsum(1) > rng.random((n, 1))).argmax(1)  # drawn from the probabilities
        predicted = classes[probs.argmax(1)]
        return predicted, confidence(probs), predicted == classes[y]

    cbpe = CBPE(window_ms=WINDOW_MS, calibration_size=CALIBRATION)
    cbpe.observe_labels(*traffic(CALIBRATION))
    assert cbpe.positive_label is None  # three classes: accuracy only
    n = 20 * WINDOW_MS
    predicted, s, correct = traffic(n)
    estimates = cbpe.update(np.arange(n), predicted, s)
    assert np.abs(z_scores(estimates, correct)).max() < Z
    assert np.isnan(estimates[0].precision) and np.isnan(estimates[0].expected_tp)


def test_windows_closed_before_the_calibration_wait_and_get_the_same_estimate() -> None:
    rng = np.random.default_rng(5)
    labelled = binary(rng, CALIBRATION, lambda p: p)
    n = 6 * WINDOW_MS
    predicted, p, _ = binary(rng, n, lambda p: p)
    times = np.arange(n)
    first = CBPE(window_ms=WINDOW_MS, calibration_size=CALIBRATION)
    first.observe_labels(*labelled)
    expected = first.update(times, predicted, p)
    later = CBPE(window_ms=WINDOW_MS, calibration_size=CALIBRATION)
    assert later.update(times, predicted, p) == []  # nothing to estimate with yet
    assert later.observe_labels(*(a[:-1] for a in labelled)) == []
    got = later.observe_labels(*(a[-1:] for a in labelled))  # the pair that completes it
    assert got == expected and len(got) == 5


@pytest.mark.parametrize("restore", [False, True])
def test_any_split_of_the_input_and_a_state_round_trip_change_nothing(restore: bool) -> None:
    rng = np.random.default_rng(6)
    labelled = binary(rng, 3_000, lambda p: p)
    n = 8 * WINDOW_MS
    predicted, p, _ = binary(rng, n, lambda p: p)
    times = np.arange(n) + rng.integers(-300, 300, n)  # out of order: some arrive late
    versions = np.array(["1"] * (n // 2) + ["2"] * (n - n // 2), dtype=object)
    whole = CBPE(window_ms=WINDOW_MS, calibration_size=2_000, min_bin_count=50)
    expected = whole.update(times, predicted, p, versions) + whole.observe_labels(*labelled)
    split = CBPE(window_ms=WINDOW_MS, calibration_size=2_000, min_bin_count=50)
    got = []
    cuts = [0, 1, 700, 5_000, 9_999, 12_345, n]
    for a, b in zip(cuts, cuts[1:], strict=False):
        if restore:
            split = CBPE.from_state(split.to_state())
        got += split.update(times[a:b], predicted[a:b], p[a:b], versions[a:b])
        if a == 5_000:  # the labels arrive while windows are still open
            got += split.observe_labels(*(x[:1_000] for x in labelled))
            got += split.observe_labels(*(x[1_000:] for x in labelled))
    assert got == expected
    assert sum(e.n_late for e in got) > 0
    versions_seen = [e.model_version for e in got]  # each window's last prediction's
    assert versions_seen == sorted(versions_seen) and set(versions_seen) == {"1", "2"}
    assert CBPE.from_state(split.to_state()) == split == whole


def test_state_round_trips_through_bytes_before_and_after_the_freeze() -> None:
    rng = np.random.default_rng(7)
    cbpe = CBPE(window_ms=WINDOW_MS, calibration_size=1_000, max_classes=2)
    assert CBPE.from_state(cbpe.to_state()) == cbpe
    predicted, p, correct = binary(rng, 4_000, lambda p: p)
    cbpe.update(np.arange(4_000), predicted, p)
    restored = CBPE.from_state(cbpe.to_state())
    assert restored == cbpe and len(restored._pending) == 1
    cbpe.observe_labels(predicted, p, correct)
    restored = CBPE.from_state(cbpe.to_state())
    assert restored == cbpe and restored.frozen
    np.testing.assert_array_equal(restored.calibration, cbpe.calibration)
    # a third class after the freeze shares the last row (max_classes=2)
    third = np.array(["x"] * 2_000, dtype=object)
    out = cbpe.update(4_000 + np.arange(2_000), third, p[:2_000])
    assert sorted(cbpe.labels) == ["0", "1"] and len(out) == 1


def test_bad_input_is_refused_with_a_reason() -> None:
    cbpe = CBPE()
    with pytest.raises(ValueError, match="finite"):
        cbpe.update([1, 2], ["a", "b"], [0.5, np.nan])
    with pytest.raises(ValueError, match="same length"):
        cbpe.observe_labels(["a"], [0.5, 0.6], [1, 0])
    with pytest.raises(ValueError, match="window_ms"):
        CBPE(window_ms=0)
    with pytest.raises(ValueError, match="magic"):
        CBPE.from_state(b"nope")


def _naive_map(n: np.ndarray, c: np.ndarray, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Histogram binning written plainly: pools of adjacent bins with >= min_count pairs, a
    short tail joining the last pool; (rate, pairs) per fine bin."""
    pools, current = [], []
    for b in range(len(n)):
        current.append(b)
        if n[current].sum() >= min_count:
            pools.append(current)
            current = []
    if current:
        pools[-1] = pools[-1] + current
    rate, size = np.empty(len(n)), np.empty(len(n))
    for pool in pools:
        rate[pool] = c[pool].sum() / n[pool].sum()
        size[pool] = n[pool].sum()
    return rate, size


def test_the_kernels_equal_a_plain_numpy_version() -> None:
    rng = np.random.default_rng(9)
    n_bins, min_count = 20, 60
    predicted, p, correct = binary(rng, 3_000, lambda p: p**2)
    cbpe = CBPE(window_ms=WINDOW_MS, n_bins=n_bins, calibration_size=3_000, min_bin_count=min_count)
    cbpe.observe_labels(predicted, p, correct)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    maps = {}
    for label in ("0", "1"):
        mine = predicted == label
        n = np.bincount(bins[mine], minlength=n_bins).astype(float)
        c = np.bincount(bins[mine], weights=correct[mine], minlength=n_bins)
        maps[label] = _naive_map(n, c, min_count)
        row = cbpe.labels.index(label)
        np.testing.assert_allclose(cbpe.calibration[row], maps[label][0], rtol=1e-12)
    window_predicted, q, _ = binary(rng, WINDOW_MS + 1, lambda p: p)
    (estimate,) = cbpe.update(np.arange(WINDOW_MS + 1), window_predicted, q)
    wb = np.minimum((q[:-1] * n_bins).astype(int), n_bins - 1)
    rate = np.array([maps[g][0][b] for g, b in zip(window_predicted[:-1], wb, strict=True)])
    size = np.array([maps[g][1][b] for g, b in zip(window_predicted[:-1], wb, strict=True)])
    positive = window_predicted[:-1] == "1"
    assert estimate.accuracy == pytest.approx(rate.mean(), rel=1e-12)
    assert estimate.expected_tp == pytest.approx(rate[positive].sum(), rel=1e-12)
    assert estimate.expected_fn == pytest.approx((1 - rate[~positive]).sum(), rel=1e-12)
    # variance: the window's Bernoulli noise plus each pool's, weighted by its predictions
    pools = {}
    for g, r, s in zip(window_predicted[:-1], rate, size, strict=True):
        key = (g, r, s)
        pools[key] = pools.get(key, 0) + 1
    variance = (rate * (1 - rate)).sum() + sum(
        h * h * r * (1 - r) / s for (_, r, s), h in pools.items()
    )
    assert estimate.accuracy_std_error == pytest.approx(np.sqrt(variance) / WINDOW_MS, rel=1e-9)
