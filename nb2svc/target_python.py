"""Building for another Python than the kernel's: an environment of that Python with the training versions, a
kernel in it for the notebook's second run, and the parity check of its artifacts against the training kernel.

A function pickled by value loads only on the Python minor that pickled it, so the artifacts are made inside
the target Python itself: the notebook runs again there. Its packages are the training run's, at the training
versions, wherever those have a distribution for the target Python (else the build stops, naming the package
and the versions that exist, unless other versions are allowed). Every example the training kernel recorded
is then replayed against the new artifacts in a fresh interpreter of the target Python: an answer that differs
stops the build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager, KernelManager
from packaging import tags
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from nb2svc.errors import IndexUnreachable, PackageUnavailable, ParityFailed, UsageError
from nb2svc.fresh_python import run_in_fresh_python
from nb2svc.interpreters import Interpreter
from nb2svc.locking import LockOptions
from nb2svc.locking.lock import default_cache_dir
from nb2svc.requirements import runtime_pins
from nb2svc.runtime.compare import compare
from nb2svc.runtime.manifest import EndpointDescription, plain

DEFAULT_INDEX = "https://pypi.org/simple"
KERNEL_NAME = "nb2svc-target-python"
OLDEST = (3, 10)  # what nb2svc's runtime and kernel-side code run on
_SHOWN_VERSIONS = 8  # versions that exist for the target Python, named when the training one does not


@dataclass(frozen=True)
class TargetEnvironment:
    """An environment of the target Python with the training run's packages; ``changed`` names those that could
    not have their training version there (``{name: (trained, installed)}``, only when that was allowed)."""

    python: str  # its interpreter
    interpreter: Interpreter  # the base interpreter it was made from
    changed: dict[str, tuple[str, str]]
    seconds: float
    cached: bool


def check_target(interpreter: Interpreter, options: LockOptions) -> None:
    """Refuse what cannot be built for, before any work: Pythons older than nb2svc's runtime, other
    implementations than CPython (their wheels' tags differ), and --offline (the environment comes from the index)."""
    if tuple(int(part) for part in interpreter.minor.split(".")) < OLDEST:
        raise UsageError(
            f"--python-version {interpreter.minor}: nb2svc's service runtime runs on Python "
            f"{'.'.join(map(str, OLDEST))} and later; build for one of those."
        )
    if interpreter.implementation != "CPython":
        raise UsageError(f"{interpreter.path} is {interpreter.implementation}: nb2svc builds for CPython only")
    if options.offline:
        raise UsageError(
            "--offline cannot build for another Python: its environment is installed from the package index"
        )


def target_environment(
    interpreter: Interpreter, pins: dict[str, str], options: LockOptions, allow_other_versions: bool
) -> TargetEnvironment:
    """The environment of ``interpreter`` with ``pins`` (``{name: training version}``) installed, cached by
    the interpreter, the pins and the index. PackageUnavailable if a training version has no distribution for
    that Python (unless ``allow_other_versions``: then the resolver picks, and the change is reported)."""
    started = time.perf_counter()
    pins = {canonicalize_name(name): version for name, version in pins.items()}
    index = package_index(options)
    identity = [interpreter.version, interpreter.path, sorted(pins.items()), index, allow_other_versions]
    key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
    folder = (options.cache_dir or default_cache_dir()).parent / "environments" / key
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_suffix(".lock"), "w") as lock:  # one build makes it; another waits, then uses it
        fcntl.flock(lock, fcntl.LOCK_EX)
        complete = folder / "changed.json"  # written last
        if complete.is_file():
            changed = {name: (a, b) for name, (a, b) in json.loads(complete.read_text()).items()}
            return TargetEnvironment(_python(folder), interpreter, changed, time.perf_counter() - started, True)
        missing = unavailable(pins, interpreter, index)
        if missing and not allow_other_versions:
            raise _unavailable(missing, pins, interpreter)
        specs = [name if name in missing else f"{name}=={version}" for name, version in sorted(pins.items())]
        kernel = ["ipykernel", *(f"{name}=={version}" for name, version in runtime_pins() if name == "fastjsonschema")]
        shutil.rmtree(folder, ignore_errors=True)  # what a build killed halfway left
        try:
            # made where it stays: a virtual environment's scripts name its own path
            _uv(interpreter, "creating its environment", "venv", "--quiet", "--python", interpreter.path, str(folder))
            _install(_python(folder), [*specs, *kernel], index, interpreter)
            installed = _installed(_python(folder), interpreter)
            changed = {name: (pins[name], installed.get(name, "?")) for name in missing}
            complete.write_text(json.dumps(changed))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    return TargetEnvironment(_python(folder), interpreter, changed, time.perf_counter() - started, False)


def package_index(options: LockOptions) -> str:
    """The index packages come from: --index-url, else uv's or pip's configured one, else PyPI."""
    return options.index_url or os.environ.get("UV_INDEX_URL") or os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX


def _python(environment: Path) -> str:
    return str(environment / "bin" / "python")


def unavailable(pins: dict[str, str], interpreter: Interpreter, index: str) -> dict[str, list[str]]:
    """The pinned packages whose training version has no distribution for ``interpreter``, each with the
    versions nearest it that do, read from the index's JSON pages (PEP 691). IndexUnreachable if it is."""
    target = tuple(int(part) for part in interpreter.minor.split("."))
    cpython = f"cp{target[0]}{target[1]}"
    supported = set(tags.cpython_tags(python_version=target)) | set(
        tags.compatible_tags(python_version=target, interpreter=cpython)
    )
    python = Version(interpreter.version)

    def check(item: tuple[str, str]) -> tuple[str, list[str] | None]:
        name, trained = item
        files = _files(index.rstrip("/"), name)
        try:
            version = Version(trained)
        except InvalidVersion:  # not PEP 440 (a local build): the install says what it can
            return name, None
        if files is None or version in _fitting_versions(files, supported, python, version):
            return name, None  # not on this index (a private package?): the install says what it can
        return name, _nearest(_fitting_versions(files, supported, python, None), version)

    with ThreadPoolExecutor(8) as pool:
        return {name: versions for name, versions in pool.map(check, sorted(pins.items())) if versions is not None}


def _files(index: str, name: str) -> list[dict[str, Any]] | None:
    """The index's files of ``name``; None if it has no such project (404)."""
    request = urllib.request.Request(f"{index}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            files: list[dict[str, Any]] = json.loads(response.read())["files"]
            return files
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise IndexUnreachable(f"the package index {index} answered {exc.code} for {name}", index_url=index) from None
    except (OSError, ValueError, KeyError) as exc:
        raise IndexUnreachable(
            f"the package index {index} could not be read for {name} ({exc}): check the network, or --index-url",
            index_url=index,
        ) from None


def _fitting_versions(
    files: list[dict[str, Any]], supported: set[tags.Tag], python: Version, pinned: Version | None
) -> set[Version]:
    """The versions with a distribution for the target Python: a wheel whose tags it supports, or (for a version
    with no wheels at all, a pure-source package) an sdist; ``requires-python`` allowing it either way. A yanked
    file counts only for ``pinned``: an exact pin still installs a yanked release (PEP 592)."""
    wheels: dict[Version, bool] = {}
    sdists: set[Version] = set()
    for file in files:
        if not _allows(file.get("requires-python"), python):
            continue
        filename = file.get("filename", "")
        try:
            if filename.endswith(".whl"):
                _, version, _, file_tags = parse_wheel_filename(filename)
            elif filename.endswith((".tar.gz", ".zip")):
                version, file_tags = parse_sdist_filename(filename)[1], None
            else:
                continue
        except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
            continue
        if file.get("yanked") and version != pinned:
            continue
        if file_tags is None:
            sdists.add(version)
        else:
            wheels[version] = wheels.get(version, False) or bool(file_tags & supported)
    return {v for v, fits in wheels.items() if fits} | {v for v in sdists if v not in wheels}


def _nearest(versions: set[Version], trained: Version) -> list[str]:
    """The versions nearest the training one: the newest few below it, then the oldest few above (final
    releases, unless the training version is a pre-release)."""
    final = sorted(v for v in versions if not v.is_prerelease or trained.is_prerelease)
    below, above = [v for v in final if v < trained], [v for v in final if v > trained]
    return [str(v) for v in below[-(_SHOWN_VERSIONS - 2) :] + above[:2]]


def _allows(requires_python: str | None, python: Version) -> bool:
    try:
        return not requires_python or python in SpecifierSet(requires_python)
    except InvalidSpecifier:
        return True


def _unavailable(missing: dict[str, list[str]], pins: dict[str, str], interpreter: Interpreter) -> PackageUnavailable:
    lines = [
        f"  {name}=={pins[name]}: for Python {interpreter.minor} there is "
        + (", ".join(versions) if versions else "no version at all")
        for name, versions in missing.items()
    ]
    return PackageUnavailable(
        f"the training versions of {len(missing)} package(s) have no distribution for Python {interpreter.minor}:\n"
        + "\n".join(lines)
        + "\nTrain with versions that exist for both Pythons, or pass --allow-other-versions to let the resolver "
        "choose (the versions chosen are shown and recorded, and the parity check still compares every answer).",
        python=interpreter.minor,
        packages={name: {"trained": pins[name], "available": versions} for name, versions in missing.items()},
    )


def _install(python: str, specs: list[str], index: str, interpreter: Interpreter) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirements:
        requirements.write("\n".join(specs) + "\n")
        requirements.flush()
        _uv(
            interpreter,
            "installing the training run's packages",
            "pip", "install", "--quiet", "--python", python, "--index-url", index, "-r", requirements.name,
        )  # fmt: skip


def _installed(python: str, interpreter: Interpreter) -> dict[str, str]:
    listed = _uv(interpreter, "listing its packages", "pip", "list", "--python", python, "--format", "json")
    return {canonicalize_name(entry["name"]): entry["version"] for entry in json.loads(listed or "[]")}


def _uv(interpreter: Interpreter, what: str, *arguments: str) -> str:
    """``uv ARGUMENTS``' output; PackageUnavailable with the end of what it said if it failed."""
    from uv import find_uv_bin

    done = subprocess.run([find_uv_bin(), *arguments], capture_output=True, text=True)
    if done.returncode != 0:
        raise PackageUnavailable(
            f"{what} for Python {interpreter.minor} ({interpreter.path}) failed:\n"
            + "\n".join(done.stderr.strip().splitlines()[-15:]),
            python=interpreter.minor,
        )
    return done.stdout


@contextlib.contextmanager
def kernel_in(python: str) -> Iterator[KernelManager]:
    """A manager of kernels running ``python``'s ipykernel, from a kernel spec of its own (nothing global is
    changed: another build at the same time, or the kernel itself, never sees it)."""
    with tempfile.TemporaryDirectory(prefix="nb2svc-kernels-") as specs:
        spec = Path(specs) / KERNEL_NAME
        spec.mkdir()
        argv = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": python, "language": "python"}))
        yield AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[specs]))


@dataclass(frozen=True)
class ParityCheck:
    endpoint: str
    number: int
    request: Any
    difference: str | None


def check_parity(
    python: str, service_dir: Path, built: Sequence[EndpointDescription], trained: Sequence[EndpointDescription]
) -> tuple[ParityCheck, ...]:
    """Replay every example of the training kernel (``trained``'s) against the artifacts made for the target
    Python (``built``'s, in ``service_dir``), in a fresh interpreter of it: ParityFailed names what differs."""
    examples = {e.name: e.examples for e in trained}
    request = {
        "task": "replay",
        "runtime_path": str(service_dir),
        "endpoints": [
            {
                "name": e.name,
                "artifact": str(service_dir / e.artifact),
                "examples": [example.request["data"] for example in examples.get(e.name, ())],
                "recorded_frame": plain(e.recorded_frame),
            }
            for e in built
        ],
    }
    answers = run_in_fresh_python(python, request, "replaying the training kernel's examples")["answers"]
    checks = tuple(
        ParityCheck(name, number, example.request, _difference(example.response, answer))
        for name, recorded in examples.items()
        for number, (example, answer) in enumerate(zip(recorded, answers.get(name, []), strict=True), start=1)
    )
    failed = [c for c in checks if c.difference is not None]
    if failed:
        raise ParityFailed(
            f"{len(failed)} of {len(checks)} examples answer otherwise in the target Python ({python}) than in the "
            "training kernel: "
            + "; ".join(
                f"{c.endpoint} example {c.number} ({json.dumps(c.request)[:80]}): {c.difference}" for c in failed[:5]
            )
            + ". The notebook's answers depend on its Python (or on something that is not reproducible: set seeds, "
            "read fixed data); fix that, or build for the kernel's Python.",
            examples=[{"endpoint": c.endpoint, "number": c.number, "difference": c.difference} for c in failed],
        )
    return checks


def _difference(expected: Any, answer: dict[str, Any]) -> str | None:
    if "error" in answer:
        return f"it raised {answer['error']}"
    return compare(expected, answer["response"])
