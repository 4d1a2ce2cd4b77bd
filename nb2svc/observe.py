"""What serving each endpoint imports, observed in a fresh interpreter of the kernel's Python."""

from __future__ import annotations

import json
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from nb2svc.capture import Capture, CapturedEndpoint, Distribution
from nb2svc.errors import CaptureFailed
from nb2svc.runtime.envelope import Batch, parse_request

_REASONS = {
    "loading": "loading {endpoint}",
    "import_statements": "an import statement in {endpoint}",
    "examples": "calling {endpoint} on its examples",
}
_SCRIPT = (resources.files("nb2svc") / "in_fresh_python.py").read_text(encoding="utf-8")


def observe_serving_imports(capture: Capture, service_dir: Path) -> dict[str, tuple[Distribution, ...]]:
    """Distributions each endpoint needs, keyed by why ("loading my_fn", "calling my_fn on its examples"...).

    Loads every artifact in a new interpreter (the kernel's), reads the import
    statements of its code, and calls it on its examples, recording the
    distributions each step brought in.
    """
    request = {"task": "observe", "endpoints": [_endpoint_request(endpoint, service_dir) for endpoint in capture.endpoints]}
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
    observed: dict[str, tuple[Distribution, ...]] = {}
    for endpoint, sources in report["endpoints"].items():
        for source, found in sources.items():
            observed[_REASONS[source].format(endpoint=endpoint)] = tuple(
                Distribution(name=name, version=entry["version"], modules=tuple(entry["modules"]))
                for name, entry in sorted(found.items())
            )
    return observed


def _endpoint_request(endpoint: CapturedEndpoint, service_dir: Path) -> dict[str, Any]:
    parameters = frozenset(p["name"] for p in endpoint.parameters)
    calls: list[list[Any]] = []
    for example in endpoint.examples:
        parsed = parse_request(json.dumps(example["request"]).encode(), parameters)
        if isinstance(parsed, Batch):
            calls += [[row[1:], {}] for row in parsed.rows]
        else:
            calls.append([list(parsed.args), parsed.kwargs])
    return {"name": endpoint.name, "artifact": str(service_dir / endpoint.artifact), "calls": calls}


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
