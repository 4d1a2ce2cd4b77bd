"""nb2svc: turn a Jupyter notebook into a self-contained model service."""

from __future__ import annotations

__version__ = "0.1.0"

from nb2svc.build import BuildResult, build
from nb2svc.errors import Nb2svcError
from nb2svc.verify import VerifyResult, verify

__all__ = ["BuildResult", "Nb2svcError", "VerifyResult", "__version__", "build", "verify"]
