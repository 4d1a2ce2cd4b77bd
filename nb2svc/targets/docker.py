"""A container image: ``Dockerfile`` and ``.dockerignore``."""

from __future__ import annotations

import json

from nb2svc.runtime.manifest import LockDescription, Manifest
from nb2svc.targets.templates import fill, template

SERVICE_UID = 10001  # the image's non-root user (and group)
PORT = 8000


def files(manifest: Manifest) -> dict[str, str]:
    return {
        "Dockerfile": fill(
            "Dockerfile",
            base_image=default_base_image(manifest.python.minor),
            install_options=" ".join(install_options(manifest.lock)),
            labels=" \\\n      ".join(f"{name}={json.dumps(value)}" for name, value in labels(manifest).items()),
            command=json.dumps(serve_command(manifest.lock)),
        ),
        ".dockerignore": template("dockerignore"),
    }


def default_base_image(python_minor: str) -> str:
    """The official slim image of the service's Python, named in full (podman refuses short names without a TTY)."""
    return f"docker.io/library/python:{python_minor}-slim"


def install_options(lock: LockDescription) -> list[str]:
    """pip's options for installing the lock from wheels/ alone: every package is pinned in it, so no resolution."""
    return ["--require-hashes", "--no-deps"] if lock.hashes else ["--no-deps"]


def labels(manifest: Manifest) -> dict[str, str]:
    """The image's OCI labels: what the model is and what built it."""
    return {
        "org.opencontainers.image.title": manifest.name,
        "org.opencontainers.image.version": manifest.version,
        "org.opencontainers.image.created": manifest.built_at,
        "io.nb2svc.notebook": manifest.notebook.file,
        "io.nb2svc.notebook.sha256": manifest.notebook.sha256,
        "io.nb2svc.version": manifest.nb2svc_version,
        "io.nb2svc.python": manifest.python.minor,
    }


def serve_command(lock: LockDescription) -> list[str]:
    """uvicorn without its access log (the service logs each request as JSON), on uvloop and httptools where the
    lock installs them."""
    command = ["uvicorn", "app:app", "--host", "0.0.0.0", "--port", str(PORT), "--no-access-log"]
    if "uvloop" in lock.pins:
        command += ["--loop", "uvloop"]
    if "httptools" in lock.pins:
        command += ["--http", "httptools"]
    return command
