"""``ray_app.py``: the Ray Serve entry point, ``serve run ray_app:app`` or ``nb2svc serve DIR --ray``."""

from __future__ import annotations

from nb2svc.runtime.manifest import Manifest
from nb2svc.targets.templates import template


def files(manifest: Manifest) -> dict[str, str]:
    return {"ray_app.py": template("ray_app.py")}
