"""The service's own runtime in the kernel.

Examples are read, called and encoded by the very code that will serve them.
"""

from __future__ import annotations

import importlib
import sys
import types


def runtime_module(name: str, service_dir: str) -> types.ModuleType:
    """``nb2svc_runtime.name``, imported from the service directory being built (only its standard-library modules).

    In the process of ``nb2svc.deploy`` (these modules imported as ``nb2svc.kernel_side``), it is nb2svc's own
    ``nb2svc.runtime.name``: the very code copied into the service, under the name of the nb2svc that copies it.
    """
    if __name__.startswith("nb2svc."):
        return importlib.import_module(f"nb2svc.runtime.{name}")
    if service_dir not in sys.path:
        sys.path.append(service_dir)  # appended: it never shadows the notebook's own modules
    return importlib.import_module(f"nb2svc_runtime.{name}")
