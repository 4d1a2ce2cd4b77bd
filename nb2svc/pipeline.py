"""The build pipeline: notebook -> execute -> capture -> observe -> lock -> render, each stage one call."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2svc import build_cache
from nb2svc.build_cache import BuildCache, CachedBuild, InputFile, build_key
from nb2svc.capture import Capture, capture_endpoints
from nb2svc.errors import CaptureFailed, CellFailed, KernelFailed, PythonNotFound, UsageError
from nb2svc.execute import OnCell, execute_notebook
from nb2svc.interpreters import describe, find_interpreter
from nb2svc.locking import Lock, LockOptions, default_cache_dir, lock_requirements
from nb2svc.notebook import NotebookSpec, read_notebook
from nb2svc.observe import Observation, observe_requirements, start_observing
from nb2svc.render import (
    Origin,
    check_output,
    copy_runtime,
    publish,
    render_service,
    service_name,
    staging_directory,
)
from nb2svc.requirements import gather_requirements, runtime_pins
from nb2svc.runtime.manifest import (
    Manifest,
    NotebookDescription,
    RequirementEntry,
    Retarget,
    VersionChange,
    plain,
    read_manifest,
)
from nb2svc.target_python import (
    KERNEL_NAME,
    ParityCheck,
    TargetEnvironment,
    check_parity,
    check_target,
    kernel_in,
    package_index,
    target_environment,
    unavailable,
)


@dataclass(frozen=True)
class StageProgress:
    """Reported when a stage starts (``seconds`` is None) and when it ends (with a ``note``: "from the cache");
    a ``warning`` is reported once, with neither."""

    text: str
    seconds: float | None = None
    note: str = ""
    warning: bool = False


OnStage = Callable[[StageProgress], None]


@contextmanager
def _stage(on_stage: OnStage | None, text: str) -> Iterator[list[str]]:
    """Report ``text`` around the block; the block appends the notes of its end to the list it gets."""
    report = on_stage or (lambda _: None)
    report(StageProgress(text))
    started = time.perf_counter()
    notes: list[str] = []
    yield notes
    report(StageProgress(text, seconds=time.perf_counter() - started, note=", ".join(notes)))


@dataclass(frozen=True)
class BuildResult:
    service_dir: Path
    manifest: Manifest
    requirements: tuple[RequirementEntry, ...]
    lock: Lock
    seconds: float
    retargeted: Retargeted | None = None  # built for another Python than the kernel's
    inputs: tuple[InputFile, ...] = ()  # the files in the notebook's folder its cells read
    cache_key: str | None = None  # None: the kernel could not be described, so nothing was cached
    reused: CachedBuild | None = None  # the cache's entry, when the build was reused from there

    @property
    def retarget(self) -> dict[str, Any] | None:
        """The second run in another Python, as its ``to_dict`` (a reused build's as it was reported)."""
        if self.reused is not None:
            return self.reused.report.get("retarget")
        return self.retargeted.to_dict() if self.retargeted else None

    def to_dict(self) -> dict[str, Any]:
        retarget = self.retarget
        return {
            **({"retarget": retarget} if retarget else {}),
            "ok": True,
            "service_dir": str(self.service_dir),
            "seconds": round(self.seconds, 3),
            "cache": {
                "key": self.cache_key,
                "reused": self.reused is not None,
                **({"built_in_seconds": self.reused.report.get("seconds")} if self.reused else {}),
            },
            "inputs": [item.path for item in self.inputs],
            "requirements": [plain(requirement) for requirement in self.requirements],
            "lock": self.lock.to_dict(),
            "manifest": self.manifest.to_dict(),
        }


def build(
    notebook: str | Path,
    output: str | Path | None = None,
    *,
    force: bool = False,
    kernel_name: str | None = None,
    timeout: float | None = None,
    examples: Mapping[str, Sequence[Any]] | None = None,
    python_packages: Sequence[str] = (),
    requirements_file: str | Path | None = None,
    lock_options: LockOptions | None = None,
    on_cell: OnCell | None = None,
    python: str | None = None,
    allow_other_versions: bool = False,
    parameters: Mapping[str, Any] | None = None,
    on_stage: OnStage | None = None,
    cache: bool = True,
) -> BuildResult:
    """Build the service directory for ``notebook`` at ``output`` (default ``<notebook name>_service``).

    ``examples`` maps endpoint names to extra ``data`` values recorded as examples;
    ``python_packages`` adds or overrides requirements; ``requirements_file`` replaces the
    observed ones. The directory appears only if every stage succeeded; an existing one is
    replaced only with ``force``. Raises an ``Nb2svcError`` subclass on failure.

    With ``lock_options.python_version`` other than the kernel's, the notebook runs again in an environment of
    that Python (``python``: its interpreter, else one found) with the training versions (others only with
    ``allow_other_versions``), and every example must answer there as in the training kernel (``target_python``).

    ``parameters`` override the ``parameters`` cell's defaults as papermill does (``nb2svc.parameters``); papermill's
    warnings about them, and each stage as it starts and ends, are reported to ``on_stage``.

    A build whose inputs are unchanged reuses the last one's service directory without starting a kernel
    (``build_cache`` says what the inputs are); ``cache=False`` runs the notebook anyway. Every build is kept
    there.
    """
    started = time.perf_counter()
    lock_options = lock_options or LockOptions()
    if python is not None and lock_options.python_version is None:  # --python alone: serve on that one's Python
        lock_options = dataclasses.replace(lock_options, python_version=_python_of(python))
    if lock_options.python_version is not None and not re.fullmatch(r"\d+\.\d+", lock_options.python_version):
        raise UsageError(f"--python-version {lock_options.python_version!r} is not X.Y (e.g. 3.12)")
    spec = read_notebook(notebook, parameters)
    for warning in spec.warnings:
        (on_stage or (lambda _: None))(StageProgress(warning, warning=True))
    unknown = set(examples or {}) - {endpoint.name for endpoint in spec.endpoints}
    if unknown:
        names = ", ".join(endpoint.name for endpoint in spec.endpoints)
        raise UsageError(
            f"--example names no endpoint of {spec.path.name}: {', '.join(sorted(unknown))} (endpoints: {names})"
        )
    requirements_text = Path(requirements_file).read_text(encoding="utf-8") if requirements_file else None
    target = Path(output) if output is not None else Path(f"{service_name(spec.path)}_service")
    target = target.resolve()
    check_output(target, force)
    extra = {name: list(values) for name, values in (examples or {}).items()}
    options = {
        "kernel": kernel_name,
        "examples": extra,
        "python_packages": list(python_packages),
        "requirements_file": requirements_text,
        "lock": {**dataclasses.asdict(lock_options), "cache_dir": None},
        "python": _identity(python),
        "allow_other_versions": allow_other_versions,
        "source_date_epoch": os.environ.get("SOURCE_DATE_EPOCH"),  # the manifest's built_at
    }
    with _stage(on_stage, "looking for this build in the cache…") as notes:
        key = build_key(spec.sha256, spec.parameters, kernel_name or spec.kernel_name, options)
        cache_root = (lock_options.cache_dir or default_cache_dir()).parent
        builds = BuildCache(cache_root / "builds", spec.path)
        skip = (target, cache_root)  # what in the notebook's folder is not the notebook's to read
        hit = builds.find(key, skip) if key is not None and cache else None
        notes += ["found: nothing it depends on changed"] if hit else []
    if hit is not None:
        with contextlib.suppress(OSError):  # an entry evicted while copied: build it again
            return _reuse(hit, target, force, started)
    with staging_directory(target) as staging, contextlib.ExitStack() as observing:
        copy_runtime(staging)
        observation: Observation | None = None
        with execute_notebook(
            spec,
            kernel_name=kernel_name,
            timeout=timeout,
            on_cell=on_cell,
            runtime_path=staging,
            on_kernel=_kernel_stage(on_stage),
        ) as executed:
            capture = capture_endpoints(executed, staging, extra)
            read = executed.files_read()
            if requirements_text is None and lock_options.python_version in (None, _minor(capture.python_version)):
                # the artifacts are written: a fresh interpreter observes them while the kernel shuts down
                observation = observing.enter_context(start_observing(capture, staging))
        kernel_minor = _minor(capture.python_version)
        retargeted = None
        if lock_options.python_version and lock_options.python_version != kernel_minor:
            retargeted = _retarget(
                spec, staging, capture, lock_options, python, allow_other_versions, timeout, on_cell, on_stage
            )
            capture = retargeted.capture
        observed = {}
        if requirements_text is None:
            with _stage(on_stage, "observing what the artifacts import…"):
                observed = observation.result() if observation else observe_requirements(capture, staging)
        unpinned = retargeted.runtime_unpinned if retargeted else frozenset()
        requirements = gather_requirements(
            capture, observed, python_packages, requirements_text, runtime_unpinned=unpinned
        )
        with _stage(on_stage, f"locking {len(requirements)} requirements {_backend(lock_options)}…") as notes:
            lock = lock_requirements(
                requirements, _minor(capture.python_version), lock_options, capture.python_executable
            )
            notes += ["from the cache"] if lock.cached else []
        origin = Origin(
            NotebookDescription(file=spec.path.name, sha256=spec.sha256), "build", executed.timings, spec.parameters
        )
        retarget = retargeted.description() if retargeted else None
        with _stage(on_stage, "rendering…"):
            manifest = render_service(staging, service_name(spec.path), origin, capture, requirements, lock, retarget)
            publish(staging, target, force)
    inputs = builds.inputs(read)
    result = BuildResult(
        service_dir=target,
        manifest=manifest,
        requirements=requirements,
        lock=lock,
        seconds=time.perf_counter() - started,
        retargeted=retargeted,
        inputs=inputs,
        cache_key=key,
    )
    if key is not None:
        _keep(builds, key, result, skip, on_stage or (lambda _: None))
    return result


def _keep(builds: BuildCache, key: str, result: BuildResult, skip: tuple[Path, ...], on_stage: OnStage) -> None:
    """``result`` into the build cache; a warning when it cannot be kept (the build stands all the same)."""
    try:
        report = {name: value for name, value in result.to_dict().items() if name != "service_dir"}
        kept = builds.store(key, result.service_dir, result.inputs, report, skip)
    except OSError as exc:  # a full disk: the next build runs again
        on_stage(StageProgress(f"the build cache could not keep this build: {exc}", warning=True))
        return
    if not kept:
        on_stage(
            StageProgress(
                f"the build cache keeps no build of {builds.notebook.name}: its folder has more than "
                f"{build_cache.FOLDER_LIMIT} files it might read, too many to check before reusing one",
                warning=True,
            )
        )


def _reuse(hit: CachedBuild, target: Path, force: bool, started: float) -> BuildResult:
    """The cached service directory published at ``target``, described as its build described it."""
    with staging_directory(target) as staging:
        shutil.copytree(hit.service, staging, symlinks=True, dirs_exist_ok=True)
        publish(staging, target, force)
    manifest = read_manifest(target)
    described = manifest.lock
    lock = Lock(
        requirements_in=(target / "requirements.in").read_text(encoding="utf-8"),
        requirements_txt=(target / "requirements.txt").read_text(encoding="utf-8"),
        pins=described.pins,
        python_version=described.python_version,
        tool=described.tool,
        hashes=described.hashes,
        cached=True,
        seconds=0.0,
        options=LockOptions(
            index_url=described.index_url, extra_index_urls=described.extra_index_urls, offline=described.offline
        ),
    )
    return BuildResult(
        service_dir=target,
        manifest=manifest,
        requirements=manifest.requirements,
        lock=lock,
        seconds=time.perf_counter() - started,
        inputs=hit.inputs,
        cache_key=hit.key,
        reused=hit,
    )


def _identity(python: str | None) -> list[Any] | None:
    """The interpreter ``--python`` names, as the cache tells one from another: where it is, and its file's time."""
    if python is None:
        return None
    found = shutil.which(python) or python
    try:
        return [os.path.realpath(found), os.stat(found).st_mtime_ns]
    except OSError:
        return [python]


@dataclass(frozen=True)
class Retargeted:
    """The notebook's second run, in the target Python: what it cost, and the capture made there."""

    capture: Capture  # made in the target Python, with the training kernel's examples
    trained: Capture
    environment: TargetEnvironment
    rerun_seconds: float
    checks: tuple[ParityCheck, ...]
    runtime_unpinned: frozenset[str]  # the runtime's packages whose builder's version that Python has not

    def description(self) -> Retarget:
        changed = {name: VersionChange(a, b) for name, (a, b) in self.environment.changed.items()}
        return Retarget(self.trained.python_version, len(self.checks), changed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trained_python": self.trained.python_version,
            "python": self.capture.python_version,
            "interpreter": self.environment.interpreter.path,
            "environment_seconds": round(self.environment.seconds, 3),
            "environment_cached": self.environment.cached,
            "rerun_seconds": round(self.rerun_seconds, 3),
            "changed_versions": {
                name: {"trained": a, "chosen": b} for name, (a, b) in self.environment.changed.items()
            },
            "parity": [{"endpoint": c.endpoint, "number": c.number, "same": c.difference is None} for c in self.checks],
        }


def _retarget(
    spec: NotebookSpec,
    staging: Path,
    trained: Capture,
    lock_options: LockOptions,
    python: str | None,
    allow_other_versions: bool,
    timeout: float | None,
    on_cell: OnCell | None,
    on_stage: OnStage | None,
) -> Retargeted:
    """Run the notebook again in an environment of the target Python with the training run's packages at their
    training versions; capture there; replay the training kernel's examples against what was made there."""
    assert lock_options.python_version is not None
    interpreter = find_interpreter(lock_options.python_version, python)
    check_target(interpreter, lock_options)
    pins = {d.name: d.version for found in observe_requirements(trained, staging).values() for d in found}
    pins["cloudpickle"] = trained.cloudpickle_version
    with _stage(on_stage, f"making an environment of Python {interpreter.version} ({interpreter.path})…") as notes:
        environment = target_environment(interpreter, pins, lock_options, allow_other_versions)
        notes += ["from the cache"] if environment.cached else []
    (on_stage or (lambda _: None))(StageProgress(f"running the notebook again in Python {interpreter.version}:"))
    # the service's own packages at the builder's versions where they exist for that Python, else the resolver's
    runtime_unpinned = frozenset(unavailable(dict(runtime_pins()), interpreter, package_index(lock_options)))
    started = time.perf_counter()
    try:
        with kernel_in(environment.python) as manager:
            with execute_notebook(
                spec, kernel_name=KERNEL_NAME, kernel_manager=manager, timeout=timeout, on_cell=on_cell,
                runtime_path=staging, on_kernel=_kernel_stage(on_stage),
            ) as executed:  # fmt: skip
                made = capture_endpoints(executed, staging, {})  # --example values: replayed by the parity check
    except (CellFailed, KernelFailed, CaptureFailed) as exc:
        where = f"in the notebook's second run, in Python {interpreter.version} ({environment.python})"
        raise type(exc)(f"{where}: {exc.message}", **exc.details) from exc
    rerun_seconds = time.perf_counter() - started
    with _stage(on_stage, f"checking the examples answer the same in Python {interpreter.version}…"):
        checks = check_parity(made.python_executable, staging, made.endpoints, trained.endpoints)
    recorded = {e.name: e for e in trained.endpoints}  # what the notebook did is what the training kernel did
    endpoints = tuple(
        dataclasses.replace(
            e,
            examples=recorded[e.name].examples,
            calls_seen=recorded[e.name].calls_seen,
            unrecorded=recorded[e.name].unrecorded,
        )
        for e in made.endpoints
    )
    capture = dataclasses.replace(made, endpoints=endpoints)
    return Retargeted(capture, trained, environment, rerun_seconds, checks, runtime_unpinned)


def _kernel_stage(on_stage: OnStage | None) -> Callable[[str, float | None], None]:
    """The kernel's start, reported as a stage."""
    report = on_stage or (lambda _: None)
    return lambda name, seconds: report(StageProgress(f"starting the kernel {name}…", seconds=seconds))


def _backend(options: LockOptions) -> str:
    return "from the installed metadata (--offline)" if options.offline else f"with {options.resolver}"


def _python_of(path: str) -> str:
    found = describe(path)
    if found is None:
        raise PythonNotFound(f"--python {path} is not a Python interpreter that runs", interpreter=path)
    return found.minor


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])
