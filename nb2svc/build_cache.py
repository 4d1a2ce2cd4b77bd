"""A cache of finished builds: a build whose inputs are all unchanged reuses the last result, without a kernel.

A build's result depends on two kinds of input. Those known before the notebook runs make the key: the
notebook's bytes, the parameters, the options that can change the result (``build`` gives them), the kernel's
environment (its spec, its Python, the distributions on its path) and nb2svc's own code. Those known only
after a run are the files in the notebook's folder that its cells read (``kernel_side.reads``): each is
recorded with its size, modification time and digest, and the entry is reused only while every one of them
still has its digest (a file whose size and time are unchanged is not read again). Under them, every other
file of the folder is kept the same way (``other_files``; the digest of small ones only), for what a cell read
without Python's ``open`` seeing it.

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
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from nb2svc import __version__
from nb2svc.execute import FileRead

KEEP = 5
FOLDER_LIMIT = 5000  # files of the notebook's folder the cache checks; a folder with more is not cached
SMALL = 1 << 20  # bytes: a folder's file this small is kept with its digest (new times alone then still match)
ABANDONED = 3600.0  # seconds after which a staging entry nobody renamed is a killed store's
ENTRY = "entry.json"
SERVICE = "service"
_PACKAGE = Path(__file__).resolve().parent
# what the kernel's Python says of itself: its version and the folders it imports from
_ITSELF = "import json, sys; print(json.dumps({'version': sys.version, 'path': sys.path}))"


@dataclass(frozen=True)
class InputFile:
    """A file the notebook read, relative to its folder, as it was when the build first opened it.

    ``size`` None: it was gone by the time the build was stored. ``sha256`` None: it changed while the build ran
    (its size or time then differed from when it was opened), so no content matches what the build read.
    """

    path: str
    size: int | None
    mtime_ns: int | None
    sha256: str | None

    @classmethod
    def of(cls, folder: Path, read: FileRead) -> InputFile:
        """``read`` as the cache keeps it: digested now if it has not changed since the build opened it."""
        try:
            status = (folder / read.path).stat()
        except OSError:
            return cls(read.path, None, None, None)
        if (status.st_size, status.st_mtime_ns) != (read.size, read.mtime_ns):
            return cls(read.path, read.size, read.mtime_ns, None)
        return cls(read.path, read.size, read.mtime_ns, _file_digest(folder / read.path))

    @classmethod
    def as_left(cls, folder: Path, relative: str) -> InputFile:
        """A file of the folder as the build left it: digested only up to ``SMALL`` bytes (a bigger one matches
        by its time alone)."""
        status = (folder / relative).stat()
        digest = _file_digest(folder / relative) if status.st_size <= SMALL else None
        return cls(relative, status.st_size, status.st_mtime_ns, digest)

    def unchanged(self, folder: Path) -> bool:
        try:
            status = (folder / self.path).stat()
        except OSError:
            return self.size is None
        if self.size is None or status.st_size != self.size:
            return False
        if status.st_mtime_ns == self.mtime_ns:
            return True
        return self.sha256 is not None and _file_digest(folder / self.path) == self.sha256


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

    def find(self, key: str, skip: tuple[Path, ...] = ()) -> CachedBuild | None:
        """The entry of ``key`` if every file it read is unchanged, and every other file of the notebook's folder
        (but ``skip``: the output) is as the build left it; it becomes the most recently used."""
        entry = self.folder / key
        try:
            data = json.loads((entry / ENTRY).read_text(encoding="utf-8"))
            inputs = tuple(InputFile(**item) for item in data["inputs"])
            others = tuple(InputFile(**item) for item in data["folder"])
            report, files = data["report"], data["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(report, dict) or not isinstance(files, dict):
            return None
        folder = self.notebook.parent
        if not all(item.unchanged(folder) for item in inputs) or _sizes(entry / SERVICE) != files:
            return None  # an input changed, or the kept directory is not whole (a cache cleaned by hand)
        now = other_files(folder, skip, {item.path for item in inputs})
        if now != {item.path for item in others} or not all(item.unchanged(folder) for item in others):
            return None  # a file the notebook may have read without Python's open (a C reader) changed
        with contextlib.suppress(OSError):
            os.utime(entry / ENTRY)
        return CachedBuild(entry / SERVICE, key, inputs, report)

    def store(
        self,
        key: str,
        service_dir: Path,
        inputs: tuple[InputFile, ...],
        report: dict[str, Any],
        skip: tuple[Path, ...] = (),
    ) -> bool:
        """Keep ``service_dir`` as the result of ``key``, made from ``inputs``; ``report``: its ``--json``. False,
        and nothing kept, when the notebook's folder has more than ``FOLDER_LIMIT`` files to check.

        Written beside and renamed into place, so a reader sees a whole entry or none; then only the ``KEEP``
        most recently used entries of this notebook stay. What a killed store left is swept.
        """
        found = other_files(self.notebook.parent, skip, {item.path for item in inputs})
        if found is None:
            return False
        others = [asdict(InputFile.as_left(self.notebook.parent, relative)) for relative in sorted(found)]
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".entry-", dir=self.folder))
        try:
            shutil.copytree(service_dir, staging / SERVICE, symlinks=True)
            entry = {
                "notebook": str(self.notebook),
                "key": key,
                "inputs": [asdict(item) for item in inputs],
                "files": _sizes(staging / SERVICE),
                "folder": others,
                "report": report,
            }
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
        return True

    def inputs(self, read: tuple[FileRead, ...]) -> tuple[InputFile, ...]:
        """What the cache keeps of the files a build read."""
        return tuple(InputFile.of(self.notebook.parent, file) for file in read)

    def _evict(self) -> None:
        for leftover in self.folder.glob(".entry-*"):  # a store that was killed (one running now is younger)
            with contextlib.suppress(OSError):
                if time.time() - leftover.stat().st_mtime > ABANDONED:
                    shutil.rmtree(leftover, ignore_errors=True)
        entries = sorted(
            (entry for entry in self.folder.iterdir() if not entry.name.startswith(".")),
            key=lambda entry: _used(entry),
            reverse=True,
        )
        for entry in entries[KEEP:]:
            shutil.rmtree(entry, ignore_errors=True)


def other_files(folder: Path, skip: tuple[Path, ...], inputs: set[str]) -> set[str] | None:
    """The other files of the notebook's folder and below, relative to it: what a cell may have read without
    Python's ``open`` seeing it (pyarrow's parquet reader, h5py, OpenCV), a safety net under the files it was
    seen to read.

    Left out: hidden files and folders (.git, .ipynb_checkpoints), __pycache__, node_modules, virtual
    environments (a folder with pyvenv.cfg), notebooks, ``skip`` (the output, the cache) and ``inputs``
    (checked on their own). None: more than ``FOLDER_LIMIT`` files.
    """
    skipped = {os.path.realpath(path) for path in skip}
    found: set[str] = set()
    for directory, folders, files in os.walk(folder):
        here = Path(directory)
        folders[:] = [
            name
            for name in folders
            if not name.startswith(".")
            and name not in ("__pycache__", "node_modules")
            and os.path.realpath(here / name) not in skipped
            and not (here / name / "pyvenv.cfg").exists()
        ]
        for name in files:
            relative = (here / name).relative_to(folder).as_posix()
            if name.startswith(".") or name.endswith((".ipynb", ".pyc")) or relative in inputs:
                continue
            if (here / name).is_file():  # a regular file, or a symlink to one
                found.add(relative)
            if len(found) > FOLDER_LIMIT:
                return None
    return found


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
    if not any("ipykernel" in argument for argument in argv[1:]):  # a wrapper script: the command is what we know
        command = shutil.which(argv[0]) if argv else None
        digest = _file_digest(Path(command)) if command else None
        return {"argv": argv, "env": spec.env, "command": digest}
    try:
        said = subprocess.run(
            [argv[0], "-c", _ITSELF],
            env={**os.environ, **spec.env},
            capture_output=True,
            text=True,
            timeout=30,
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


def _sizes(service: Path) -> dict[str, int]:
    """Every file of a kept service directory, with its size: an entry is reused only whole (the service checks
    its artifacts' digests when it loads)."""
    return {
        str(path.relative_to(service)): path.stat().st_size
        for path in sorted(service.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


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
