"""No resolver: the transitive closure pinned from the installed metadata, without hashes."""

from __future__ import annotations

import sys
from typing import Any

from packaging.utils import canonicalize_name

from nb2svc.errors import PackageNotOnIndex
from nb2svc.fresh_python import run_in_fresh_python
from nb2svc.locking.backend import LockBackend
from nb2svc.runtime.manifest import RequirementEntry


class OfflineBackend(LockBackend):
    """Pins what is installed for the kernel's Python (then the builder's), without asking an index."""

    hashes = False
    cacheable = False  # what is installed changes without requirements.in changing
    header_notes = ("# OFFLINE LOCK: pinned from the installed metadata without a resolver; NO HASHES.",)

    def __init__(self, python_executable: str) -> None:
        self.python_executable = python_executable

    @property
    def tool(self) -> str:
        return "installed metadata (offline)"

    def pin(self, requirements_in: str, requirements: tuple[RequirementEntry, ...]) -> str:
        request: dict[str, Any] = {"task": "closure", "names": [r.name for r in requirements]}
        pins: dict[str, str] = {}
        for python in (self.python_executable, sys.executable):  # the kernel's environment, then the builder's
            found = run_in_fresh_python(python, request, "reading the installed metadata")
            pins.update({name: pinned for name, pinned in found["pins"].items() if name not in pins})
            request["names"] = found["missing"]
            if not found["missing"]:
                break
        if request["names"]:
            raise PackageNotOnIndex(
                f"--offline pins what is installed, and {', '.join(request['names'])} is not installed in the "
                "kernel's environment. Install it there, or lock with the resolver (without --offline).",
                distributions=request["names"],
            )
        return "".join(f"{name}=={pins[name]}\n" for name in sorted(pins, key=canonicalize_name))
