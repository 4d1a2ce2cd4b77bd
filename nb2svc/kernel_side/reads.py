"""Which files in the notebook's folder the cells read: the inputs a build depends on besides the notebook.

An audit hook (PEP 578) sees every ``open`` the kernel's Python makes: ``open()``, ``io.open_code`` (imports of
local modules), ``os.open``; so pandas' ``read_csv``, ``numpy.load``, ``pickle.load(open(...))`` are all seen.
A file a C library opens by itself (h5py, some image readers) is not. Files the cells wrote are outputs, not
inputs, and are left out; so are compiled ``__pycache__`` files and anything under ``exclude``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_READ: set[str] = set()
_WRITTEN: set[str] = set()
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def record_reads(folder: str, exclude: list[str]) -> None:
    """From now on, note each file under ``folder`` (not under ``exclude``) that is opened, and how."""
    root = os.path.join(os.path.realpath(folder), "")
    skipped = tuple(os.path.join(os.path.realpath(path), "") for path in exclude)
    realpath, abspath, fsdecode = os.path.realpath, os.path.abspath, os.fsdecode

    def hook(event: str, arguments: tuple[Any, ...]) -> None:
        if event != "open":
            return
        path, mode, flags = arguments
        if not isinstance(path, (str, bytes, os.PathLike)):
            return  # a file descriptor
        try:
            resolved = realpath(abspath(fsdecode(path)))
        except (TypeError, ValueError, OSError):
            return
        if not resolved.startswith(root) or resolved.startswith(skipped) or "__pycache__" in resolved:
            return
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
        (_WRITTEN if writes else _READ).add(resolved[len(root) :])

    sys.addaudithook(hook)


def files_read() -> list[str]:
    """The files read, relative to the folder (with ``/``), that the cells did not also write; sorted."""
    return sorted(path.replace(os.sep, "/") for path in _READ - _WRITTEN)
