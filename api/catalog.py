"""What rules may name: detectors, stream kinds, metrics and their value ranges.

The api may not import ``driftline.detectors`` (see DESIGN.md), so the detector names are kept
here; ``tests/api/test_catalog.py`` asserts they equal ``driftline.detectors.base.REGISTRY``.
"""

from __future__ import annotations

import math
from typing import Final

DETECTORS: Final = (
    "ADWIN",
    "CUSUM",
    "DDM",
    "EDDM",
    "EWMAChart",
    "HDDM_A",
    "HDDM_W",
    "KSWIN",
    "PageHinkley",
)

# Window tests against a model's reference (driftline.detectors.monitor.SIGNAL_TESTS): the
# ``detector`` of the drift events the worker's data-drift stage raises.
WINDOW_TESTS: Final = (
    "ks",
    "chisquare",
    "missing_rate",
    "out_of_range",
    "unseen_categories",
    "constant",
    "wrong_type",
    "new_feature",
    "pca_reconstruction",
)

# Performance estimators (driftline.schemas.rules.ESTIMATOR): the ``detector`` of the
# ``detector_stats`` rows of the worker's estimates before labels arrive (docs/cbpe.md).
ESTIMATORS: Final = ("CBPE",)

# Post-deploy verdicts a verdict rule can wait for (driftline.schemas.rules.VERDICT_OUTCOMES,
# the ModelVerdict.avsc VerdictKind symbols; docs/versions.md).
VERDICT_OUTCOMES: Final = ("BETTER", "WORSE", "INCONCLUSIVE")

# The DriftEvent StreamKind enum (schemas/DriftEvent.avsc).
STREAM_KINDS: Final = ("FEATURE", "PREDICTION", "ERROR", "METRIC")

# Metric -> (lowest, highest) possible value; thresholds outside the range can never be crossed
# in a meaningful way, so they are refused.
METRIC_RANGES: Final[dict[str, tuple[float, float]]] = {
    "accuracy": (0.0, 1.0),
    "error_rate": (0.0, 1.0),
    "label_coverage": (0.0, 1.0),
    "mae": (0.0, math.inf),
    "rmse": (0.0, math.inf),
    "prediction_count": (0.0, math.inf),
    # estimated before labels arrive (CBPE windows; driftline.schemas.rules.ESTIMATED_METRICS)
    "estimated_accuracy": (0.0, 1.0),
    "estimated_precision": (0.0, 1.0),
    "estimated_recall": (0.0, 1.0),
    "estimated_f1": (0.0, 1.0),
}
METRICS: Final = tuple(METRIC_RANGES)

# detector_stats columns a statistic rule may watch, with their ranges.
STATISTIC_RANGES: Final[dict[str, tuple[float, float]]] = {
    "estimate": (-math.inf, math.inf),
    "statistic": (-math.inf, math.inf),
    "p_value": (0.0, 1.0),
    "n_values": (0.0, math.inf),
}
STATISTIC_FIELDS: Final = tuple(STATISTIC_RANGES)

SEVERITIES: Final = ("info", "warning", "critical")
SCOPES: Final = ("read", "write", "admin")
