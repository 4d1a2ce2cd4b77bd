"""The build pipeline: notebook -> execute -> capture -> observe -> lock -> render, each stage one call."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2svc.capture import capture_endpoints
from nb2svc.errors import UsageError
from nb2svc.execute import OnCell, execute_notebook
from nb2svc.locking import Lock, LockOptions, lock_requirements
from nb2svc.notebook import read_notebook
from nb2svc.observe import observe_requirements
from nb2svc.render import (
    Origin,
    check_output,
    copy_runtime,
    publish,
    render_service,
    service_name,
    staging_directory,
)
from nb2svc.requirements import gather_requirements
from nb2svc.runtime.manifest import Manifest, NotebookDescription, RequirementEntry, plain


@dataclass(frozen=True)
class BuildResult:
    service_dir: Path
    manifest: Manifest
    requirements: tuple[RequirementEntry, ...]
    lock: Lock
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "service_dir": str(self.service_dir),
            "seconds": round(self.seconds, 3),
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
) -> BuildResult:
    """Build the service directory for ``notebook`` at ``output`` (default ``<notebook name>_service``).

    ``examples`` maps endpoint names to extra ``data`` values recorded as examples;
    ``python_packages`` adds or overrides requirements; ``requirements_file`` replaces the
    observed ones. The directory appears only if every stage succeeded; an existing one is
    replaced only with ``force``. Raises an ``Nb2svcError`` subclass on failure.
    """
    started = time.perf_counter()
    lock_options = lock_options or LockOptions()
    spec = read_notebook(notebook)
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
    with staging_directory(target) as staging:
        copy_runtime(staging)
        with execute_notebook(
            spec, kernel_name=kernel_name, timeout=timeout, on_cell=on_cell, runtime_path=staging
        ) as executed:
            capture = capture_endpoints(
                executed, staging, {name: list(values) for name, values in (examples or {}).items()}
            )
        python_version = _python_version(capture.python_version, lock_options.python_version)
        observed = observe_requirements(capture, staging) if requirements_text is None else {}
        requirements = gather_requirements(capture, observed, python_packages, requirements_text)
        lock = lock_requirements(requirements, python_version, lock_options, capture.python_executable)
        origin = Origin(NotebookDescription(file=spec.path.name, sha256=spec.sha256), "build", executed.timings)
        manifest = render_service(staging, service_name(spec.path), origin, capture, requirements, lock)
        publish(staging, target, force)
    return BuildResult(
        service_dir=target,
        manifest=manifest,
        requirements=requirements,
        lock=lock,
        seconds=time.perf_counter() - started,
    )


def _python_version(kernel_version: str, requested: str | None) -> str:
    """The X.Y to lock for: the kernel's. Artifacts pickled by value load only on the Python minor that made them."""
    kernel_minor = ".".join(kernel_version.split(".")[:2])
    if requested and requested != kernel_minor:
        raise UsageError(
            f"--python-version {requested} differs from the kernel's Python {kernel_version}: functions pickled "
            f"by value load only on the Python minor version that pickled them. Run the notebook in a Python "
            f"{requested} kernel (--kernel NAME) to serve it on {requested}."
        )
    return kernel_minor
