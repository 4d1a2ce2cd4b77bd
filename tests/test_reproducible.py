"""Two builds of one notebook with the same inputs in the same environment give the same service: artifacts and
lock byte for byte, the same model version; only when it was built (and how long cells took) differ."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import nb2svc

from helpers import FIXTURES

VOLATILE = {"Dockerfile", "README.md", "manifest.json"}  # they say when the build ran


def digests(service: Path) -> dict[str, str]:
    return {
        str(path.relative_to(service)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(service.rglob("*"))
        if path.is_file() and path.name not in VOLATILE and "__pycache__" not in path.parts
    }


def without_times(manifest: dict[str, Any]) -> dict[str, Any]:
    return {**manifest, "built_at": None, "cells": [{**cell, "seconds": None} for cell in manifest["cells"]]}


@pytest.mark.network  # the lock resolves against the package index (then its cache)
@pytest.mark.parametrize("notebook", ["linear_regression.ipynb", "batching.ipynb"])
def test_two_builds_of_the_same_inputs_are_the_same_service(tmp_path: Path, notebook: str) -> None:
    first, second = (nb2svc.build(FIXTURES / notebook, tmp_path / name, cache=False) for name in ("first", "second"))
    assert first.manifest.version == second.manifest.version  # X-Model-Version
    assert digests(first.service_dir) == digests(second.service_dir)  # artifacts, lock, runtime, app.py
    assert any(name.startswith("artifacts/") for name in digests(first.service_dir))
    manifests = [json.loads((build.service_dir / "manifest.json").read_text()) for build in (first, second)]
    assert without_times(manifests[0]) == without_times(manifests[1])
