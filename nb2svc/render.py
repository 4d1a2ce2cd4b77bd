"""Stage 5: write the service directory, atomically."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nb2svc import __version__
from nb2svc.capture import Capture
from nb2svc.errors import OutputExists, UsageError
from nb2svc.execute import CellTiming
from nb2svc.locking import Lock
from nb2svc.runtime.manifest import (
    FILENAME,
    CellTime,
    EndpointDescription,
    Manifest,
    NotebookDescription,
    PythonDescription,
    RequirementEntry,
    Retarget,
    Source,
)
from nb2svc.targets import write_targets

PACKAGE = Path(__file__).resolve().parent


def check_output(output: Path, force: bool) -> None:
    """Refuse an existing ``output`` before any work is done, unless ``force``."""
    if output.exists() and not force:
        raise OutputExists(
            f"{output} already exists: pass --force to replace it, or -o to build elsewhere.", path=str(output)
        )


@contextlib.contextmanager
def staging_directory(output: Path) -> Iterator[Path]:
    """A temporary directory beside ``output``, removed unless it was published.

    Parent folders it had to create are removed again if the build fails.
    """
    created = [folder for folder in (output.parent, *output.parent.parents) if not folder.exists()]
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".nb2svc-build", dir=output.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not output.exists():
            for folder in created:  # deepest first
                with contextlib.suppress(OSError):
                    folder.rmdir()


def publish(staging: Path, output: Path, force: bool) -> None:
    """Move the finished ``staging`` directory to ``output``; the old one goes only once the new one is there."""
    check_output(output, force)
    staging.chmod(0o755)  # mkdtemp made it private
    if not output.exists():
        staging.rename(output)
        return
    retired = output.with_name(f".{output.name}.nb2svc-old")
    shutil.rmtree(retired, ignore_errors=True)
    output.rename(retired)
    try:
        staging.rename(output)
    except OSError:
        retired.rename(output)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def copy_runtime(staging: Path) -> None:
    """The service's runtime, first of all: the kernel records examples with it."""
    shutil.copytree(PACKAGE / "runtime", staging / "nb2svc_runtime", ignore=shutil.ignore_patterns("__pycache__"))


def render_service(
    staging: Path,
    name: str,
    origin: Origin,
    capture: Capture,
    requirements: tuple[RequirementEntry, ...],
    lock: Lock,
    retarget: Retarget | None = None,
) -> Manifest:
    """Write everything but the runtime and the artifacts (already there) into ``staging``."""
    manifest = build_manifest(name, origin, capture, requirements, lock, retarget)
    (staging / "requirements.in").write_text(lock.requirements_in, encoding="utf-8")
    (staging / "requirements.txt").write_text(lock.requirements_txt, encoding="utf-8")
    write_description(staging, manifest)
    return manifest


def write_description(staging: Path, manifest: Manifest) -> None:
    """The manifest, and the files made from it (app.py, Dockerfile, README.md)."""
    (staging / FILENAME).write_text(manifest.to_json(), encoding="utf-8")
    write_targets(staging, manifest)


@dataclass(frozen=True)
class Origin:
    """Where the endpoints come from: a notebook run by ``nb2svc build``, or ``nb2svc.deploy`` in a live session."""

    notebook: NotebookDescription
    source: Source = "build"
    cells: tuple[CellTiming, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)  # the overrides injected, as given


def build_manifest(
    name: str,
    origin: Origin,
    capture: Capture,
    requirements: tuple[RequirementEntry, ...],
    lock: Lock,
    retarget: Retarget | None = None,
) -> Manifest:
    """The one contract between the builder and the service runtime."""
    return Manifest(
        name=name,
        version=model_version(capture.endpoints),
        nb2svc_version=__version__,
        built_at=build_time().isoformat(timespec="seconds"),
        notebook=origin.notebook,
        source=origin.source,
        python=PythonDescription(
            version=capture.python_version, minor=lock.python_version, implementation=capture.python_implementation
        ),
        cloudpickle_version=capture.cloudpickle_version,
        endpoints=capture.endpoints,
        requirements=requirements,
        lock=lock.description(),
        cells=tuple(CellTime(cell=t.number, seconds=t.seconds) for t in origin.cells),
        retarget=retarget,
        parameters=dict(origin.parameters),
    )


def build_time() -> datetime:
    """Now, or ``SOURCE_DATE_EPOCH`` where it is set (reproducible-builds.org's variable): with it, two builds of
    the same inputs differ only in how long their cells took."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        return datetime.now(timezone.utc)
    if not epoch.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH={epoch!r} is not a number of seconds since 1970-01-01 UTC")
    return datetime.fromtimestamp(int(epoch), timezone.utc)


def model_version(endpoints: tuple[EndpointDescription, ...]) -> str:
    """The model's version: a digest of its artifacts, so that it changes exactly when they do."""
    digests = "".join(sorted(endpoint.sha256 for endpoint in endpoints))
    return hashlib.sha256(digests.encode()).hexdigest()[:12]


def service_name(notebook: Path) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in notebook.stem).strip("-") or "service"
