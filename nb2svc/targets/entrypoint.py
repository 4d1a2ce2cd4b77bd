"""``app.py``: the ASGI entry point, ``uvicorn app:app``."""

from __future__ import annotations

from nb2svc.runtime.manifest import Manifest
from nb2svc.targets.templates import template


def files(manifest: Manifest) -> dict[str, str]:
    return {"app.py": template("app.py")}
