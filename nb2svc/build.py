"""The build pipeline: notebook -> execute -> capture -> pin -> render, each stage one call."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2svc.capture import capture_endpoints
from nb2svc.execute import OnCell, execute_notebook
from nb2svc.notebook import read_notebook
from nb2svc.render import check_output, publish, render_service, service_name, staging_directory
from nb2svc.requirements import Pin, pin_requirements


@dataclass(frozen=True)
class BuildResult:
    service_dir: Path
    manifest: dict[str, Any]
    requirements: tuple[Pin, ...]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "service_dir": str(self.service_dir),
            "seconds": round(self.seconds, 3),
            "requirements": [str(pin) for pin in self.requirements],
            "manifest": self.manifest,
        }


def build(
    notebook: str | Path,
    output: str | Path | None = None,
    *,
    force: bool = False,
    kernel_name: str | None = None,
    timeout: float | None = None,
    on_cell: OnCell | None = None,
) -> BuildResult:
    """Build the service directory for ``notebook`` at ``output`` (default ``<notebook name>_service``).

    The directory appears only if every stage succeeded; an existing one is
    replaced only with ``force``. Raises an ``Nb2svcError`` subclass on failure.
    """
    started = time.perf_counter()
    spec = read_notebook(notebook)
    target = Path(output) if output is not None else Path(f"{service_name(spec.path)}_service")
    target = target.resolve()
    check_output(target, force)
    with staging_directory(target) as staging:
        with execute_notebook(spec, kernel_name=kernel_name, timeout=timeout, on_cell=on_cell) as executed:
            capture = capture_endpoints(executed, staging)
        pins = pin_requirements(capture)
        manifest = render_service(staging, spec, capture, pins, executed.timings)
        publish(staging, target, force)
    return BuildResult(
        service_dir=target, manifest=manifest, requirements=pins, seconds=time.perf_counter() - started
    )
