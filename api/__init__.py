"""driftline.api: the alert-rule API (FastAPI) over the control-plane topic.

>>> from driftline.api import ApiConfig, InMemoryControlPlane, create_app
>>> app = create_app(ApiConfig(), control_plane=InMemoryControlPlane())
>>> sorted(p for p in app.openapi()["paths"] if p.startswith("/v1/rules"))[:3]
['/v1/rules', '/v1/rules/{rule_id}', '/v1/rules/{rule_id}/disable']
"""

from .config import ApiConfig
from .control_plane import BaseControlPlane, ControlPlane, InMemoryControlPlane, Record
from .main import create_app

__all__ = ["ApiConfig", "BaseControlPlane", "ControlPlane", "InMemoryControlPlane", "Record",
           "create_app"]  # fmt: skip
