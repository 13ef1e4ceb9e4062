"""driftline.detectors"""

from .ddm import DDM
from .eddm import EDDM
from .page_hinkley import PageHinkley

__all__ = [
    "DDM",
    "EDDM",
    "PageHinkley",
]
