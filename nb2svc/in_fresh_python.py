"""Run by the builder in a fresh interpreter of the kernel's Python, to learn about that environment.

Like nb2svc's kernel-side code this is sent as source text (``python -c``) and may use only
the standard library, cloudpickle, and packaging where it is installed. It
reads one JSON request on stdin and prints one JSON object:

- ``{"task": "observe", "runtime_path": DIR, "endpoints": [{"name", "artifact", "examples": [data, ...],
  "recorded_frame": {"columns", "dtypes"} or null}]}``:
  for each endpoint, the distributions that loading it, its code's own import
  statements, and calling it on its examples (through the service's own
  nb2svc_runtime in DIR) brought in; and the kernel's own machinery (ipykernel
  and all it requires);
- ``{"task": "replay", "runtime_path": DIR, "endpoints": [{"name", "artifact", "examples", "recorded_frame"}]}``:
  each endpoint's examples answered by its artifact, as the service answers them;
- ``{"task": "closure", "names": [...]}``: those distributions and everything they
  require, recursively, at their installed versions (for an offline lock).

``top_level`` and ``distributions`` are sent into the kernel too (kernel_side/loaded.py): which
distribution provides a module is said here only.
"""

from __future__ import annotations

import dis
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import pickle
import re
import sys
import types
from collections.abc import Iterable, Mapping
from typing import Any


def main() -> None:
    request = json.load(sys.stdin)
    if request["task"] == "closure":
        print(json.dumps(_closure(request["names"])))
    elif request["task"] == "replay":
        print(json.dumps(_replay(request)))
    else:
        _observe(request)


def _closure(names: list[str]) -> dict[str, Any]:
    requirement_names = _requirement_names()
    pins: dict[str, str] = {}
    missing: list[str] = []
    pending, seen = list(names), set()
    while pending:
        name = _canonical(pending.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        pins[name] = distribution.version
        pending += requirement_names(distribution.requires or [])
    return {"pins": pins, "missing": sorted(missing)}


def _requirement_names() -> Any:
    """A function from requirement strings to the names that apply here (markers evaluated, extras left out)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return lambda specs: [re.split(r"[^A-Za-z0-9._-]", spec, maxsplit=1)[0] for spec in specs if ";" not in spec]

    def applicable(specs: list[str]) -> list[str]:
        parsed = [Requirement(spec) for spec in specs]
        return [r.name for r in parsed if r.marker is None or r.marker.evaluate({"extra": ""})]

    return applicable


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _observe(request: dict[str, Any]) -> None:
    providers = packages_distributions()
    sys.path.append(request["runtime_path"])
    from nb2svc_runtime import (
        endpoint as runtime_endpoint,  # what the service calls its endpoints with
        invoke,
        manifest,
    )

    _import_the_services_own_needs()
    report = {}
    for endpoint in request["endpoints"]:
        before = set(sys.modules)
        try:
            with open(endpoint["artifact"], "rb") as file:
                function = pickle.load(file)
        except Exception as exc:
            print(json.dumps({"error": {"endpoint": endpoint["name"], "exception": f"{type(exc).__name__}: {exc}"}}))
            return
        loaded = top_level(set(sys.modules) - before)
        before = set(sys.modules)
        frame = endpoint.get("recorded_frame")
        invoker = runtime_endpoint.invoker_for(
            function, manifest.parse(manifest.RecordedFrame, frame) if frame else None
        )
        for data in endpoint["examples"]:
            try:
                invoke.answer(invoker, data)
            except Exception:  # the comparison of answers is verify's job; here only imports matter
                pass
        called = top_level(set(sys.modules) - before)
        report[endpoint["name"]] = {
            "loading": distributions(loaded, providers),
            "import_statements": distributions(_imported_by_code(function), providers),
            "examples": distributions(called, providers),
        }
    print(json.dumps({"endpoints": report, "kernel_machinery": sorted(_closure(["ipykernel"])["pins"])}))


def _replay(request: dict[str, Any]) -> dict[str, Any]:
    """Each endpoint's examples answered by its artifact as the service answers them (its runtime, its encoding):
    ``{"answers": {name: [{"response": {...}} or {"error": "Type: message"}, ...]}}``."""
    sys.path.append(request["runtime_path"])
    from nb2svc_runtime import encoding, endpoint as runtime_endpoint, errors, invoke, manifest

    answers: dict[str, list[dict[str, Any]]] = {}
    for endpoint in request["endpoints"]:
        try:
            with open(endpoint["artifact"], "rb") as file:
                function = pickle.load(file)
            frame = endpoint.get("recorded_frame")
            invoker = runtime_endpoint.invoker_for(
                function, manifest.parse(manifest.RecordedFrame, frame) if frame else None
            )
        except Exception as exc:  # every example fails, saying why
            failed = {"error": f"its artifact did not load: {type(exc).__name__}: {exc}"}
            answers[endpoint["name"]] = [failed for _ in endpoint["examples"]]
            continue
        answered = answers[endpoint["name"]] = []
        for data in endpoint["examples"]:
            try:
                answered.append({"response": json.loads(encoding.encode_json(invoke.answer(invoker, data)))})
            except Exception as exc:
                raised = exc.error if isinstance(exc, errors.CallFailed) else exc
                answered.append({"error": f"{type(raised).__name__}: {raised}"})
    return {"answers": answers}


def _import_the_services_own_needs() -> None:
    """Import first what the service imports anyway, so that no endpoint is said to need it: cloudpickle
    (loading any artifact imports it) and fastjsonschema (the runtime validates requests with it)."""
    for name in ("cloudpickle", "fastjsonschema"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def packages_distributions() -> dict[str, list[str]]:
    """The distributions that provide each top-level module, as Python 3.11's ``importlib.metadata`` says: from
    ``top_level.txt``, else from the files a distribution installed (3.10 reads only ``top_level.txt``, which
    wheels built by meson-python, numpy's and scikit-learn's, do not have)."""
    found: dict[str, list[str]] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        top = (distribution.read_text("top_level.txt") or "").split() or _inferred_top_level(distribution)
        for module in top:
            found.setdefault(module, []).append(name)
    return found


def _inferred_top_level(distribution: Any) -> list[str]:
    names = set()
    for path in distribution.files or ():
        parts = path.parts
        if len(parts) > 1 and "." not in parts[0]:  # a package's folder (not foo.dist-info, not ../../bin)
            names.add(parts[0])
        elif len(parts) == 1 and path.suffix in (".py", ".so", ".pyd"):  # a top-level module
            names.add(parts[0].split(".")[0])
    return sorted(names)


def top_level(modules: Iterable[str]) -> set[str]:
    """The top-level packages of ``modules``: ``sklearn`` for ``sklearn.linear_model``."""
    return {name.partition(".")[0] for name in modules}


def distributions(modules: set[str], providers: Mapping[str, list[str]]) -> dict[str, dict[str, Any]]:
    """The installed distributions that provide the top-level ``modules`` (the standard library left out), with the
    modules each provides: ``{name: {"version", "modules"}}``. ``providers`` is ``packages_distributions()``'s."""
    found: dict[str, dict[str, Any]] = {}
    for top in sorted(modules - set(sys.stdlib_module_names)):
        for name in providers.get(top, ()):
            entry = found.setdefault(name, {"version": importlib.metadata.version(name), "modules": []})
            entry["modules"].append(top)
    return found


def _imported_by_code(function: Any) -> set[str]:
    """Top-level modules named by import statements in the endpoint and the notebook code it references."""
    names: set[str] = set()
    pending, seen = [function], set()
    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if inspect.isclass(obj) and obj.__module__ == "__main__":
            pending += [member for member in vars(obj).values() if inspect.isfunction(member)]
        elif inspect.isfunction(obj):
            names |= _imports_in(obj.__code__)
            pending += [
                obj.__globals__[name]
                for name in obj.__code__.co_names
                if name in obj.__globals__ and _defined_in_notebook(obj.__globals__[name])
            ]
        elif _defined_in_notebook(type(obj)):  # an instance of a notebook class
            pending.append(type(obj))
    return {name for name in names if name and _installed(name)}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _defined_in_notebook(obj: Any) -> bool:
    return getattr(obj, "__module__", None) == "__main__"


def _imports_in(code: types.CodeType) -> set[str]:
    found = {ins.argval.partition(".")[0] for ins in dis.get_instructions(code) if ins.opname == "IMPORT_NAME"}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _imports_in(const)
    return found


if __name__ == "__main__":  # run by ``python -c``; in the kernel, a module
    main()
