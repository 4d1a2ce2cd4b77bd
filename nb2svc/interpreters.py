"""Python interpreters installed here: the one for a given X.Y, or all of them (to say what there is)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from nb2svc.errors import PythonNotFound

_VERSION = "import sys, platform; print('.'.join(map(str, sys.version_info[:3])), platform.python_implementation())"


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str  # X.Y.Z, as the interpreter itself says
    implementation: str  # CPython, PyPy

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def find_interpreter(minor: str, explicit: str | None = None) -> Interpreter:
    """A working interpreter of Python ``minor`` (X.Y): ``explicit`` (``--python PATH``) if given, else this one,
    ``pythonX.Y`` on PATH, pyenv's, or one uv manages. PythonNotFound lists what there is, and how to add one."""
    if explicit is not None:
        found = describe(explicit)
        if found is None or found.minor != minor:
            what = f"Python {found.version}" if found else "not a Python interpreter that runs"
            raise PythonNotFound(f"--python {explicit} is {what}, not Python {minor}", python=minor)
        return found
    for path in _candidates(minor):
        found = describe(path)
        if found is not None and found.minor == minor:
            return found
    installed = ", ".join(f"{i.version} ({i.path})" for i in installed_interpreters()) or "none"
    raise PythonNotFound(
        f"no Python {minor} interpreter is installed here (found: {installed}). Install one (`pyenv install "
        f"{minor}`, `uv python install {minor}`, or your system's python{minor} package), or pass --python PATH.",
        python=minor,
    )


def describe(path: str) -> Interpreter | None:
    """What ``path`` is, asked of itself; None if it does not run (a broken shim, not a Python)."""
    try:
        done = subprocess.run([path, "-c", _VERSION], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = done.stdout.split()
    if done.returncode != 0 or len(words) != 2:
        return None
    return Interpreter(path=path, version=words[0], implementation=words[1])


def installed_interpreters() -> list[Interpreter]:
    """The interpreters found under pyenv, on PATH and by uv: one per version (the first found), by version."""
    on_path = [shutil.which(f"python3.{minor}") for minor in range(6, 16)]
    paths = [*_pyenv_interpreters("*"), *filter(None, on_path), *_uv_interpreters()]
    found: dict[str, Interpreter] = {}
    for path in paths:
        interpreter = describe(path)
        if interpreter is not None:
            found.setdefault(interpreter.version, interpreter)
    return sorted(found.values(), key=lambda i: tuple(int(part) for part in i.version.split(".")))


def _candidates(minor: str) -> list[str]:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    paths = [sys.executable] if minor == here else []
    paths += [path for path in [shutil.which(f"python{minor}")] if path]
    paths += sorted(_pyenv_interpreters(minor), reverse=True)  # the newest patch release first
    return paths + _uv_interpreters(minor)


def _pyenv_interpreters(minor: str) -> list[str]:
    """pyenv's interpreters of ``minor`` (``*``: all), called by their full path (its shims may fail)."""
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    patterns = ["python3.[0-9]", "python3.[0-9][0-9]"] if minor == "*" else [f"python{minor}"]
    return [path for pattern in patterns for path in glob.glob(os.path.join(root, "versions", "*", "bin", pattern))]


def _uv_interpreters(minor: str | None = None) -> list[str]:
    """The interpreters of ``minor`` (None: all) uv finds installed (it never downloads one here)."""
    if minor is not None:
        found = _uv("python", "find", "--no-python-downloads", minor).strip()
        return [found] if found else []
    try:
        return [
            entry["path"]
            for entry in json.loads(_uv("python", "list", "--only-installed", "--output-format", "json") or "[]")
            if entry.get("path")
        ]
    except (ValueError, TypeError, KeyError):
        return []


def _uv(*arguments: str) -> str:
    """What ``uv ARGUMENTS`` printed, or "" if it failed."""
    from uv import find_uv_bin

    try:
        done = subprocess.run([find_uv_bin(), *arguments], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""
