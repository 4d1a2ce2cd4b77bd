"""What serving each endpoint imports, observed in a fresh interpreter of the kernel's Python."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from nb2svc.capture import Capture, Distribution, distributions_from
from nb2svc.errors import CaptureFailed
from nb2svc.fresh_python import run_in_fresh_python
from nb2svc.kernel_side.failures import DOES_NOT_LOAD
from nb2svc.runtime.manifest import EndpointDescription, ReasonSource, RequirementReason, plain

IMPORTED_BY_THE_NOTEBOOK = RequirementReason("notebook", "imported by the notebook")
# Distributions the runtime's own modules import where they are installed: the kernel loads them after its
# snapshot of modules, when it records the notebook's calls with the runtime's encoding, so they are never the
# notebook's (the runtime requires them anyway, at the builder's version).
LOADED_BY_THE_RUNTIME_IN_THE_KERNEL = frozenset({"orjson"})
# What in_fresh_python.py reports per endpoint: the source of the reason, and its words.
_REASONS: dict[str, tuple[ReasonSource, str]] = {
    "loading": ("artifact_load", "loading {endpoint}"),
    "import_statements": ("import_statement", "an import statement in {endpoint}"),
    "examples": ("example_call", "calling {endpoint} on its examples"),
}


def observe_requirements(capture: Capture, service_dir: Path) -> dict[RequirementReason, tuple[Distribution, ...]]:
    """The distributions the service needs, keyed by why: ``RequirementReason("artifact_load", "loading my_fn")``...

    What the notebook imported in the kernel counts, less the kernel's own machinery (IPython loads
    parts of it lazily, for magics and ``!shell`` lines) and what the runtime loaded there. Then, in a
    new interpreter of the kernel's Python, every artifact is loaded, the import statements of its code
    are read, and it is called on its examples, recording the distributions each step brought in.
    """
    request = {
        "task": "observe",
        "runtime_path": str(service_dir),
        "endpoints": [_endpoint_request(endpoint, service_dir) for endpoint in capture.endpoints],
    }
    report = run_in_fresh_python(capture.python_executable, request, "observing the artifacts' imports")
    if "error" in report:
        raise _cannot_load(capture, report["error"])
    machinery = set(report["kernel_machinery"]) | LOADED_BY_THE_RUNTIME_IN_THE_KERNEL
    observed = {
        IMPORTED_BY_THE_NOTEBOOK: tuple(
            d for d in capture.notebook_distributions if canonicalize_name(d.name) not in machinery
        )
    }
    for endpoint, steps in report["endpoints"].items():
        for step, found in steps.items():
            observed[_reason(step, endpoint)] = distributions_from(found)
    return observed


def _reason(step: str, endpoint: str) -> RequirementReason:
    source, text = _REASONS[step]
    return RequirementReason(source, text.format(endpoint=endpoint))


def _endpoint_request(endpoint: EndpointDescription, service_dir: Path) -> dict[str, Any]:
    return {
        "name": endpoint.name,
        "artifact": str(service_dir / endpoint.artifact),
        "examples": [example.request["data"] for example in endpoint.examples],
        "recorded_frame": plain(endpoint.recorded_frame),
    }


def _cannot_load(capture: Capture, error: dict[str, str]) -> CaptureFailed:
    endpoint = error["endpoint"]
    return CaptureFailed(
        f"endpoint {endpoint!r} was serialized but does not load in a fresh Python ({capture.python_executable}): "
        f"{error['exception']}. It references something by import that a fresh interpreter cannot import "
        "(a module on a path the notebook added to sys.path?). Keep such modules beside the notebook, or "
        "install them as packages.",
        reason=DOES_NOT_LOAD,
        endpoint=endpoint,
    )
