"""Ask a fresh interpreter (the kernel's Python, not the builder's) about its environment: ``in_fresh_python.py``."""

from __future__ import annotations

import json
import subprocess
import tempfile
from importlib import resources
from typing import Any

_SCRIPT = (resources.files("nb2svc") / "in_fresh_python.py").read_text(encoding="utf-8")


class FreshPythonFailed(RuntimeError):
    """The interpreter exited with an error: a bug of nb2svc's, or a broken environment."""


def run_in_fresh_python(python: str, request: dict[str, Any], what: str) -> dict[str, Any]:
    """Run ``in_fresh_python.py`` under ``python`` on ``request``; its one JSON answer.

    It runs from an empty folder, so nothing is importable from the builder's working directory.
    ``what`` says in words what was asked, for the error message.
    """
    with tempfile.TemporaryDirectory(prefix="nb2svc-fresh-") as empty:
        done = subprocess.run(
            [python, "-c", _SCRIPT], input=json.dumps(request), capture_output=True, text=True, cwd=empty
        )
    if done.returncode != 0:
        raise FreshPythonFailed(f"{what} in a fresh {python} failed:\n{done.stderr[-2000:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer
