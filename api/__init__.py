"""driftline.api: the alert-rule API (FastAPI) over the control-plane topic.

>>> from driftline.api import ApiConfig, InMemoryControlPlane, create_app
>>> app = create_app(ApiConfig(), control_plane=InMemoryControlPlane())
>>> sorted(p for p in app.openapi()["paths"] if p.startswith("/v1/rules"))[:3]
['/v1/rules', '/v1/rules/{rule_id}', '/v1/rules/{rule_id}/disable']
"""

import lazy_loader

# Names load on first use (PEP 562, through lazy_loader), so importing one light
# submodule (the CLI's parsers: `driftline --help`) does not import everything here.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "config": ["ApiConfig"],
        "control_plane": ["BaseControlPlane", "ControlPlane", "InMemoryControlPlane", "Record"],
        "main": ["create_app"],
        "references": ["InMemoryReferences", "ReferenceTopic", "References"],
    },
)
