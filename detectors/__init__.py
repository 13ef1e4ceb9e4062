"""driftline.detectors"""

from .ddm import DDM
from .page_hinkley import PageHinkley

__all__ = [
    "DDM",
    "PageHinkley",
]
