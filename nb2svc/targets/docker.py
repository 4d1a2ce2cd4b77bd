"""A container image: ``Dockerfile`` and ``.dockerignore``."""

from __future__ import annotations

import json

from nb2svc.runtime.manifest import LockDescription, Manifest
from nb2svc.targets.templates import fill, install_command, template


def files(manifest: Manifest) -> dict[str, str]:
    install = install_command(manifest.lock).replace("pip install", "pip install --no-cache-dir")
    return {
        "Dockerfile": fill(
            "Dockerfile",
            python_minor=manifest.python.minor,
            install_docker=install,
            command=json.dumps(serve_command(manifest.lock)),
        ),
        ".dockerignore": template("dockerignore"),
    }


def serve_command(lock: LockDescription) -> list[str]:
    """uvicorn without its access log (the service logs each request as JSON), on uvloop and httptools where the
    lock installs them."""
    command = ["uvicorn", "app:app", "--host", "0.0.0.0", "--port", "8000", "--no-access-log"]
    if "uvloop" in lock.pins:
        command += ["--loop", "uvloop"]
    if "httptools" in lock.pins:
        command += ["--http", "httptools"]
    return command
