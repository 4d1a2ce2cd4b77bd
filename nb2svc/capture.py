"""Stage 3: in the kernel that ran the notebook, serialize each endpoint and describe it as the manifest will."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2svc.errors import CaptureFailed
from nb2svc.execute import ExecutedNotebook
from nb2svc.kernel_side import capture as in_kernel, failures
from nb2svc.runtime.manifest import EndpointDescription, parse


@dataclass(frozen=True)
class Distribution:
    """An installed distribution, with the top-level modules through which it was seen imported."""

    name: str
    version: str
    modules: tuple[str, ...]


def distributions_from(found: dict[str, Any]) -> tuple[Distribution, ...]:
    """Distributions from the ``{name: {"version", "modules"}}`` of ``in_fresh_python.distributions``."""
    return tuple(
        Distribution(name=name, version=entry["version"], modules=tuple(entry["modules"]))
        for name, entry in sorted(found.items())
    )


@dataclass(frozen=True)
class Capture:
    endpoints: tuple[EndpointDescription, ...]  # as the manifest describes them; their artifacts are written
    python_version: str
    python_implementation: str
    python_executable: str
    cloudpickle_version: str
    notebook_distributions: tuple[Distribution, ...]  # what the notebook's cells imported, in the kernel


def capture_endpoints(
    executed: ExecutedNotebook, service_dir: Path, extra_examples: dict[str, list[Any]] | None = None
) -> Capture:
    """Write ``artifacts/<name>.pkl`` for every endpoint under ``service_dir`` and describe them.

    ``service_dir`` must already hold the service's ``nb2svc_runtime`` (see ``render.copy_runtime``).

    ``extra_examples`` maps endpoint names to ``data`` values to record as examples besides the
    calls the notebook itself made.
    """
    spec = executed.spec
    answer = executed.kernel.call(
        in_kernel.capture,
        endpoints={endpoint.name: endpoint.cell_number for endpoint in spec.endpoints},
        service_dir=str(service_dir),
        notebook_dir=str(spec.directory),
        modules_at_start=list(executed.modules_at_start),
        extra_examples=extra_examples or {},
    )
    if "failure" in answer:
        raise _capture_failed(executed, failures.from_json(answer["failure"]))
    return _read_capture(answer["capture"])


def _read_capture(found: dict[str, Any]) -> Capture:
    """The kernel's JSON answer as a Capture: its keys are Capture's fields."""
    typed = {
        "endpoints": tuple(parse(EndpointDescription, endpoint) for endpoint in found["endpoints"]),
        "notebook_distributions": distributions_from(found["notebook_distributions"]),
    }
    return Capture(**{**found, **typed})


def _capture_failed(executed: ExecutedNotebook, failure: failures.Failure) -> CaptureFailed:
    notebook = executed.spec.path.name
    if isinstance(failure, failures.NoCloudpickle):
        return CaptureFailed(
            f"the kernel {executed.kernel_name!r} ({failure.python}) cannot import cloudpickle, which "
            f"serializes the endpoints. Install it there: {failure.python} -m pip install cloudpickle",
            reason=failure.reason,
        )
    endpoint = failure.endpoint
    cell = next(e.cell_number for e in executed.spec.endpoints if e.name == endpoint)
    if isinstance(failure, failures.ExampleFailed):
        return CaptureFailed(
            f"the example {json.dumps(failure.data)} for endpoint {endpoint!r} (cell {cell} of {notebook}) "
            f"failed in the kernel: {failure.exception}. Fix the --example value, or the function.",
            reason=failure.reason,
            endpoint=endpoint,
            cell=cell,
        )
    if isinstance(failure, failures.NotCallable):
        return CaptureFailed(
            f"endpoint {endpoint!r} (defined in cell {cell} of {notebook}) is no longer a function once the "
            f"notebook has run (it holds {failure.type}): a later cell rebinds or deletes the name. "
            "Rename one of them.",
            reason=failure.reason,
            endpoint=endpoint,
            cell=cell,
        )
    if isinstance(failure, failures.NotBatchable):
        return CaptureFailed(
            f"endpoint {endpoint!r} (cell {cell} of {notebook}) is marked batchable but cannot take a batch: "
            f"{failure.problem}. Use @nb2svc.batch on a function of one list (or DataFrame) parameter.",
            reason=failure.reason,
            endpoint=endpoint,
            cell=cell,
        )
    return CaptureFailed(
        f"endpoint {endpoint!r} (cell {cell} of {notebook}) cannot be serialized: it references "
        f"{failure.variable!r}, a {failure.type}, which cannot be pickled ({failure.exception}).\n"
        "Create it inside the function (or in a helper it calls) instead of at the top level, "
        "or stop the endpoint from referencing it.",
        reason=failure.reason,
        endpoint=endpoint,
        cell=cell,
        variable=failure.variable,
        variable_type=failure.type,
    )
