"""Stage 3: in the kernel that ran the notebook, serialize each endpoint and observe what it needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2svc.errors import CaptureFailed
from nb2svc.execute import ExecutedNotebook


@dataclass(frozen=True)
class CapturedEndpoint:
    """An endpoint serialized with cloudpickle into ``artifact`` (relative to the service directory)."""

    name: str
    cell_number: int
    artifact: str
    sha256: str
    size: int
    signature: str
    parameters: tuple[dict[str, Any], ...]
    doc: str | None
    is_async: bool
    examples: tuple[dict[str, Any], ...]
    schema: dict[str, Any]
    dataframe: dict[str, Any] | None  # columns and dtypes of the DataFrames the notebook passed


@dataclass(frozen=True)
class Distribution:
    """An installed distribution, with the top-level modules through which it was seen imported."""

    name: str
    version: str
    modules: tuple[str, ...]


def distributions_from(found: dict[str, Any]) -> tuple[Distribution, ...]:
    """Distributions from the ``{name: {"version", "modules"}}`` the kernel-side scripts report."""
    return tuple(
        Distribution(name=name, version=entry["version"], modules=tuple(entry["modules"]))
        for name, entry in sorted(found.items())
    )


@dataclass(frozen=True)
class Capture:
    endpoints: tuple[CapturedEndpoint, ...]
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
    result = executed.kernel.call(
        "capture",
        endpoints=[endpoint.name for endpoint in spec.endpoints],
        artifacts_dir=str(service_dir / "artifacts"),
        notebook_dir=str(spec.directory),
        modules_at_start=list(executed.modules_at_start),
        extra_examples=extra_examples or {},
        runtime_path=str(service_dir),
    )
    if "error" in result:
        raise _capture_failed(executed, result["error"])
    cells = {endpoint.name: endpoint.cell_number for endpoint in spec.endpoints}
    return Capture(
        endpoints=tuple(_endpoint(found, cells[found["name"]]) for found in result["endpoints"]),
        python_version=result["python"]["version"],
        python_implementation=result["python"]["implementation"],
        python_executable=result["python"]["executable"],
        cloudpickle_version=result["cloudpickle"],
        notebook_distributions=distributions_from(result["distributions"]),
    )


def _endpoint(found: dict[str, Any], cell_number: int) -> CapturedEndpoint:
    return CapturedEndpoint(
        name=found["name"],
        cell_number=cell_number,
        artifact=found["artifact"],
        sha256=found["sha256"],
        size=found["bytes"],
        signature=found["signature"],
        parameters=tuple(found["parameters"]),
        doc=found["doc"],
        is_async=found.get("is_async", False),
        examples=tuple(found["examples"]),
        schema=found["schema"],
        dataframe=found.get("dataframe"),
    )


def _capture_failed(executed: ExecutedNotebook, error: dict[str, Any]) -> CaptureFailed:
    notebook = executed.spec.path.name
    reason = error["reason"]
    if reason == "no_cloudpickle":
        return CaptureFailed(
            f"the kernel {executed.kernel_name!r} ({error['python']}) cannot import cloudpickle, which "
            f"serializes the endpoints. Install it there: {error['python']} -m pip install cloudpickle",
            reason=reason,
        )
    endpoint = error["endpoint"]
    cell = next(e.cell_number for e in executed.spec.endpoints if e.name == endpoint)
    if reason == "example_failed":
        return CaptureFailed(
            f"the example {json.dumps(error['data'])} for endpoint {endpoint!r} (cell {cell} of {notebook}) "
            f"failed in the kernel: {error['exception']}. Fix the --example value, or the function.",
            reason=reason,
            endpoint=endpoint,
            cell=cell,
        )
    if reason == "not_callable":
        return CaptureFailed(
            f"endpoint {endpoint!r} (defined in cell {cell} of {notebook}) is no longer a function once the "
            f"notebook has run (it holds {error['type']}): a later cell rebinds or deletes the name. Rename one of them.",
            reason=reason,
            endpoint=endpoint,
            cell=cell,
        )
    return CaptureFailed(
        f"endpoint {endpoint!r} (cell {cell} of {notebook}) cannot be serialized: it references "
        f"{error['variable']!r}, a {error['type']}, which cannot be pickled ({error['exception']}).\n"
        "Create it inside the function (or in a helper it calls) instead of at the top level, "
        "or stop the endpoint from referencing it.",
        reason=reason,
        endpoint=endpoint,
        cell=cell,
        variable=error["variable"],
        variable_type=error["type"],
    )
