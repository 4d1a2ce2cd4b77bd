"""A cache of finished builds: a build whose inputs are all unchanged reuses the last result, without a kernel.

A build's result depends on two kinds of input. Those known before the notebook runs make the key: the
notebook's bytes, the parameters, the options that can change the result (``build`` gives them), the kernel's
environment (its spec, its Python, the distributions on its path) and nb2svc's own code. Those known only
after a run are the files in the notebook's folder that its cells read (``kernel_side.reads``): each is
recorded with its size, modification time and digest, and the entry is reused only while every one of them
still has its digest (a file whose size and time are unchanged is not read again).

Layout: ``<cache>/builds/<notebook>/<key>/`` holding ``service/`` (the service directory as built) and
``entry.json``; each notebook keeps its ``KEEP`` most recently used entries.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from nb2svc import __version__

KEEP = 5
ENTRY = "entry.json"
SERVICE = "service"
_PACKAGE = Path(__file__).resolve().parent
# what the kernel's Python says of itself: its version and the folders it imports from
_ITSELF = "import json, sys; print(json.dumps({'version': sys.version, 'path': sys.path}))"


@dataclass(frozen=True)
class InputFile:
    """A file the notebook read, relative to its folder; ``size`` None: it was gone by the end of the run."""

    path: str
    size: int | None
    mtime_ns: int | None
    sha256: str | None

    @classmethod
    def of(cls, folder: Path, relative: str) -> InputFile:
        path = folder / relative
        try:
            status = path.stat()
            return cls(relative, status.st_size, status.st_mtime_ns, _file_digest(path))
        except OSError:
            return cls(relative, None, None, None)

    def unchanged(self, folder: Path) -> bool:
        try:
            status = (folder / self.path).stat()
        except OSError:
            return self.size is None
        if self.size is None or status.st_size != self.size:
            return False
        return status.st_mtime_ns == self.mtime_ns or _file_digest(folder / self.path) == self.sha256


@dataclass(frozen=True)
class CachedBuild:
    """An entry found: the service directory as built, what the build reported, the files it read."""

    service: Path
    key: str
    inputs: tuple[InputFile, ...]
    report: dict[str, Any]  # BuildResult.to_dict() of the build that made it


class BuildCache:
    """The entries of one notebook (``notebook``: its resolved path) under ``root``."""

    def __init__(self, root: Path, notebook: Path) -> None:
        self.notebook = notebook
        self.folder = root / hashlib.sha256(str(notebook).encode()).hexdigest()[:16]

    def find(self, key: str) -> CachedBuild | None:
        """The entry of ``key`` if every file it read is unchanged; it becomes the most recently used."""
        entry = self.folder / key
        try:
            data = json.loads((entry / ENTRY).read_text(encoding="utf-8"))
            inputs = tuple(InputFile(**item) for item in data["inputs"])
            report = data["report"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not (entry / SERVICE).is_dir() or not all(item.unchanged(self.notebook.parent) for item in inputs):
            return None
        with contextlib.suppress(OSError):
            os.utime(entry / ENTRY)
        return CachedBuild(entry / SERVICE, key, inputs, report)

    def store(self, key: str, service_dir: Path, read: tuple[str, ...], report: dict[str, Any]) -> None:
        """Keep ``service_dir`` as the result of ``key``; ``read``: the files the run read, relative to the folder.

        Written beside and renamed into place, so a reader sees a whole entry or none; then only the ``KEEP``
        most recently used entries of this notebook stay.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        inputs = [asdict(InputFile.of(self.notebook.parent, relative)) for relative in read]
        staging = Path(tempfile.mkdtemp(prefix=".entry-", dir=self.folder))
        try:
            shutil.copytree(service_dir, staging / SERVICE, symlinks=True)
            entry = {"notebook": str(self.notebook), "key": key, "inputs": inputs, "report": report}
            (staging / ENTRY).write_text(json.dumps(entry, indent=1), encoding="utf-8")
            target = self.folder / key
            if target.exists():
                retired = Path(tempfile.mkdtemp(prefix=".retired-", dir=self.folder))
                target.rename(retired / key)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            for leftover in self.folder.glob(".retired-*"):
                shutil.rmtree(leftover, ignore_errors=True)
        self._evict()

    def _evict(self) -> None:
        entries = sorted(
            (entry for entry in self.folder.iterdir() if not entry.name.startswith(".")),
            key=lambda entry: _used(entry),
            reverse=True,
        )
        for entry in entries[KEEP:]:
            shutil.rmtree(entry, ignore_errors=True)


def build_key(
    notebook_sha256: str, parameters: Mapping[str, Any], kernel_name: str, options: Mapping[str, Any]
) -> str | None:
    """The key of a build of these inputs; None when the kernel cannot be described (the build will say why)."""
    kernel = kernel_environment(kernel_name)
    if kernel is None:
        return None
    inputs = {
        "notebook": notebook_sha256,
        "parameters": parameters,
        "options": options,
        "kernel": kernel,
        "nb2svc": [__version__, code_digest()],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=repr).encode()).hexdigest()


def kernel_environment(name: str) -> dict[str, Any] | None:
    """The kernel ``name``'s command, its Python's version and the distributions on its path, without starting it.

    A ``python`` command means this interpreter, as jupyter_client's ``KernelManager.format_kernel_cmd`` says.
    """
    try:
        spec = KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        return None
    argv = list(spec.argv)
    major, minor = sys.version_info[:2]
    if argv and argv[0] in {"python", f"python{major}", f"python{major}.{minor}"}:
        argv[0] = sys.executable
    try:
        said = subprocess.run(
            [argv[0], "-c", _ITSELF],
            env={**os.environ, **spec.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        itself = json.loads(said.stdout)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    folders = [folder for folder in itself["path"] if folder and Path(folder).is_dir()]
    return {
        "argv": argv,
        "env": spec.env,
        "python": itself["version"],
        "distributions": {folder: _distributions(Path(folder)) for folder in folders},
    }


def _distributions(folder: Path) -> list[str]:
    """What is installed in ``folder``, as the names of its metadata (``numpy-2.4.6.dist-info``) and ``.pth`` files."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(name for name in names if name.endswith((".dist-info", ".egg-info", ".egg-link", ".pth")))


@functools.cache
def code_digest() -> str:
    """A digest of nb2svc's own files: an edited checkout builds afresh, as a new version would."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(_PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _used(entry: Path) -> float:
    try:
        return (entry / ENTRY).stat().st_mtime
    except OSError:
        return 0.0
