"""Compile driftline's Numba kernels into their on-disk cache, once, at setup.

Every kernel is ``cache=True``, so only the first process to call one compiles it (~45 s for
all of them on our 2-core machine). Without this step that first process is whatever starts
first on a fresh clone: the demo's worker, or several test workers at once, each compiling the
same kernels in parallel. ``--part`` splits the work so setup can run two parts side by side.
"""

from __future__ import annotations

import argparse

import numpy as np


def warm_processor() -> None:
    """The worker's path: decoders, join, ADWIN, CBPE (what ``warm_up`` runs)."""
    from driftline.schemas import Codec
    from driftline.streams.processor import ProcessorConfig, warm_up

    warm_up(Codec(), ProcessorConfig())


def warm_detectors() -> None:
    """Every registered detector, and the window tests against a reference."""
    from driftline.detectors import REGISTRY
    from driftline.detectors.monitor import FeatureBatch, MonitorConfig, ProfileMonitor

    rng = np.random.default_rng(0)
    bits = (rng.random(64) < 0.2).astype(float)  # 0/1: DDM and EDDM take error indicators
    for cls in REGISTRY.values():
        detector = cls()
        detector.update_many(bits)
        detector.update(1.0)
        cls.from_state(detector.to_state())
    config = MonitorConfig(window_size=200, auto_reference_events=400, min_samples=50)
    monitor = ProfileMonitor("__warm_up__", config=config)
    for shift in (0.0, 0.0, 0.0, 1.0):
        monitor.update(
            FeatureBatch.from_columns(
                numeric={"x": rng.normal(shift, 1.0, 200), "y": rng.lognormal(size=200)},
                categorical={"c": rng.choice(["a", "b", "c"], 200)},
                event_time=np.arange(200),
                score=rng.random(200),
                label=rng.choice(["yes", "no"], 200),
            )
        )


PARTS = {"processor": warm_processor, "detectors": warm_detectors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(PARTS), action="append")
    for part in parser.parse_args().part or sorted(PARTS):
        PARTS[part]()


if __name__ == "__main__":
    main()
