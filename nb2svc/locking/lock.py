"""Stage 4: lock the requirements completely, with the chosen backend, through a cache of earlier locks."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from nb2svc.errors import UsageError
from nb2svc.locking.backend import LockBackend, ResolvingBackend
from nb2svc.locking.offline import OfflineBackend
from nb2svc.locking.options import LockOptions
from nb2svc.locking.pip_compile import PipCompileBackend
from nb2svc.locking.uv import UvBackend
from nb2svc.requirements import format_requirements_in
from nb2svc.runtime.manifest import LockDescription, RequirementEntry, plain

RESOLVERS: dict[str, type[ResolvingBackend]] = {"uv": UvBackend, "pip-compile": PipCompileBackend}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", re.MULTILINE)


@dataclass(frozen=True)
class Lock:
    """requirements.in as observed, requirements.txt as locked (with nb2svc's header), and how it was locked."""

    requirements_in: str
    requirements_txt: str
    pins: dict[str, str]  # canonical name -> version
    python_version: str
    tool: str
    hashes: bool
    cached: bool
    seconds: float
    options: LockOptions = field(default_factory=LockOptions)

    def description(self) -> LockDescription:
        """The lock as the manifest records it."""
        return LockDescription(
            tool=self.tool,
            python_version=self.python_version,
            hashes=self.hashes,
            offline=self.options.offline,
            index_url=self.options.index_url,
            extra_index_urls=self.options.extra_index_urls,
            pins=self.pins,
        )

    def to_dict(self) -> dict[str, Any]:
        """The description, with whether it came from the cache and how long it took."""
        return {**plain(self.description()), "cached": self.cached, "seconds": round(self.seconds, 3)}


def lock_requirements(
    requirements: tuple[RequirementEntry, ...], python_version: str, options: LockOptions, python_executable: str
) -> Lock:
    """Lock ``requirements`` for Python ``python_version`` (X.Y) with the backend ``options`` choose.

    ``python_executable`` is the kernel's Python, whose installed metadata an offline lock pins.
    """
    started = time.perf_counter()
    backend = choose_backend(options, python_version, python_executable)
    requirements_in = format_requirements_in(requirements)
    text, cached = _pinned(backend, requirements_in, requirements, python_version, options)
    return Lock(
        requirements_in=requirements_in,
        requirements_txt=_header(backend, python_version, options) + text,
        pins={canonicalize_name(name): pinned for name, pinned in _PIN.findall(text)},
        python_version=python_version,
        tool=backend.tool,
        hashes=backend.hashes,
        cached=cached,
        seconds=time.perf_counter() - started,
        options=options,
    )


def choose_backend(options: LockOptions, python_version: str, python_executable: str) -> LockBackend:
    """The one place a backend is chosen: ``--offline``, else ``--resolver``."""
    if options.offline:
        return OfflineBackend(python_executable)
    if options.resolver not in RESOLVERS:
        raise UsageError(f"--resolver {options.resolver!r} is not one of {', '.join(RESOLVERS)}")
    return RESOLVERS[options.resolver](python_version, options)


def default_cache_dir() -> Path:
    if "NB2SVC_CACHE_DIR" in os.environ:
        return Path(os.environ["NB2SVC_CACHE_DIR"]) / "locks"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nb2svc" / "locks"


def _pinned(
    backend: LockBackend,
    requirements_in: str,
    requirements: tuple[RequirementEntry, ...],
    python_version: str,
    options: LockOptions,
) -> tuple[str, bool]:
    """The backend's pins, and whether they came from the cache (a cacheable backend's earlier answer)."""
    if not backend.cacheable:
        return backend.pin(requirements_in, requirements), False
    key = _cache_key(requirements, python_version, options, backend)
    cache = (options.cache_dir or default_cache_dir()) / f"{key}.txt"
    if cache.is_file():
        return cache.read_text(encoding="utf-8"), True
    text = backend.pin(requirements_in, requirements)
    _write_atomically(cache, text)
    return text, False


def _cache_key(
    requirements: tuple[RequirementEntry, ...], python_version: str, options: LockOptions, backend: LockBackend
) -> str:
    """What the resolver reads: the requirement lines, not the reasons written as comments beside them."""
    specs = [requirement.spec for requirement in requirements]
    material = json.dumps([specs, python_version, options.index_lines(), backend.tool, sys.platform])
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def _header(backend: LockBackend, python_version: str, options: LockOptions) -> str:
    lines = [f"# Locked by nb2svc with {backend.tool} for Python {python_version}.", *backend.header_notes]
    return "\n".join(lines + options.index_lines()) + "\n"


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
