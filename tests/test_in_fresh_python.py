"""What a fresh interpreter of the kernel's Python observes of an artifact (``in_fresh_python.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle
import pytest

from nb2svc.fresh_python import FreshPython, FreshPythonFailed, run_in_fresh_python
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


def test_a_fresh_python_started_early_answers_later_and_one_never_asked_is_stopped(tmp_path: Path) -> None:
    request = {"task": "closure", "names": ["packaging"]}
    with FreshPython(sys.executable, request, "reading the metadata") as fresh:
        answer = fresh.answer()
    assert answer == run_in_fresh_python(sys.executable, request, "reading the metadata")
    assert "packaging" in answer["pins"]

    with FreshPython(sys.executable, request, "reading the metadata") as unasked:
        process, folder = unasked._process, Path(unasked._empty.name)
    assert process.returncode is not None and not folder.exists()  # stopped, its folder gone


def test_a_fresh_python_that_fails_says_what_was_asked_and_its_last_words() -> None:
    with FreshPython(sys.executable, {"task": "no such task"}, "asking nonsense") as fresh:
        with pytest.raises(FreshPythonFailed, match="(?s)asking nonsense in a fresh .* failed:\n.*KeyError"):
            fresh.answer()
