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
    with FreshPython(python, request, what) as fresh:
        return fresh.answer()


class FreshPython:
    """``in_fresh_python.py`` started now under ``python`` on ``request``; ``answer()`` waits for its answer.

    The builder can do other work while it runs (the kernel's shutdown, say). Used as a context manager, an
    interpreter whose answer was never asked for is killed on the way out; its empty folder is always removed.
    """

    def __init__(self, python: str, request: dict[str, Any], what: str) -> None:
        self._python, self._what = python, what
        self._empty = tempfile.TemporaryDirectory(prefix="nb2svc-fresh-")
        try:
            with tempfile.TemporaryFile("w+", encoding="utf-8") as stdin:  # a file: nothing to feed, no deadlock
                json.dump(request, stdin)
                stdin.seek(0)
                self._process = subprocess.Popen(
                    [python, "-c", _SCRIPT],
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=self._empty.name,
                )
        except BaseException:
            self._empty.cleanup()
            raise

    def answer(self) -> dict[str, Any]:
        """Wait for the interpreter; its one JSON answer, or ``FreshPythonFailed`` with the end of its stderr."""
        stdout, stderr = self._process.communicate()
        self._empty.cleanup()
        if self._process.returncode != 0:
            raise FreshPythonFailed(f"{self._what} in a fresh {self._python} failed:\n{stderr[-2000:]}")
        answer: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        return answer

    def __enter__(self) -> FreshPython:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process.returncode is None:  # left before its answer was asked for: a stage failed meanwhile
            self._process.kill()
            self._process.communicate()
        self._empty.cleanup()
