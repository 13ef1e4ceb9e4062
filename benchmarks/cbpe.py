"""Performance estimated before labels arrive: driftline's CBPE against NannyML's, on the same data.

    .venv/bin/python benchmarks/cbpe.py [--reference 20000] [--chunks 20] [--chunk 5000]
        [--seed 7] [--peer-python /tmp/nannyml-venv/bin/python]

NannyML is never a dependency of driftline: it runs in a scratch virtualenv of its own
(``python -m venv /tmp/nannyml-venv && /tmp/nannyml-venv/bin/pip install nannyml``), in a
subprocess of this script (``--peer-python``, default that venv when it exists, else this
Python). The subprocess also runs a plain numpy implementation of NannyML's recipe (isotonic
calibration of P(y = 1 | p) by pool-adjacent-violators, then expected cells per chunk), so the
comparison has a peer even where NannyML cannot be installed.

A binary model with positive-class score ``p`` (predicted 1 when p >= 0.5) on four streams:
a labelled reference of ``--reference`` predictions, then ``--chunks`` chunks of ``--chunk``
unlabelled predictions, whose realised accuracy and F1 the estimates are judged against:

* ``calibrated`` — P(y = 1 | p) = p;
* ``overconfident`` — the truth is flatter than the score (logit halved);
* ``covariate shift`` — overconfident, and from the middle chunk on the scores crowd around
  0.5 (Beta(2, 2)): accuracy falls, P(y | p) does not change;
* ``concept drift`` — calibrated, and from the middle chunk on a third of the labels flip
  (P(y | p) changes): every CBPE must miss it; the error says by how much.

Per stream: mean absolute error of each method's estimate against the realised value over the
chunks, and the time of calibration + estimation (driftline after one warm-up run, so Numba's
compilation is not counted; NannyML and numpy in their own process, after their imports).
Ratios are driftline / peer: below 1 means driftline's error or time is smaller. Prints
markdown tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCENARIOS = ("calibrated", "overconfident", "covariate shift", "concept drift")
DEFAULT_PEER = Path("/tmp/nannyml-venv/bin/python")


def _flatter(p: np.ndarray) -> np.ndarray:
    logit = np.log(np.clip(p, 1e-9, 1 - 1e-9) / np.clip(1 - p, 1e-9, 1))
    return 1 / (1 + np.exp(-0.5 * logit))


def scenario(name: str, n_ref: int, n_chunks: int, chunk: int, seed: int) -> dict[str, np.ndarray]:
    """Reference and analysis arrays: p (score), y_pred, y_true."""
    g = np.random.default_rng([seed, SCENARIOS.index(name)])
    n = n_chunks * chunk
    half = (n_chunks // 2) * chunk
    p_ref = g.uniform(0, 1, n_ref)
    p = g.uniform(0, 1, n)
    if name == "covariate shift":
        p[half:] = g.beta(2, 2, n - half)
    truth_ref, truth = (p_ref, p) if name in ("calibrated", "concept drift") else (
        _flatter(p_ref), _flatter(p))  # fmt: skip
    y_ref = (g.random(n_ref) < truth_ref).astype(np.int64)
    y = (g.random(n) < truth).astype(np.int64)
    if name == "concept drift":
        flip = g.random(n - half) < 1 / 3
        y[half:] = np.where(flip, 1 - y[half:], y[half:])
    return {
        "p_ref": p_ref, "pred_ref": (p_ref >= 0.5).astype(np.int64), "y_ref": y_ref,
        "p": p, "pred": (p >= 0.5).astype(np.int64), "y": y,
    }  # fmt: skip


def realised(data: dict[str, np.ndarray], chunk: int) -> dict[str, np.ndarray]:
    pred, y = data["pred"].reshape(-1, chunk), data["y"].reshape(-1, chunk)
    tp = ((pred == 1) & (y == 1)).sum(1)
    fp = ((pred == 1) & (y == 0)).sum(1)
    fn = ((pred == 0) & (y == 1)).sum(1)
    return {"accuracy": (pred == y).mean(1), "f1": 2 * tp / (2 * tp + fp + fn)}


# -- driftline ------------------------------------------------------------------------------------


def driftline(data: dict[str, np.ndarray], chunk: int) -> tuple[dict[str, np.ndarray], float]:
    from driftline.detectors.cbpe import CBPE

    labels = np.array(["0", "1"], dtype=object)
    n = len(data["p"])
    times = np.arange(n + 1)  # one more prediction, of the next window, closes the last one
    predicted = labels[np.append(data["pred"], 0)]
    scores = np.append(data["p"], 0.5)
    pred_ref = labels[data["pred_ref"]]
    correct_ref = data["pred_ref"] == data["y_ref"]
    started = time.perf_counter()
    cbpe = CBPE(window_ms=chunk, calibration_size=len(data["p_ref"]))
    cbpe.observe_labels(pred_ref, data["p_ref"], correct_ref)
    estimates = cbpe.update(times, predicted, scores)
    elapsed = time.perf_counter() - started
    return {
        "accuracy": np.array([e.accuracy for e in estimates]),
        "f1": np.array([e.f1 for e in estimates]),
    }, elapsed


# -- the peer process (NannyML's venv; imports nothing of driftline) ----------------------------


def _pav(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic (non-decreasing) fit of y on x by pool-adjacent-violators: the fitted value at
    each sorted x."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order].astype(np.float64)
    means, weights, sizes = [], [], []
    for v in ys:
        means.append(v)
        weights.append(1.0)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            w = weights[-2] + weights[-1]
            m = (means[-2] * weights[-2] + means[-1] * weights[-1]) / w
            means[-2:], weights[-2:], sizes[-2:] = [m], [w], [sizes[-2] + sizes[-1]]
    return xs, np.repeat(means, sizes)


def numpy_cbpe(d: dict[str, np.ndarray], chunk: int) -> dict[str, np.ndarray]:
    """NannyML's recipe in numpy: calibrate P(y = 1 | p) isotonically on the reference, then
    per chunk the expected confusion cells from the calibrated probabilities."""
    xs, fitted = _pav(d["p_ref"], d["y_ref"])
    q = np.interp(d["p"], xs, fitted).reshape(-1, chunk)
    pred = d["pred"].reshape(-1, chunk)
    tp = np.where(pred == 1, q, 0).sum(1)
    fp = np.where(pred == 1, 1 - q, 0).sum(1)
    fn = np.where(pred == 0, q, 0).sum(1)
    tn = np.where(pred == 0, 1 - q, 0).sum(1)
    return {"accuracy": (tp + tn) / chunk, "f1": 2 * tp / (2 * tp + fp + fn)}


def nannyml_cbpe(d: dict[str, np.ndarray], chunk: int) -> dict[str, np.ndarray]:
    import nannyml as nml
    import pandas as pd

    reference = pd.DataFrame({"p": d["p_ref"], "pred": d["pred_ref"], "y": d["y_ref"]})
    analysis = pd.DataFrame({"p": d["p"], "pred": d["pred"]})
    estimator = nml.CBPE(
        y_pred_proba="p", y_pred="pred", y_true="y", metrics=["accuracy", "f1"],
        chunk_size=chunk, problem_type="classification_binary",
    )  # fmt: skip
    estimator.fit(reference)
    frame = estimator.estimate(analysis).filter(period="analysis").to_df()
    return {m: frame[(m, "value")].to_numpy(dtype=np.float64) for m in ("accuracy", "f1")}


def peer(data_path: str, out_path: str, chunk: int) -> int:
    """Runs in the peer's Python: every scenario through numpy (and NannyML if importable)."""
    archive = np.load(data_path)
    methods = {"numpy": numpy_cbpe}
    try:
        import nannyml

        methods["NannyML"] = nannyml_cbpe
        version = nannyml.__version__
    except ImportError as exc:  # say why: a broken install must not pass for a missing one
        version, missing = None, f"{type(exc).__name__}: {exc}"
    else:
        missing = ""
    out: dict[str, object] = {"nannyml_version": version, "missing": missing, "results": {}}
    for name in SCENARIOS:
        key = name.replace(" ", "_")
        d = {k.split("/", 1)[1]: archive[k] for k in archive.files if k.startswith(key + "/")}
        for method, run in methods.items():
            run(d, chunk)  # warm-up (imports, caches), as driftline's is
            started = time.perf_counter()
            estimates = run(d, chunk)
            elapsed = time.perf_counter() - started
            out["results"][f"{name}/{method}"] = {  # type: ignore[index]
                "seconds": elapsed, **{m: v.tolist() for m, v in estimates.items()},
            }  # fmt: skip
    Path(out_path).write_text(json.dumps(out))
    return 0


# -- the run ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reference", type=int, default=20_000)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--peer-python", default=None)
    parser.add_argument("--peer", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:
        return peer(*args.peer, args.chunk)

    python = args.peer_python or (str(DEFAULT_PEER) if DEFAULT_PEER.exists() else sys.executable)
    data = {n: scenario(n, args.reference, args.chunks, args.chunk, args.seed) for n in SCENARIOS}
    driftline(data["calibrated"], args.chunk)  # warm-up: Numba's kernels loaded
    ours = {n: driftline(d, args.chunk) for n, d in data.items()}
    with tempfile.TemporaryDirectory() as tmp:
        data_path, out_path = Path(tmp) / "data.npz", Path(tmp) / "out.json"
        np.savez(data_path, **{f"{n.replace(' ', '_')}/{k}": v for n, d in data.items()
                               for k, v in d.items()})  # fmt: skip
        done = subprocess.run(
            [python, __file__, "--peer", str(data_path), str(out_path), "--chunk", str(args.chunk)],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        theirs = json.loads(out_path.read_text())
    peers = ["NannyML", "numpy"] if theirs["nannyml_version"] else ["numpy"]
    print(
        f"CBPE: reference {args.reference:,} labelled predictions, {args.chunks} chunks of "
        f"{args.chunk:,}; NannyML {theirs['nannyml_version'] or 'not installed'}{theirs['missing'] and ' (' + theirs['missing'] + ')'} "
        f"(peer Python {python})\n"
    )
    for metric in ("accuracy", "f1"):
        header = f"| stream | realised {metric} (first / last chunk) | driftline MAE |"
        header += "".join(f" {p} MAE | ratio |" for p in peers)
        print(header)
        print("|" + "---|" * (3 + 2 * len(peers)))
        for name, d in data.items():
            truth = realised(d, args.chunk)[metric]
            mae = float(np.abs(ours[name][0][metric] - truth).mean())
            line = f"| {name} | {truth[0]:.3f} / {truth[-1]:.3f} | {mae:.4f} |"
            for p in peers:
                other = float(
                    np.abs(np.array(theirs["results"][f"{name}/{p}"][metric]) - truth).mean()
                )
                line += f" {other:.4f} | {mae / other:.2f} |"
            print(line)
        print()
    print("| stream | driftline ms |" + "".join(f" {p} ms | ratio |" for p in peers))
    print("|" + "---|" * (2 + 2 * len(peers)))
    for name in data:
        ms = ours[name][1] * 1000
        line = f"| {name} | {ms:.1f} |"
        for p in peers:
            other = theirs["results"][f"{name}/{p}"]["seconds"] * 1000
            line += f" {other:.1f} | {ms / other:.3f} |"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
