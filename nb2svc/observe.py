"""What serving each endpoint imports, observed in a fresh interpreter of the kernel's Python."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nb2svc.capture import Capture, CapturedEndpoint, Distribution, distributions_from
from packaging.utils import canonicalize_name

from nb2svc.errors import CaptureFailed
from nb2svc.fresh_python import run_in_fresh_python

_REASONS = {
    "loading": "loading {endpoint}",
    "import_statements": "an import statement in {endpoint}",
    "examples": "calling {endpoint} on its examples",
}


def observe_requirements(capture: Capture, service_dir: Path) -> dict[str, tuple[Distribution, ...]]:
    """The distributions the service needs, keyed by why ("imported by the notebook", "loading my_fn"...).

    What the notebook imported in the kernel counts, less the kernel's own machinery (IPython loads
    parts of it lazily, for magics and ``!shell`` lines). Then, in a new interpreter of the kernel's
    Python, every artifact is loaded, the import statements of its code are read, and it is called
    on its examples, recording the distributions each step brought in.
    """
    request = {
        "task": "observe",
        "runtime_path": str(service_dir),
        "endpoints": [_endpoint_request(endpoint, service_dir) for endpoint in capture.endpoints],
    }
    report = run_in_fresh_python(capture.python_executable, request, "observing the artifacts' imports")
    if "error" in report:
        raise _cannot_load(capture, report["error"])
    machinery = set(report["kernel_machinery"])
    observed = {
        "imported by the notebook": tuple(
            d for d in capture.notebook_distributions if canonicalize_name(d.name) not in machinery
        )
    }
    for endpoint, sources in report["endpoints"].items():
        for source, found in sources.items():
            observed[_REASONS[source].format(endpoint=endpoint)] = distributions_from(found)
    return observed


def _endpoint_request(endpoint: CapturedEndpoint, service_dir: Path) -> dict[str, Any]:
    return {
        "name": endpoint.name,
        "artifact": str(service_dir / endpoint.artifact),
        "examples": [example["request"]["data"] for example in endpoint.examples],
        "dataframe": endpoint.dataframe,
    }


def _cannot_load(capture: Capture, error: dict[str, str]) -> CaptureFailed:
    endpoint = error["endpoint"]
    return CaptureFailed(
        f"endpoint {endpoint!r} was serialized but does not load in a fresh Python ({capture.python_executable}): "
        f"{error['exception']}. It references something by import that a fresh interpreter cannot import "
        "(a module on a path the notebook added to sys.path?). Keep such modules beside the notebook, or "
        "install them as packages.",
        reason="does_not_load",
        endpoint=endpoint,
    )
