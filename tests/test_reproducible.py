"""Two builds of one notebook with the same inputs in the same environment give the same service: artifacts and
lock byte for byte, the same model version; only when it was built (and how long cells took) differ."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import nb2svc
from nb2svc.locking import LockOptions

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


def test_sets_and_classes_pickle_the_same_in_every_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A set of strings iterates in the order of its process's hash seed, and cloudpickle writes it in that order:
    the build's kernel runs with one seed (PYTHONHASHSEED=0, unless the environment sets one). A class the notebook
    defines gets a random tracker id from cloudpickle: a build tracks it by its definition's digest instead.
    Without either, each build gave other artifact bytes and another model version."""
    cells = [
        new_code_cell("labels = {'alpha', 'beta', 'gamma', 'delta', 'eps'}\nclass Box:\n    kinds = frozenset('xyzw')"),
        new_code_cell(
            "def predict(x: str) -> bool:\n    return x in labels or x in Box.kinds", metadata={"tags": ["predict"]}
        ),
        new_code_cell("predict('alpha')"),
    ]
    notebook = new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "sets.ipynb")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # and the build's time: the whole directory is the same
    builds = [
        nb2svc.build(tmp_path / "sets.ipynb", tmp_path / name, cache=False, lock_options=LockOptions(offline=True))
        for name in ("first", "second")
    ]
    assert builds[0].manifest.version == builds[1].manifest.version
    assert digests(builds[0].service_dir) == digests(builds[1].service_dir)
    assert builds[0].manifest.built_at == "2023-11-14T22:13:20+00:00"
    for name in VOLATILE - {"manifest.json"}:  # the Dockerfile's created label, the README's "built on"
        assert (builds[0].service_dir / name).read_bytes() == (builds[1].service_dir / name).read_bytes()
    manifests = [json.loads((build.service_dir / "manifest.json").read_text()) for build in builds]
    assert without_times(manifests[0]) == without_times(manifests[1])
    assert manifests[0]["built_at"] == manifests[1]["built_at"]  # only the cells' seconds may differ


def test_a_class_is_tracked_by_its_definition() -> None:
    """The same definition, the same id (one class when both are loaded in one process); another definition,
    another id (two classes, each with its own attributes: a registry server loads many versions at once)."""
    import cloudpickle

    from nb2svc.kernel_side.capture import _content_addressed_classes

    def define(kinds: int) -> type:
        namespace: dict[str, Any] = {"__name__": "__main__"}  # a class of __main__: pickled by value
        exec(f"class Box:\n    kinds = {kinds}\n    def twice(self):\n        return Box.kinds * 2\n", namespace)
        return namespace["Box"]  # type: ignore[no-any-return]

    with _content_addressed_classes(cloudpickle):
        one, same, other = (cloudpickle.dumps(define(kinds)) for kinds in (1, 1, 2))
    assert one == same and one != other
    first, second = cloudpickle.loads(one), cloudpickle.loads(other)
    assert (first.kinds, second.kinds, first().twice(), second().twice()) == (1, 2, 2, 4)
    assert cloudpickle.loads(same) is first
    random = cloudpickle.dumps(define(1))  # outside a capture: cloudpickle's own random id
    assert random != one and cloudpickle.dumps(define(1)) != random
