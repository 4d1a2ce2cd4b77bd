"""What a fresh interpreter of the kernel's Python observes of an artifact (``in_fresh_python.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle

from nb2svc.fresh_python import run_in_fresh_python
from nb2svc.render import copy_runtime


def test_loading_an_artifact_names_what_its_code_needs_and_not_cloudpickle(tmp_path: Path) -> None:
    copy_runtime(tmp_path)
    notebook: dict[str, object] = {"__name__": "a_notebook"}  # no such module: cloudpickle pickles it by value
    exec(
        "from packaging.version import Version\n\ndef newest(versions):\n    return str(max(map(Version, versions)))",
        notebook,
    )
    artifact = tmp_path / "artifacts" / "newest.pkl"
    artifact.parent.mkdir()
    artifact.write_bytes(cloudpickle.dumps(notebook["newest"]))
    endpoint = {"name": "newest", "artifact": str(artifact), "examples": [["1.0", "2.0"]], "recorded_frame": None}
    request = {"task": "observe", "runtime_path": str(tmp_path), "endpoints": [endpoint]}
    loading = run_in_fresh_python(sys.executable, request, "observing")["endpoints"]["newest"]["loading"]
    assert loading == {"packaging": {"version": loading["packaging"]["version"], "modules": ["packaging"]}}
