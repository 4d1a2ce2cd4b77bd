"""The service runtime, copied into every service directory as ``nb2svc_runtime``.

It imports only the standard library and what the service's lock installs
(starlette, uvicorn, cloudpickle), never nb2svc: the directory runs where
nb2svc is not installed.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
