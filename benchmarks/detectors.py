"""Detector throughput against river, first-call (JIT) latency, bank throughput, window tests.

    .venv/bin/python benchmarks/detectors.py [--n 1000000] [--river-n 200000]

Every detector runs ``update_many`` on the same stream (an injected change at the middle;
a 0/1 error stream for the binary detectors) and is compared with its river peer updated one
value at a time, river's normal use. River is slow, so it runs on a slice of the stream
centred on the change (``--river-n`` values, fewer for a peer too slow to do them in
``--river-seconds``); rates are per update, so the ratio is fair. On that slice the two must
also report the same drift indices (a fresh detector each, starting at the slice).

First-call latency runs in subprocesses: one with a fresh, empty ``NUMBA_CACHE_DIR`` (cold:
Numba compiles) and one reusing it (warm: Numba loads the cached machine code), as a worker
would after a restart.

Detectors that do not exist yet are skipped with a note. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# name -> (module in driftline.detectors, river peer "module:Class" or None, target ratio)
DETECTORS: dict[str, tuple[str, str | None, float | None]] = {
    "ADWIN": ("adwin", "river.drift:ADWIN", 30.0),
    "KSWIN": ("kswin", "river.drift:KSWIN", 1000.0),
    "PageHinkley": ("page_hinkley", "river.drift:PageHinkley", 30.0),
    "DDM": ("ddm", "river.drift.binary:DDM", 30.0),
    "EDDM": ("eddm", "river.drift.binary:EDDM", 30.0),
    "HDDM_A": ("hddm_a", "river.drift.binary:HDDMA", 100.0),
    "HDDM_W": ("hddm_w", "river.drift.binary:HDDMW", 100.0),
    "CUSUM": ("cusum", None, None),
    "EWMAChart": ("ewma", None, None),
}
BINARY = {"DDM", "EDDM", "HDDM_A", "HDDM_W"}
# Constructor arguments given to both sides: river's KSWIN seeds from the OS by default, so
# only a shared seed makes the two draw the same reference samples.
KWARGS: dict[str, dict[str, Any]] = {"KSWIN": {"seed": 42}}
BANK_TARGET = 20e6  # updates/s
BANK_REQUIRED = ("PageHinkley", "ADWIN")


def load_detector(name: str) -> type | None:
    module_name, _, _ = DETECTORS[name]
    try:
        module = importlib.import_module(f"driftline.detectors.{module_name}")
    except ImportError:
        return None
    return getattr(module, name, None)


def load_peer(spec: str | None) -> type | None:
    if spec is None:
        return None
    module_name, _, cls_name = spec.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def make_streams(n: int, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Numeric: N(0, 1) then N(1, 1). Binary: errors at rate 0.1 then 0.3. Change at n/2."""
    rng = np.random.default_rng(seed)
    half = n // 2
    numeric = np.concatenate([rng.normal(0.0, 1.0, half), rng.normal(1.0, 1.0, n - half)])
    binary = np.concatenate([rng.random(half) < 0.1, rng.random(n - half) < 0.3]).astype(float)
    return numeric, binary


def best_of(repeats: int, run: Callable[[], Any]) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def fmt_rate(rate: float | None) -> str:
    if rate is None:
        return "—"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.2f} {unit}/s"
    return f"{rate:.0f} /s"


def fmt_ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.1f}x"


@dataclass
class Row:
    name: str
    ours: float | None = None
    river: float | None = None
    river_n: int = 0
    target: float | None = None
    same: str = "—"
    note: str = ""


def time_river(
    peer: type, kwargs: dict[str, Any], xs: np.ndarray, budget: float
) -> tuple[float, list[int], int]:
    """Per-item updates until the slice is done or the time budget runs out."""
    detector = peer(**kwargs)
    values = xs.tolist()
    drifts: list[int] = []
    start = time.perf_counter()
    done = 0
    for i, x in enumerate(values):
        detector.update(x)
        if detector.drift_detected:
            drifts.append(i)
        done = i + 1
        if done % 2000 == 0 and time.perf_counter() - start > budget:
            break
    return done / (time.perf_counter() - start), drifts, done


def bench_detectors(args: argparse.Namespace) -> list[Row]:
    numeric, binary = make_streams(args.n)
    rows = []
    for name, (_, peer_spec, target) in DETECTORS.items():
        cls = load_detector(name)
        row = Row(name, target=target)
        if cls is None:
            row.note = "not in driftline.detectors yet: skipped"
            rows.append(row)
            continue
        xs = binary if name in BINARY else numeric
        kwargs = KWARGS.get(name, {})
        cls(**kwargs).update_many(xs[:5000])  # compile (or load from cache) outside the timing
        seconds, _ = best_of(
            args.repeats, lambda cls=cls, xs=xs, kw=kwargs: cls(**kw).update_many(xs)
        )
        row.ours = xs.shape[0] / seconds
        peer = load_peer(peer_spec)
        if peer is None:
            row.note = "no river peer"
        else:
            # A slice centred on the change, so river's detection path is timed too and the
            # drift comparison is not vacuous.
            # Slow peers get a shorter slice (sized from a short calibration run), still
            # centred, so the budget cannot cut it off before the change.
            rate, _, _ = time_river(peer, kwargs, xs[:2000], args.river_seconds)
            length = int(min(args.river_n, max(2000, 0.8 * rate * args.river_seconds)))
            start = max(0, xs.shape[0] // 2 - length // 2)
            piece = xs[start : start + length]
            row.river, river_drifts, row.river_n = time_river(
                peer, kwargs, piece, args.river_seconds
            )
            ours_drifts = cls(**kwargs).update_many(piece[: row.river_n]).drift.tolist()
            count = len(river_drifts)
            row.same = (
                f"yes ({count} drifts)"
                if ours_drifts == river_drifts
                else f"NO ({len(ours_drifts)} vs river's {count})"
            )
        print(f"  {name}: done", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def print_detector_table(rows: list[Row], n: int) -> None:
    print(f"\n### Throughput: `update_many` over {n:,} values vs river's per-item `update`\n")
    print(
        "| detector | driftline | river (values timed) | ratio | target | met | same drifts as river (slice) | note |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r.ours / r.river if r.ours and r.river else None
        met = "—" if ratio is None or r.target is None else ("yes" if ratio >= r.target else "NO")
        river = f"{fmt_rate(r.river)} ({r.river_n:,})" if r.river else "—"
        target = f">= {r.target:,.0f}x" if r.target else "—"
        print(
            f"| {r.name} | {fmt_rate(r.ours)} | {river} | {fmt_ratio(ratio)} | {target} | {met} "
            f"| {r.same} | {r.note} |"
        )


# -- first-call latency -------------------------------------------------------------------

_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import driftline.detectors  # noqa: F401
from driftline.detectors.bank import DetectorBank
from driftline.detectors.base import REGISTRY
import_s = time.perf_counter() - t0
names = json.loads(sys.argv[1])
xs = np.concatenate([np.zeros(50), np.ones(50)])
ids = np.arange(100) % 3
out = {"import": import_s}
for name in names:
    cls = REGISTRY[name]
    t = time.perf_counter(); cls().update_many(xs); first = time.perf_counter() - t
    t = time.perf_counter(); DetectorBank(cls(), 3).update_many(ids, xs)
    bank = time.perf_counter() - t
    out[name] = [first, bank]
from driftline.detectors.histogram import NumericWindow
t = time.perf_counter()
NumericWindow(np.arange(200.0)).update(np.arange(100.0)).ks()
out["NumericWindow"] = [time.perf_counter() - t, None]
print(json.dumps(out))
"""


def bench_jit(names: list[str]) -> dict[str, dict[str, Any]]:
    results = {}
    with tempfile.TemporaryDirectory(prefix="driftline-numba-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("cold", "warm"):
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", _PROBE, json.dumps(names)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            results[label] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[label]["process"] = time.perf_counter() - start
    return results


def print_jit_table(results: dict[str, dict[str, Any]], names: list[str]) -> None:
    cold, warm = results["cold"], results["warm"]
    print(
        "\n### First-call latency (subprocess; cold = empty `NUMBA_CACHE_DIR`, warm = same dir again)\n"
    )
    print("| what | cold cache | warm cache |")
    print("|---|---|---|")
    print(f"| `import driftline.detectors` | {cold['import']:.2f} s | {warm['import']:.2f} s |")
    for name in [*names, "NumericWindow"]:
        c, w = cold[name], warm[name]
        label = (
            "first `update(batch)` + `ks()`" if name == "NumericWindow" else "first `update_many`"
        )
        print(f"| {name}: {label} | {c[0]:.2f} s | {w[0]:.3f} s |")
        if c[1] is not None:
            print(f"| {name}: first bank `update_many` | {c[1]:.2f} s | {w[1]:.3f} s |")
    print(f"| whole subprocess | {cold['process']:.1f} s | {warm['process']:.1f} s |")


# -- bank ---------------------------------------------------------------------------------


def bench_banks(args: argparse.Namespace) -> list[tuple[str, float | None, int, str]]:
    from driftline.detectors.bank import DetectorBank

    rng = np.random.default_rng(7)
    total, streams, batch = args.bank_updates, args.bank_streams, args.bank_batch
    ids = rng.integers(0, streams, total).astype(np.int64)
    # Each stream changes at the middle of its own life.
    numeric = rng.normal(0.0, 1.0, total) + (np.arange(total) >= total // 2)
    binary = (rng.random(total) < np.where(np.arange(total) >= total // 2, 0.3, 0.1)).astype(float)
    out = []
    for name in DETECTORS:
        cls = load_detector(name)
        if cls is None:
            out.append((name, None, 0, "not in driftline.detectors yet: skipped"))
            continue
        xs = binary if name in BINARY else numeric
        prototype = cls(**KWARGS.get(name, {}))
        DetectorBank(prototype, streams).update_many(ids[:1000], xs[:1000])  # compile first
        bank = DetectorBank(prototype, streams)
        # Optional detectors get a time cap so a slow one cannot blow the run's budget.
        cap = None if name in BANK_REQUIRED else args.bank_seconds
        start = time.perf_counter()
        done = 0
        for lo in range(0, total, batch):
            bank.update_many(ids[lo : lo + batch], xs[lo : lo + batch])
            done = min(lo + batch, total)
            if cap is not None and time.perf_counter() - start > cap:
                break
        rate = done / (time.perf_counter() - start)
        note = "" if done == total else f"stopped after {args.bank_seconds:.0f} s"
        out.append((name, rate, done, note))
        print(f"  bank {name}: done", file=sys.stderr, flush=True)
    return out


def print_bank_table(
    rows: list[tuple[str, float | None, int, str]], args: argparse.Namespace
) -> None:
    print(
        f"\n### Bank: {args.bank_streams:,} streams, {args.bank_updates:,} (stream_id, value) "
        f"updates in batches of {args.bank_batch:,}\n"
    )
    print(f"| detector | updates timed | updates/s | target {fmt_rate(BANK_TARGET)} | note |")
    print("|---|---|---|---|---|")
    for name, rate, done, note in rows:
        if rate is None:
            print(f"| {name} | — | — | — | {note} |")
            continue
        met = ("yes" if rate >= BANK_TARGET else "NO") if name in BANK_REQUIRED else "—"
        print(f"| {name} | {done:,} | {fmt_rate(rate)} | {met} | {note} |")


# -- window tests ------------------------------------------------------------------------


def bench_windows(args: argparse.Namespace) -> list[tuple[str, float, float | None, str]]:
    from driftline.detectors import window_tests as wt
    from driftline.detectors.histogram import NumericWindow
    from scipy import stats

    rng = np.random.default_rng(3)
    rows = []
    for n in (1_000, 10_000, 100_000):
        a, b = rng.normal(0, 1, n), rng.normal(0.02, 1, n)
        wt.ks_2samp(a[:100], b[:100])
        ours, _ = best_of(3, lambda a=a, b=b: wt.ks_2samp(a, b))
        theirs, _ = best_of(3, lambda a=a, b=b: stats.ks_2samp(a, b))
        path = "exact" if n <= wt.KS_EXACT_MAX_N else "asymptotic"
        rows.append((f"KS, {n:,} vs {n:,} ({path} p)", ours, theirs, "scipy.stats.ks_2samp"))
    a, b = rng.normal(0, 1, 100_000), rng.normal(0.05, 1, 100_000)
    ours, _ = best_of(3, lambda: wt.wasserstein(a, b))
    theirs, _ = best_of(3, lambda: stats.wasserstein_distance(a, b) / np.std(a))
    rows.append(
        ("normed Wasserstein, 100k vs 100k", ours, theirs, "scipy wasserstein_distance / std")
    )

    def numpy_psi() -> float:
        inner = np.unique(np.quantile(a, np.linspace(0, 1, 11)[1:-1]))
        edges = np.concatenate([[-np.inf], inner, [np.inf]])
        r = np.maximum(np.histogram(a, edges)[0] / a.size, 1e-4)
        c = np.maximum(np.histogram(b, edges)[0] / b.size, 1e-4)
        return float(np.sum((c - r) * np.log(c / r)))

    ours, _ = best_of(3, lambda: wt.psi(a, b))
    theirs, _ = best_of(3, numpy_psi)
    rows.append(("PSI, 100k vs 100k", ours, theirs, "plain numpy (np.histogram)"))

    window = NumericWindow(a)
    stream = rng.normal(0.1, 1, args.n)
    window.update(stream[:1000])
    window.reset()
    start = time.perf_counter()
    for lo in range(0, stream.shape[0], 10_000):
        window.update(stream[lo : lo + 10_000])
    feed = time.perf_counter() - start
    rows.append(
        (
            f"NumericWindow.update, {args.n:,} values in 10k batches",
            feed,
            None,
            f"{fmt_rate(args.n / feed)}; counts + 10k reservoir",
        )
    )
    for test in ("ks", "wasserstein", "psi"):
        seconds, _ = best_of(3, lambda test=test: window.test(test))
        rows.append((f"NumericWindow.test('{test}') on it", seconds, None, ""))
    return rows


def print_window_table(rows: list[tuple[str, float, float | None, str]]) -> None:
    print("\n### Window tests (seconds per call, best of 3)\n")
    print("| operation | driftline | peer | speed-up | peer / note |")
    print("|---|---|---|---|---|")
    for what, ours, theirs, note in rows:
        peer = "—" if theirs is None else f"{theirs * 1e3:.2f} ms"
        ratio = "—" if theirs is None else fmt_ratio(theirs / ours)
        print(f"| {what} | {ours * 1e3:.2f} ms | {peer} | {ratio} | {note} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="stream length")
    parser.add_argument("--river-n", type=int, default=200_000, help="river's slice length")
    parser.add_argument("--river-seconds", type=float, default=6.0, help="river time cap each")
    parser.add_argument("--repeats", type=int, default=2, help="best of, for driftline")
    parser.add_argument("--bank-streams", type=int, default=1000)
    parser.add_argument("--bank-updates", type=int, default=10_000_000)
    parser.add_argument("--bank-batch", type=int, default=100_000)
    parser.add_argument("--bank-seconds", type=float, default=4.0, help="cap, optional banks")
    parser.add_argument("--skip", nargs="*", default=[], choices=["river", "jit", "bank", "window"])
    args = parser.parse_args(argv)

    import driftline.detectors  # noqa: F401
    import numba

    present = [name for name in DETECTORS if load_detector(name) is not None]
    missing = [name for name in DETECTORS if name not in present]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"## driftline detector benchmark ({os.cpu_count()} CPUs, load average {load} at start, "
        f"numba {numba.__version__})"
    )
    if missing:
        print(f"\nSkipped (module not present yet): {', '.join(missing)}")
    if "river" not in args.skip:
        print_detector_table(bench_detectors(args), args.n)
    if "jit" not in args.skip:
        print_jit_table(bench_jit(present), present)
    if "bank" not in args.skip:
        print_bank_table(bench_banks(args), args)
    if "window" not in args.skip:
        print_window_table(bench_windows(args))


if __name__ == "__main__":
    main()
