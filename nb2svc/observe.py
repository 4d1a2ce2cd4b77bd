"""What serving each endpoint imports, observed in a fresh interpreter of the kernel's Python."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from nb2svc.capture import Capture, Distribution, distributions_from
from nb2svc.errors import CaptureFailed
from nb2svc.fresh_python import FreshPython
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
    with start_observing(capture, service_dir) as observation:
        return observation.result()


def start_observing(capture: Capture, service_dir: Path) -> Observation:
    """``observe_requirements`` started now, in its fresh interpreter; ``result()`` waits for what it observed.

    The artifacts must be written (``capture_endpoints`` has returned): the builder can then let the kernel
    shut down while the fresh interpreter imports what loading them needs. Use it as a context manager, so
    that an observation whose result is not asked for (a failure meanwhile) is stopped.
    """
    request = {
        "task": "observe",
        "runtime_path": str(service_dir),
        "endpoints": [_endpoint_request(endpoint, service_dir) for endpoint in capture.endpoints],
    }
    return Observation(capture, FreshPython(capture.python_executable, request, "observing the artifacts' imports"))


class Observation:
    """An observation under way (``start_observing``)."""

    def __init__(self, capture: Capture, fresh: FreshPython) -> None:
        self._capture, self._fresh = capture, fresh

    def result(self) -> dict[RequirementReason, tuple[Distribution, ...]]:
        report = self._fresh.answer()
        if "error" in report:
            raise _cannot_load(self._capture, report["error"])
        machinery = set(report["kernel_machinery"]) | LOADED_BY_THE_RUNTIME_IN_THE_KERNEL
        observed = {
            IMPORTED_BY_THE_NOTEBOOK: tuple(
                d for d in self._capture.notebook_distributions if canonicalize_name(d.name) not in machinery
            )
        }
        for endpoint, steps in report["endpoints"].items():
            for step, found in steps.items():
                observed[_reason(step, endpoint)] = distributions_from(found)
        return observed

    def __enter__(self) -> Observation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._fresh.__exit__(*exc_info)


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
