"""nb2svc: turn a Jupyter notebook into a self-contained model service.

``import nb2svc`` in a notebook loads only ``nb2svc.batch`` and the standard library: the builder
(``build``, ``verify``) is imported when first used, so it never counts among the notebook's imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nb2svc.decorators import batch

__version__ = "0.1.0"

if TYPE_CHECKING:
    from nb2svc.deployment import Deployment, deploy
    from nb2svc.errors import Nb2svcError
    from nb2svc.pipeline import BuildResult, build
    from nb2svc.verification import VerifyResult, verify

_LAZY = {
    "BuildResult": "nb2svc.pipeline",
    "Deployment": "nb2svc.deployment",
    "deploy": "nb2svc.deployment",
    "build": "nb2svc.pipeline",
    "Nb2svcError": "nb2svc.errors",
    "VerifyResult": "nb2svc.verification",
    "verify": "nb2svc.verification",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nb2svc' has no attribute {name!r}")


__all__ = [
    "BuildResult",
    "Deployment",
    "Nb2svcError",
    "VerifyResult",
    "__version__",
    "batch",
    "build",
    "deploy",
    "verify",
]
