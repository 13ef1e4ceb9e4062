"""driftline.detectors: online change detectors (exact against river), banks of them, and
reference-vs-current window tests. numpy and Numba, plus scipy for p-values of distributions.
"""

from .adwin import ADWIN
from .bank import BankDetections, DetectorBank
from .base import REGISTRY, ChangeDetector, Detections, detector_from_state
from .cusum import CUSUM
from .ddm import DDM
from .eddm import EDDM
from .ewma import EWMAChart
from .hddm_a import HDDM_A
from .hddm_w import HDDM_W
from .histogram import CategoricalWindow, NumericWindow
from .kswin import KSWIN
from .page_hinkley import PageHinkley
from .window_tests import WindowTestResult, choose_test

__all__ = [
    "ADWIN",
    "CUSUM",
    "DDM",
    "EDDM",
    "HDDM_A",
    "HDDM_W",
    "KSWIN",
    "REGISTRY",
    "BankDetections",
    "CategoricalWindow",
    "ChangeDetector",
    "Detections",
    "DetectorBank",
    "EWMAChart",
    "NumericWindow",
    "PageHinkley",
    "WindowTestResult",
    "choose_test",
    "detector_from_state",
]
