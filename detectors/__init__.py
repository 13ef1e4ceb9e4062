"""driftline.detectors"""

from .adwin import ADWIN
from .cusum import CUSUM
from .ddm import DDM
from .eddm import EDDM
from .ewma import EWMAChart
from .hddm_a import HDDM_A
from .hddm_w import HDDM_W
from .kswin import KSWIN
from .page_hinkley import PageHinkley

__all__ = [
    "ADWIN",
    "CUSUM",
    "DDM",
    "EDDM",
    "EWMAChart",
    "HDDM_A",
    "HDDM_W",
    "KSWIN",
    "PageHinkley",
]
