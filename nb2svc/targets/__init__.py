"""Deployment targets: each module writes the files one way of running the service needs.

A target is a module with ``files(manifest) -> {relative path: text}``; ``TARGETS`` lists the ones
every build writes. Kubernetes manifests or a Ray Serve entry point are one module more each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from nb2svc.runtime.manifest import Manifest
from nb2svc.targets import docker, entrypoint, ray, service_readme


class Target(Protocol):
    def files(self, manifest: Manifest) -> dict[str, str]: ...


TARGETS: tuple[Target, ...] = (entrypoint, docker, service_readme, ray)


def write_targets(service_dir: Path, manifest: Manifest, targets: tuple[Target, ...] = TARGETS) -> None:
    """Write every file of every target into ``service_dir``."""
    for target in targets:
        for name, text in target.files(manifest).items():
            (service_dir / name).write_text(text, encoding="utf-8")
