"""driftline.detectors"""

from .ddm import DDM
from .eddm import EDDM
from .hddm_a import HDDM_A
from .hddm_w import HDDM_W
from .page_hinkley import PageHinkley

__all__ = [
    "DDM",
    "EDDM",
    "HDDM_A",
    "HDDM_W",
    "PageHinkley",
]
