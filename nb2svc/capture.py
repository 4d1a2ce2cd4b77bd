"""Stage 3: in the kernel that ran the notebook, serialize each endpoint and describe it as the manifest will."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2svc.errors import CaptureFailed
from nb2svc.execute import ExecutedNotebook
from nb2svc.kernel_side import capture as in_kernel, failures
from nb2svc.kernel_side.recording import Recording
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
        cells = {endpoint.name: endpoint.cell_number for endpoint in spec.endpoints}
        where = _InNotebook(spec.path.name, cells)
        raise _capture_failed(failures.from_json(answer["failure"]), where, f"the kernel {executed.kernel_name!r}")
    return _read_capture(answer["capture"])


def capture_function(function: Any, name: str, service_dir: Path, examples: list[Any]) -> Capture:
    """``function`` itself, in this process, as ``name``: for ``nb2svc.deploy``, in the notebook's own kernel.

    Its module's folder's local modules travel by value, as a notebook's do; ``examples`` are ``data`` values
    it is called with, as requests would, and recorded.
    """
    answer = in_kernel.capture_functions(
        {name: (function, 0, Recording())},
        str(service_dir),
        notebook_dir=os.getcwd(),
        extra_examples={name: examples},
        notebook_distributions={},  # no notebook run: what serving needs is observed from the function alone
        example_source="deploy",
    )
    if "failure" in answer:
        raise _capture_failed(failures.from_json(answer["failure"]), _Deployed(), "this Python")
    return _read_capture(answer["capture"])


def _read_capture(found: dict[str, Any]) -> Capture:
    """The kernel's JSON answer as a Capture: its keys are Capture's fields."""
    typed = {
        "endpoints": tuple(parse(EndpointDescription, endpoint) for endpoint in found["endpoints"]),
        "notebook_distributions": distributions_from(found["notebook_distributions"]),
    }
    return Capture(**{**found, **typed})


@dataclass(frozen=True)
class _InNotebook:
    """Where a built endpoint comes from, for messages: its cell."""

    notebook: str
    cells: dict[str, int]
    examples_option: str = "--example value"

    def describe(self, endpoint: str) -> str:
        return f"endpoint {endpoint!r} (cell {self.cells[endpoint]} of {self.notebook})"

    def details(self, endpoint: str) -> dict[str, Any]:
        return {"endpoint": endpoint, "cell": self.cells[endpoint]}


@dataclass(frozen=True)
class _Deployed:
    """Where a deployed function comes from, for messages: the call of nb2svc.deploy."""

    examples_option: str = "examples= value"

    def describe(self, endpoint: str) -> str:
        return f"the function deployed as {endpoint!r}"

    def details(self, endpoint: str) -> dict[str, Any]:
        return {"endpoint": endpoint}


def _capture_failed(failure: failures.Failure, where: _InNotebook | _Deployed, python: str) -> CaptureFailed:
    if isinstance(failure, failures.NoCloudpickle):
        return CaptureFailed(
            f"{python} ({failure.python}) cannot import cloudpickle, which serializes the endpoints. "
            f"Install it there: {failure.python} -m pip install cloudpickle",
            reason=failure.reason,
        )
    endpoint = failure.endpoint
    what, details = where.describe(endpoint), where.details(endpoint)
    if isinstance(failure, failures.ExampleFailed):
        return CaptureFailed(
            f"the example {json.dumps(failure.data)} for {what} failed when called: {failure.exception}. "
            f"Fix the {where.examples_option}, or the function.",
            reason=failure.reason,
            **details,
        )
    if isinstance(failure, failures.NotCallable):
        return CaptureFailed(
            f"{what} is no longer a function once the notebook has run (it holds {failure.type}): a later cell "
            "rebinds or deletes the name. Rename one of them.",
            reason=failure.reason,
            **details,
        )
    if isinstance(failure, failures.NotBatchable):
        return CaptureFailed(
            f"{what} is marked batchable but cannot take a batch: {failure.problem}. "
            "Use @nb2svc.batch on a function of one list (or DataFrame) parameter.",
            reason=failure.reason,
            **details,
        )
    return CaptureFailed(
        f"{what} cannot be serialized: it references {failure.variable!r}, a {failure.type}, which cannot be "
        f"pickled ({failure.exception}).\n"
        "Create it inside the function (or in a helper it calls) instead of at the top level, "
        "or stop the function from referencing it.",
        reason=failure.reason,
        variable=failure.variable,
        variable_type=failure.type,
        **details,
    )
