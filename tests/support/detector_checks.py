"""What the detector sweeps share: the registered detectors and readers of their results."""

from __future__ import annotations

import driftline.detectors  # noqa: F401  (imports every detector module, filling REGISTRY)
import numpy as np
from driftline.detectors.base import REGISTRY, ChangeDetector

# Detectors whose input is a 0/1 error indicator. Until the contract grows a ``binary_input``
# class attribute, fall back to this explicit set (river keeps them in ``river.drift.binary``).
BINARY_NAMES = frozenset({"DDM", "EDDM", "HDDM_A", "HDDM_W"})

SIDES = ("drift_before_mean", "drift_after_mean", "drift_before_n", "drift_after_n")
LAST = (
    "last_drift_before_mean",
    "last_drift_after_mean",
    "last_drift_before_n",
    "last_drift_after_n",
)


def is_binary(cls: type[ChangeDetector]) -> bool:
    return bool(getattr(cls, "binary_input", cls.__name__ in BINARY_NAMES))


def detector_classes() -> list[type[ChangeDetector]]:
    """Every registered detector that can build state (abstract helpers may register too)."""
    found = []
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        try:
            cls()._initial_state()
        except NotImplementedError:
            continue
        found.append(cls)
    return found


def sides_of(found: tuple) -> np.ndarray:
    """The four arrays aligned with the drift indices, as rows of one array."""
    return np.vstack([getattr(found, name) for name in SIDES])


def last_of(detector: ChangeDetector) -> np.ndarray:
    return np.array([getattr(detector, name) for name in LAST])


def detections_of(detector: ChangeDetector, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-value flags of ``update_many`` (0 none, 1 warning, 2 drift), and the sides of each
    drift (4 rows)."""
    found = detector.update_many(xs)
    flags = np.zeros(xs.shape[0], dtype=np.int8)
    flags[found.warning] = 1
    flags[found.drift] = 2
    return flags, sides_of(found)


def flags_of(detector: ChangeDetector, xs: np.ndarray) -> np.ndarray:
    return detections_of(detector, xs)[0]
