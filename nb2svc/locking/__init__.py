"""Stage 4, locking: one backend per resolver (uv, pip-compile) and one without (offline), chosen in one place.

The options (``LockOptions``, the resolvers' names) load alone: the CLI needs them for every command,
the backends only when a build locks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nb2svc.locking.options import DEFAULT_RESOLVER, RESOLVER_NAMES, LockOptions, ResolverName

if TYPE_CHECKING:
    from nb2svc.locking.backend import LockBackend, ResolvingBackend
    from nb2svc.locking.lock import RESOLVERS, Lock, choose_backend, default_cache_dir, lock_requirements

_LAZY = {
    "LockBackend": "nb2svc.locking.backend",
    "ResolvingBackend": "nb2svc.locking.backend",
    "RESOLVERS": "nb2svc.locking.lock",
    "Lock": "nb2svc.locking.lock",
    "choose_backend": "nb2svc.locking.lock",
    "default_cache_dir": "nb2svc.locking.lock",
    "lock_requirements": "nb2svc.locking.lock",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nb2svc.locking' has no attribute {name!r}")


__all__ = [
    "DEFAULT_RESOLVER",
    "RESOLVERS",
    "RESOLVER_NAMES",
    "Lock",
    "LockBackend",
    "LockOptions",
    "ResolverName",
    "ResolvingBackend",
    "choose_backend",
    "default_cache_dir",
    "lock_requirements",
]
