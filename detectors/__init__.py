"""driftline.detectors"""

from .page_hinkley import PageHinkley

__all__ = [
    "PageHinkley",
]
