"""Which files in the notebook's folder the cells read: the inputs a build depends on besides the notebook.

An audit hook (PEP 578) sees every ``open`` the kernel's Python makes: ``open()``, ``io.open_code`` (imports of
local modules), ``os.open``; so pandas' ``read_csv``, ``numpy.load``, ``joblib.load``, ``pickle.load(open(...))``
are all seen. A file a C or C++ library opens by itself (pyarrow's parquet reader, h5py, xgboost's
``load_model``, OpenCV) is not. An import that finds its module's ``__pycache__`` current opens only the
``.pyc``: the module's source is noted instead; so are local modules imported before the hook (an IPython
startup file). Each file is noted with its size and modification time when it was first opened, so that a file
saved while the build ran is known to have changed. Only regular files count; files the cells wrote are
outputs, not inputs; the kernel's own environment (``sys.prefix``, site-packages) and ``exclude`` are left out.
A symlink in the folder is noted where it is, and followed when it is stat-ed; a path outside the folder that
only resolves into it is not noted.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from typing import Any

_READ: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) when it was first opened
_WRITTEN: set[str] = set()
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_FOLDER: list[Any] = []  # the function that names a path relative to the folder, once recording started


def record_reads(folder: str, exclude: list[str]) -> None:
    """From now on, note each regular file under ``folder`` (not under ``exclude``) that is opened, and how."""
    roots = tuple({os.path.join(os.path.abspath(folder), ""), os.path.join(os.path.realpath(folder), "")})
    environments = [sys.prefix, sys.base_prefix, sys.exec_prefix]
    skipped = tuple(os.path.join(os.path.realpath(path), "") for path in [*exclude, *environments])
    abspath, realpath, fsdecode = os.path.abspath, os.path.realpath, os.fsdecode

    def relative(path: Any) -> str | None:
        """``path`` relative to the folder as it is written there, or None (a library's file: no realpath)."""
        absolute = abspath(fsdecode(path))
        if not absolute.startswith(roots):
            return None
        resolved = realpath(absolute)
        if resolved.startswith(skipped) or "site-packages" in resolved:
            return None
        root = next(root for root in roots if absolute.startswith(root))
        return absolute[len(root) :].replace(os.sep, "/")

    def hook(event: str, arguments: tuple[Any, ...]) -> None:
        if event != "open":
            return
        path, mode, flags = arguments
        if not isinstance(path, (str, bytes, os.PathLike)):
            return  # a file descriptor
        try:
            path = fsdecode(path)
            if "__pycache__" in path:  # an import that found its .pyc current: its source is what it read
                path = importlib.util.source_from_cache(path)
            name = relative(path)
            if name is None:
                return
            if any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS):
                _WRITTEN.add(name)
            elif name not in _READ:
                _note(name, path)
        except (TypeError, ValueError, OSError):
            return

    _FOLDER.append(relative)
    sys.addaudithook(hook)


def _note(name: str, path: str) -> None:
    status = os.stat(path)
    if stat.S_ISREG(status.st_mode):
        _READ[name] = (status.st_size, status.st_mtime_ns)


def files_read() -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of each file read and not written by the cells, relative to the folder (with
    ``/``), sorted; local modules imported before the hook (their source, as it is now) included."""
    if _FOLDER:
        for module in list(sys.modules.values()):
            source = getattr(module, "__file__", None)
            if isinstance(source, str) and source.endswith(".py"):
                name = _FOLDER[0](source)
                if name is not None and name not in _READ:
                    try:
                        _note(name, source)
                    except OSError:
                        pass
    return [[name, *_READ[name]] for name in sorted(_READ) if name not in _WRITTEN]
