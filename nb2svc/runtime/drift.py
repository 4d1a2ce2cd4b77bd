"""At start-up: does this environment match the one the service was built and locked for?"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import PackageNotFoundError, version

from .manifest import Manifest

logger = logging.getLogger("nb2svc.runtime")


class IncompatibleEnvironment(RuntimeError):
    """The artifacts cannot be trusted to load here: another Python minor or another cloudpickle."""


def check_environment(manifest: Manifest) -> list[str]:
    """Refuse a Python or cloudpickle that differs from the build's; warn about every other drifted pin.

    Returns the warnings, one per distribution whose installed version is not the locked one.
    """
    built_python = manifest.python.minor
    running_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if running_python != built_python:
        raise IncompatibleEnvironment(
            f"the artifacts were pickled on Python {built_python} and this is Python {running_python}: functions "
            f"pickled by value do not load across Python versions. Run the service on Python {built_python}."
        )
    built_cloudpickle, running_cloudpickle = manifest.cloudpickle_version, _installed("cloudpickle")
    if running_cloudpickle != built_cloudpickle:
        raise IncompatibleEnvironment(
            f"the artifacts were written by cloudpickle {built_cloudpickle} and this environment has "
            f"{running_cloudpickle or 'no cloudpickle'}: install the lock (pip install -r requirements.txt)."
        )
    drifted = [
        f"{name} is locked at {locked} but {_installed(name) or 'not installed'} here"
        for name, locked in manifest.lock.pins.items()
        if _installed(name) != locked
    ]
    for warning in drifted:
        logger.warning("environment drift: %s; install the lock: pip install -r requirements.txt", warning)
    return drifted


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None
