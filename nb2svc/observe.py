"""What serving each endpoint imports, observed in a fresh interpreter of the kernel's Python."""

from __future__ import annotations

import json
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from nb2svc.capture import Capture, CapturedEndpoint, Distribution, distributions_from
from packaging.utils import canonicalize_name

from nb2svc.errors import CaptureFailed

_REASONS = {
    "loading": "loading {endpoint}",
    "import_statements": "an import statement in {endpoint}",
    "examples": "calling {endpoint} on its examples",
}
_SCRIPT = (resources.files("nb2svc") / "in_fresh_python.py").read_text(encoding="utf-8")


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
    with tempfile.TemporaryDirectory(prefix="nb2svc-observe-") as empty:  # nothing importable from the cwd
        done = subprocess.run(
            [capture.python_executable, "-c", _SCRIPT],
            input=json.dumps(request), capture_output=True, text=True, cwd=empty,
        )
    if done.returncode != 0:
        raise RuntimeError(f"observing the artifacts' imports failed:\n{done.stderr[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
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
