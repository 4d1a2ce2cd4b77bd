"""Stage 4, locking: one backend per resolver (uv, pip-compile) and one without (offline), chosen in one place."""

from __future__ import annotations

from nb2svc.locking.backend import LockBackend, ResolvingBackend
from nb2svc.locking.lock import RESOLVERS, Lock, choose_backend, default_cache_dir, lock_requirements
from nb2svc.locking.options import DEFAULT_RESOLVER, LockOptions, ResolverName

__all__ = [
    "DEFAULT_RESOLVER",
    "RESOLVERS",
    "Lock",
    "LockBackend",
    "LockOptions",
    "ResolverName",
    "ResolvingBackend",
    "choose_backend",
    "default_cache_dir",
    "lock_requirements",
]
