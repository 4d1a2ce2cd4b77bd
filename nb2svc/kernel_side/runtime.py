"""The service's own runtime in the kernel.

Examples are read, called and encoded by the very code that will serve them.
"""

from __future__ import annotations

import importlib
import sys
import types


def runtime_module(name: str, service_dir: str) -> types.ModuleType:
    """``nb2svc_runtime.name``, imported from the service directory being built (only its standard-library modules)."""
    if service_dir not in sys.path:
        sys.path.append(service_dir)  # appended: it never shadows the notebook's own modules
    return importlib.import_module(f"nb2svc_runtime.{name}")
