"""A container image: ``Dockerfile`` and ``.dockerignore``."""

from __future__ import annotations

from nb2svc.runtime.manifest import Manifest
from nb2svc.targets.templates import fill, install_command, template


def files(manifest: Manifest) -> dict[str, str]:
    install = install_command(manifest.lock).replace("pip install", "pip install --no-cache-dir")
    return {
        "Dockerfile": fill("Dockerfile", python_minor=manifest.python.minor, install_docker=install),
        ".dockerignore": template("dockerignore"),
    }
