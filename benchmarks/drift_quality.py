"""How often data-drift detection cries wolf, and how fast it sees real changes.

    .venv/bin/python benchmarks/drift_quality.py [--values 1000000] [--runs 20] [--seed 7]

Three methods on the same data, in the same run:

* **driftline** — ``ProfileMonitor`` at its defaults: windows of 5,000 events tested against a
  10,000-value reference profile, every test at the alpha of the default false-alarm budget
  (one per 30 days of traffic, traffic taken as 1,000,000 events a day, so the budget is 1/30
  false alarm per million values for a whole model, half of it for the window tests and half
  for the sequential detectors of part 4). An alarm is a window with any signal (drift, data
  quality).
* **river ADWIN** at its defaults (delta = 0.002), one value at a time, on the values (on the
  category's index for a categorical stream; on the 0/1 missing indicator for the missing-rate
  change, which is how one would watch a missing rate with it).
* **Evidently-style** — the same 5,000-value windows against the same reference with
  Evidently's tests at p < 0.05: KS for numbers, χ² of current counts against the reference
  shares for categories and 0/1 values, and a two-proportion z-test of the missing share.

Part 1: stationary streams (normal, lognormal, Poisson counts, Bernoulli, categorical;
``--values`` each) → false alarms per million values. Part 2: ``--runs`` streams per change
(mean, variance, shape with the same mean and variance, category mix, missing rate) with the
change at value 21,000 (mid-window) and 20,000 values after it → share of runs detected,
median and 90th-percentile delay in values after the change, and false alarms before it.
Part 3: the worker's sequential detector on raw feature values (driftline's ADWIN, one
stream per numeric feature, missing values skipped) at δ = 0.002 (its per-feature default
until the window tests took over) and smaller δ, on the same stationary numeric streams and
on the mean shift: whether any δ keeps a feature within the budget, and what it costs.
Part 4: the worker's sequential detectors as they run now, ADWIN on each model's score and
error streams at the δ its budget share gives (``sequential_delta``), beside river's ADWIN at
its defaults: false alarms per million on stationary error streams (Bernoulli 0/1 losses at
three rates; a regression's relative error, and its raw absolute error as the worker fed it
before) and scores (uniform, beta), the budget-δ run also over ``--long`` times as many
values; then the delay to an error-rate change (10% -> 15%, 10% -> 20%; and after only 2,000
values of history), a regression's error growing 1.5x, and score shifts, at both δ: what the
budget costs.
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from driftline.detectors.budget import ADWIN_CLOCK, SEQUENTIAL_SHARE, SEQUENTIAL_STREAMS
from driftline.detectors.monitor import FeatureBatch, MonitorConfig, ProfileMonitor
from driftline.detectors.reference import build_profile
from driftline.detectors.window_tests import chisquare_counts, ks_2samp, z_test_counts

CATEGORIES = np.array([f"c{i}" for i in range(10)])
SHARES = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.03, 0.02, 0.01])
# Category mix change: 6 points of share move from the two largest to three small categories.
SHARES_AFTER = SHARES + np.array([-0.03, -0.03, 0.0, 0.0, 0.0, 0.0, 0.02, 0.02, 0.02, 0.0])
EVIDENTLY_P = 0.05
REFERENCE_SIZE = 10_000
CHANGE_AT = 21_000
AFTER = 20_000


@dataclass(frozen=True)
class Stream:
    """A generator of values before and after a change; ``kind`` as the monitor sees it."""

    name: str
    kind: str  # numeric, categorical, missing
    before: Callable[[np.random.Generator, int], np.ndarray]
    after: Callable[[np.random.Generator, int], np.ndarray] | None = None


def _categorical(shares: np.ndarray) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda g, n: g.choice(CATEGORIES, n, p=shares / shares.sum()).astype(object)


def _with_missing(rate: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    def make(g: np.random.Generator, n: int) -> np.ndarray:
        values = g.normal(0.0, 1.0, n)
        values[g.random(n) < rate] = np.nan
        return values

    return make


STATIONARY = [
    Stream("normal N(0,1)", "numeric", lambda g, n: g.normal(0.0, 1.0, n)),
    Stream("lognormal(0,1)", "numeric", lambda g, n: g.lognormal(0.0, 1.0, n)),
    Stream("Poisson(3) counts", "numeric", lambda g, n: g.poisson(3.0, n).astype(float)),
    Stream("Bernoulli(0.1)", "numeric", lambda g, n: (g.random(n) < 0.1).astype(float)),
    Stream("categorical, 10 categories", "categorical", _categorical(SHARES)),
]

CHANGES = [
    Stream("mean +0.25 sd", "numeric", lambda g, n: g.normal(0, 1, n), lambda g, n: g.normal(0.25, 1, n)),
    Stream("variance x1.5", "numeric", lambda g, n: g.normal(0, 1, n), lambda g, n: g.normal(0, 1.5**0.5, n)),
    Stream(
        "shape (same mean, variance)",
        "numeric",
        lambda g, n: g.normal(0, 1, n),
        lambda g, n: g.exponential(1.0, n) - 1.0,
    ),
    Stream("category mix (6 points)", "categorical", _categorical(SHARES), _categorical(SHARES_AFTER)),
    Stream("missing rate 1% -> 5%", "missing", _with_missing(0.01), _with_missing(0.05)),
]


# -- the three methods; each returns the positions (value index) where it alarmed ------------


def driftline_alarms(stream: Stream, reference: np.ndarray, values: np.ndarray, window: int) -> list[int]:
    column = "x"
    if stream.kind == "categorical":
        profile = build_profile({column: reference}, model_id="bench")
        batch = FeatureBatch.from_columns(categorical={column: values}, event_time=np.zeros(len(values)))
    else:
        profile = build_profile({column: reference}, model_id="bench")
        batch = FeatureBatch.from_columns(numeric={column: values}, event_time=np.zeros(len(values)))
    monitor = ProfileMonitor("bench", profile, MonitorConfig(window_size=window))
    return [r.last_seq for r in monitor.update(batch) if r.drift]


def river_alarms(stream: Stream, values: np.ndarray) -> list[int]:
    from river.drift import ADWIN

    if stream.kind == "categorical":
        index = {c: float(i) for i, c in enumerate(CATEGORIES)}
        xs = [index[v] for v in values.tolist()]
    elif stream.kind == "missing":
        xs = np.isnan(values).astype(float).tolist()
    else:
        xs = values.tolist()
    detector = ADWIN()
    alarms = []
    for i, x in enumerate(xs):
        detector.update(x)
        if detector.drift_detected:
            alarms.append(i)
    return alarms


def evidently_alarms(stream: Stream, reference: np.ndarray, values: np.ndarray, window: int) -> list[int]:
    alarms = []
    if stream.kind == "categorical":
        keys = sorted(set(reference.tolist()) | set(values.tolist()))
        ref_counts = np.array([np.sum(reference == k) for k in keys], dtype=float)
    elif stream.kind == "missing":
        ref_missing = int(np.isnan(reference).sum())
    else:
        binary = np.unique(reference).shape[0] <= 2
        if binary:
            ref_counts = np.array([np.sum(reference == 0.0), np.sum(reference != 0.0)], dtype=float)
    for start in range(0, len(values) - window + 1, window):
        cur = values[start : start + window]
        if stream.kind == "categorical":
            cur_counts = np.array([np.sum(cur == k) for k in keys], dtype=float)
            p = chisquare_counts(ref_counts, cur_counts).p_value
        elif stream.kind == "missing":
            p = z_test_counts(ref_missing, len(reference), int(np.isnan(cur).sum()), window).p_value
        elif binary:
            cur_counts = np.array([np.sum(cur == 0.0), np.sum(cur != 0.0)], dtype=float)
            p = chisquare_counts(ref_counts, cur_counts).p_value
        else:
            p = ks_2samp(reference, cur).p_value
        if p is not None and p < EVIDENTLY_P:
            alarms.append(start + window - 1)
    return alarms


METHODS = ("driftline", "river ADWIN", "Evidently-style")


def run_all(stream: Stream, reference: np.ndarray, values: np.ndarray, window: int) -> dict[str, list[int]]:
    evidently_reference = reference[~np.isnan(reference)] if stream.kind == "numeric" else reference
    return {
        "driftline": driftline_alarms(stream, reference, values, window),
        "river ADWIN": river_alarms(stream, values),
        "Evidently-style": evidently_alarms(stream, evidently_reference, values, window),
    }


# -- parts ----------------------------------------------------------------------------------


def per_million(count: int, n: int) -> float:
    return count * 1e6 / n


def fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:,.0f}" if x >= 100 else f"{x:.2g}"


def stationary_table(n: int, window: int, seed: int) -> list[str]:
    budget = MonitorConfig().budget
    budget_per_million = budget.per_day() * 1e6 / MonitorConfig().events_per_day
    lines = [
        f"False alarms per million values, stationary streams ({n:,} values each; driftline's "
        f"budget: {budget_per_million:.3f} per million for a whole model, "
        f"{budget_per_million * (1 - SEQUENTIAL_SHARE):.3f} of it for the window tests)",
        "",
        "| stream | driftline | river ADWIN | Evidently-style | river ÷ driftline budget | Evidently ÷ driftline budget |",
        "|---|---|---|---|---|---|",
    ]
    for i, stream in enumerate(STATIONARY):
        g = np.random.default_rng(seed + i)
        reference = stream.before(g, REFERENCE_SIZE)
        values = stream.before(g, n)
        alarms = run_all(stream, reference, values, window)
        rates = {m: per_million(len(alarms[m]), n) for m in METHODS}
        lines.append(
            f"| {stream.name} | {fmt(rates['driftline'])} | {fmt(rates['river ADWIN'])} | "
            f"{fmt(rates['Evidently-style'])} | {rates['river ADWIN'] / budget_per_million:,.0f}x | "
            f"{rates['Evidently-style'] / budget_per_million:,.0f}x |"
        )
    return lines


def changes_table(runs: int, window: int, seed: int) -> list[str]:
    lines = [
        f"Changes: {runs} runs each, change at value {CHANGE_AT:,} (mid-window), {AFTER:,} values "
        "after it. detected = share of runs with an alarm after the change; delay = values "
        "from the change to the first alarm after it (median / 90th percentile); "
        "false = alarms before the change, all runs together",
        "",
        "| change | driftline detected | delay | false | river ADWIN detected | delay | false "
        "| Evidently-style detected | delay | false |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, stream in enumerate(CHANGES):
        delays: dict[str, list[int]] = {m: [] for m in METHODS}
        early = dict.fromkeys(METHODS, 0)
        for run in range(runs):
            g = np.random.default_rng(seed * 1000 + i * 100 + run)
            reference = stream.before(g, REFERENCE_SIZE)
            assert stream.after is not None
            values = np.concatenate([stream.before(g, CHANGE_AT), stream.after(g, AFTER)])
            for method, alarms in run_all(stream, reference, values, window).items():
                early[method] += sum(a < CHANGE_AT for a in alarms)
                after = [a for a in alarms if a >= CHANGE_AT]
                if after:
                    delays[method].append(after[0] - CHANGE_AT + 1)
        cells = []
        for method in METHODS:
            d = delays[method]
            rate = f"{len(d) / runs:.0%}"
            delay = "—" if not d else f"{np.median(d):,.0f} / {np.percentile(d, 90):,.0f}"
            cells += [rate, delay, str(early[method])]
        lines.append(f"| {stream.name} | " + " | ".join(cells) + " |")
    return lines


# δ values for part 3: river's default (the worker's old per-feature default), and smaller.
ADWIN_DELTAS = (0.002, 1e-5, 1e-9)


def feature_adwin_alarms(values: np.ndarray, delta: float) -> list[int]:
    """Where driftline's ADWIN alarms on one feature stream as the worker fed it (present
    values in event order); positions index ``values``."""
    from driftline.detectors.adwin import ADWIN

    present = np.flatnonzero(~np.isnan(values))
    detections = ADWIN(delta=delta).update_many(values[present])
    return present[detections.drift].tolist()


def feature_adwin_table(n: int, runs: int, seed: int) -> list[str]:
    budget = MonitorConfig().budget
    budget_per_million = budget.per_day() * 1e6 / MonitorConfig().events_per_day
    header = " | ".join(f"δ = {d:g}" for d in ADWIN_DELTAS)
    lines = [
        "ADWIN on raw feature values (the worker's sequential detector per numeric feature): "
        f"false alarms per million values, stationary streams ({n:,} values each; the budget "
        f"for a whole model: {budget_per_million:.3f} per million), and the mean +0.25 sd "
        f"change ({runs} runs: detected, median delay)",
        "",
        f"| stream | {header} |",
        "|---|" + "---|" * len(ADWIN_DELTAS),
    ]
    for i, stream in enumerate(STATIONARY):
        if stream.kind != "numeric":
            continue
        values = stream.before(np.random.default_rng(seed + i), n)
        rates = [per_million(len(feature_adwin_alarms(values, d)), n) for d in ADWIN_DELTAS]
        lines.append(f"| {stream.name} | " + " | ".join(fmt(r) for r in rates) + " |")
    mean_shift = CHANGES[0]
    assert mean_shift.after is not None
    cells = []
    for delta in ADWIN_DELTAS:
        delays = []
        for run in range(runs):
            g = np.random.default_rng(seed * 1000 + run)
            values = np.concatenate([mean_shift.before(g, CHANGE_AT), mean_shift.after(g, AFTER)])
            after = [a for a in feature_adwin_alarms(values, delta) if a >= CHANGE_AT]
            if after:
                delays.append(after[0] - CHANGE_AT + 1)
        median = "—" if not delays else f"{np.median(delays):,.0f}"
        cells.append(f"{len(delays) / runs:.0%}, {median}")
    lines.append(f"| {mean_shift.name}: detected, delay | " + " | ".join(cells) + " |")
    return lines


# -- part 4: the sequential detectors on the score and error streams -------------------------

RIVER_DELTA = 0.002  # river's ADWIN default


def _bernoulli(p: float) -> Callable[[np.random.Generator, int], np.ndarray]:
    return lambda g, n: (g.random(n) < p).astype(float)


def _regression(sigma: float, relative: bool) -> Callable[[np.random.Generator, int], np.ndarray]:
    """A regression model's error: lognormal(0, 1) targets predicted as y * exp(N(0, sigma)).
    ``relative``: |y - ŷ| / (|y| + |ŷ|), what the worker's error stream feeds ADWIN now; else
    the absolute error it fed before (as heavy-tailed as the targets)."""

    def make(g: np.random.Generator, n: int) -> np.ndarray:
        y = g.lognormal(0.0, 1.0, n)
        predicted = y * np.exp(g.normal(0.0, sigma, n))
        error = np.abs(y - predicted)
        return error / (np.abs(y) + np.abs(predicted)) if relative else error

    return make


SEQUENTIAL_STATIONARY = [
    Stream("error, Bernoulli(0.05)", "numeric", _bernoulli(0.05)),
    Stream("error, Bernoulli(0.1)", "numeric", _bernoulli(0.1)),
    Stream("error, Bernoulli(0.3)", "numeric", _bernoulli(0.3)),
    Stream("error, regression, relative", "numeric", _regression(0.3, relative=True)),
    Stream("error, regression, absolute (before)", "numeric", _regression(0.3, relative=False)),
    Stream("score, uniform(0, 1)", "numeric", lambda g, n: g.random(n)),
    Stream("score, beta(2, 5)", "numeric", lambda g, n: g.beta(2.0, 5.0, n)),
]

SEQUENTIAL_CHANGES = [
    Stream("error rate 10% -> 15%", "numeric", _bernoulli(0.1), _bernoulli(0.15)),
    Stream("error rate 10% -> 20%", "numeric", _bernoulli(0.1), _bernoulli(0.2)),
    Stream("error rate 5% -> 10%, 2,000 values before", "numeric", _bernoulli(0.05), _bernoulli(0.1)),
    Stream("error rate 10% -> 20%, 2,000 values before", "numeric", _bernoulli(0.1), _bernoulli(0.2)),
    Stream(
        "regression error x1.5 (relative)",
        "numeric",
        _regression(0.3, relative=True),
        _regression(0.45, relative=True),
    ),
    Stream(
        "score beta(2, 5) -> beta(2.5, 5)",
        "numeric",
        lambda g, n: g.beta(2.0, 5.0, n),
        lambda g, n: g.beta(2.5, 5.0, n),
    ),
    Stream(
        "score uniform(0, 1) -> uniform(0.1, 1)",
        "numeric",
        lambda g, n: g.random(n),
        lambda g, n: 0.1 + 0.9 * g.random(n),
    ),
]
# Values after a change in part 4: the slowest change at the budget's δ needs a few thousand.
SEQUENTIAL_AFTER = 40_000
# Values before the change, where not CHANGE_AT: ADWIN compares the values before a change
# with those after it, so a short history (a young model, few labels) makes small δ costlier.
SHORT_HISTORY = 2_000


def _history(stream: Stream) -> int:
    return SHORT_HISTORY if stream.name.endswith(f"{SHORT_HISTORY:,} values before") else CHANGE_AT


def budget_delta() -> float:
    """The δ of the worker's default specs (its default budget and traffic estimate)."""
    from driftline.streams.processor import DEFAULT_SPECS

    (delta,) = {spec.params["delta"] for spec in DEFAULT_SPECS}
    return float(delta)


def adwin_alarms(values: np.ndarray, delta: float) -> np.ndarray:
    """Where driftline's ADWIN (bit-identical to river's at the same δ) alarms."""
    from driftline.detectors.adwin import ADWIN

    return ADWIN(delta=delta).update_many(values).drift


def sequential_stationary_table(n: int, long: int, seed: int) -> list[str]:
    delta = budget_delta()
    config = MonitorConfig()
    # what the budget gives one sequential stream; by construction ADWIN's bound at δ
    stream_budget = (
        SEQUENTIAL_SHARE * config.budget.per_day() / SEQUENTIAL_STREAMS * 1e6 / config.events_per_day
    )
    bound = delta * 1e6 / ADWIN_CLOCK
    assert abs(bound - stream_budget) <= 1e-9 * stream_budget, (bound, stream_budget)
    lines = [
        "Sequential detectors (ADWIN on a model's score and error streams): false alarms per "
        f"million values, stationary streams ({n:,} values each; the budget δ also over "
        f"{n * long:,}). The budget: {stream_budget:.4f} per million per stream (half of one "
        f"false alarm per 30 days over {SEQUENTIAL_STREAMS} streams of 1,000,000 values a day, "
        f"δ = {delta:.3g}); ADWIN's bound at river's δ = {RIVER_DELTA:g}: "
        f"{RIVER_DELTA * 1e6 / ADWIN_CLOCK:g} per million",
        "",
        f"| stream | river ADWIN (δ = {RIVER_DELTA:g}) | driftline (δ = {delta:.3g}) "
        f"| driftline (δ = {delta:.3g}), {n * long:,} values | river ÷ budget |",
        "|---|---|---|---|---|",
    ]
    total = {"river": 0, "long": 0}
    for i, stream in enumerate(SEQUENTIAL_STATIONARY):
        values = stream.before(np.random.default_rng(seed + 100 + i), n * long)
        first = values[:n]
        river = len(river_alarms(stream, first))
        ours = len(adwin_alarms(first, delta))
        whole = len(adwin_alarms(values, delta))
        if "(before)" not in stream.name:
            total["river"] += river
            total["long"] += whole
        lines.append(
            f"| {stream.name} | {fmt(per_million(river, n))} | {fmt(per_million(ours, n))} | "
            f"{fmt(per_million(whole, n * long))} ({whole}) | "
            f"{per_million(river, n) / stream_budget:,.0f}x |"
        )
    kept = len([s for s in SEQUENTIAL_STATIONARY if "(before)" not in s.name])
    lines += [
        "",
        f"The {kept} streams the worker feeds now, together: river ADWIN "
        f"{_alarms(total['river'])} in {kept * n:,} values; driftline at the budget δ "
        f"{_alarms(total['long'])} in {kept * n * long:,} (the budget allows "
        f"{stream_budget * kept * n * long / 1e6:.2f}).",
    ]
    return lines


def _alarms(count: int) -> str:
    return f"{count} alarm" + ("" if count == 1 else "s")


def sequential_changes_table(runs: int, seed: int) -> list[str]:
    delta = budget_delta()
    lines = [
        f"Sequential detectors, changes: {runs} runs each, change at value {CHANGE_AT:,} "
        f"(or as named), {SEQUENTIAL_AFTER:,} values after it; detected, delay (median / 90th "
        "percentile values from the change to the first alarm after it), false = alarms "
        "before it",
        "",
        f"| change | river ADWIN (δ = {RIVER_DELTA:g}) detected | delay | false "
        f"| driftline (δ = {delta:.3g}) detected | delay | false | delay ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, stream in enumerate(SEQUENTIAL_CHANGES):
        assert stream.after is not None
        delays: dict[str, list[int]] = {"river": [], "budget": []}
        early = {"river": 0, "budget": 0}
        change_at = _history(stream)
        for run in range(runs):
            g = np.random.default_rng(seed * 1000 + 500 + i * 100 + run)
            values = np.concatenate([stream.before(g, change_at), stream.after(g, SEQUENTIAL_AFTER)])
            found = {
                "river": np.asarray(river_alarms(stream, values), dtype=np.int64),
                "budget": adwin_alarms(values, delta),
            }
            for method, alarms in found.items():
                early[method] += int((alarms < change_at).sum())
                after = alarms[alarms >= change_at]
                if len(after):
                    delays[method].append(int(after[0]) - change_at + 1)
        cells = []
        for method in ("river", "budget"):
            d = delays[method]
            delay = "—" if not d else f"{np.median(d):,.0f} / {np.percentile(d, 90):,.0f}"
            cells += [f"{len(d) / runs:.0%}", delay, str(early[method])]
        ratio = "—"
        if delays["river"] and delays["budget"]:
            ratio = f"{np.median(delays['budget']) / np.median(delays['river']):.1f}x"
        lines.append(f"| {stream.name} | " + " | ".join(cells) + f" | {ratio} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", type=int, default=1_000_000, help="values per stationary stream")
    parser.add_argument("--runs", type=int, default=20, help="streams per change")
    parser.add_argument("--window", type=int, default=MonitorConfig().window_size)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--long", type=int, default=10, help="part 4: the budget δ also over this many times --values"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    for line in stationary_table(args.values, args.window, args.seed):
        print(line)
    print()
    for line in changes_table(args.runs, args.window, args.seed):
        print(line)
    print()
    for line in feature_adwin_table(args.values, args.runs, args.seed):
        print(line)
    print()
    for line in sequential_stationary_table(args.values, args.long, args.seed):
        print(line)
    print()
    for line in sequential_changes_table(args.runs, args.seed):
        print(line)
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
