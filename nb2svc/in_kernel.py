"""Code that runs inside the notebook's kernel, after the notebook's cells.

This file is sent to the kernel as source text, never imported there: the
kernel's environment may not have nb2svc installed. It may use only the
standard library, IPython (which every Python kernel has) and cloudpickle.
Its functions return JSON-able values; failures come back as
``{"error": {...}}`` for the builder to turn into an nb2svc error.

The builder runs it with two globals set: ``ARGUMENTS`` (the call's keyword
arguments) and ``RUNTIME_SOURCES`` (the source of nb2svc_runtime's encoding.py
and envelope.py, so that examples are read and encoded exactly as the service
will read and encode them).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import functools
import inspect
import json
import math
import os
import sys
import types
from typing import Any

RUNTIME_SOURCES: dict[str, str]  # set by the builder in the namespace this file runs in
_MAX_DEPTH = 6
MAX_EXAMPLES = 10  # per endpoint: the first distinct calls the notebook makes
RESULT_MIME = "application/vnd.nb2svc.result+json"


def _emit(result: Any) -> None:
    """Hand ``result`` to the builder as a display output of the cell that called it."""
    from IPython.display import display

    display({RESULT_MIME: result}, raw=True)


def loaded_modules() -> list[str]:
    """The modules loaded in the kernel right now."""
    return sorted(sys.modules)


def record_calls(names: list[str]) -> None:
    """Wrap the endpoints ``names`` so that the calls later cells make are recorded as examples.

    ``capture`` takes the wrappers off again before it serializes the functions.
    """
    from IPython import get_ipython

    namespace = get_ipython().user_ns
    encoding = _runtime_module("encoding")
    for name in names:
        function = namespace.get(name)
        if callable(function) and not inspect.iscoroutinefunction(function) and not hasattr(function, "_nb2svc_examples"):
            namespace[name] = _recorder(function, encoding)


def _runtime_module(name: str) -> types.ModuleType:
    """A module of nb2svc_runtime that uses only the standard library, from the source the builder sent."""
    module_name = f"_nb2svc_runtime_{name}"
    if module_name not in sys.modules:
        module = types.ModuleType(module_name)
        sys.modules[module_name] = module  # dataclasses look their module up there
        exec(compile(RUNTIME_SOURCES[name], f"nb2svc_runtime/{name}.py", "exec"), module.__dict__)  # noqa: F821
    return sys.modules[module_name]


def _recorder(function: Any, encoding: types.ModuleType) -> Any:
    examples: list[dict[str, Any]] = []
    active: list[bool] = []  # a call in progress: the endpoint calling itself is not another example

    @functools.wraps(function)
    def recorder(*args: Any, **kwargs: Any) -> Any:
        if active or len(examples) >= MAX_EXAMPLES:
            return function(*args, **kwargs)
        request = _request_body(function, args, kwargs)  # taken before the call, which may mutate its arguments
        active.append(True)
        try:
            result = function(*args, **kwargs)
        finally:
            active.pop()
        if request is not None and all(example["request"] != request for example in examples):
            response = _response_body(request, result, encoding)
            if response is not None:
                examples.append({"request": request, "response": response})
        return result

    recorder._nb2svc_examples = examples  # type: ignore[attr-defined]
    return recorder


def _request_body(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The request the service reads as this call, or None if JSON cannot express it unchanged."""
    if not (_plain_json(list(args)) and _plain_json(kwargs)):
        return None
    parameters = set(inspect.signature(function).parameters)
    if kwargs and not args:
        return {"data": kwargs}
    if args and not kwargs:
        [first, *rest] = args
        reads_as_batch = isinstance(first, list) and first and isinstance(first[0], list)
        reads_as_keywords = isinstance(first, dict) and first and parameters.issuperset(first)
        if rest or reads_as_batch or reads_as_keywords:
            return {"data": [[0, *args]]}
        return {"data": first}
    return None


def _response_body(request: Any, result: Any, encoding: types.ModuleType) -> Any:
    data = request["data"]
    is_batch = isinstance(data, list) and data and isinstance(data[0], list)
    try:
        return json.loads(encoding.encode_json({"data": [[0, result]] if is_batch else result}))
    except encoding.EncodeError:
        return None


def _plain_json(value: Any) -> bool:
    """True if ``value`` is made only of JSON's own types, so it survives a round trip unchanged."""
    kind = type(value)
    if value is None or kind in (str, bool, int):
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_plain_json(item) for item in value)
    if kind is dict:
        return all(type(key) is str and _plain_json(item) for key, item in value.items())
    return False


def capture(
    endpoints: list[str],
    artifacts_dir: str,
    notebook_dir: str,
    modules_at_start: list[str],
    extra_examples: dict[str, list[Any]],
) -> dict[str, Any]:
    """Serialize each endpoint into ``artifacts_dir``; describe them, their examples, and what the notebook imported.

    ``extra_examples`` maps endpoint names to ``data`` values to call them with, as requests would.
    """
    imported = _top_level(sys.modules) - _top_level(modules_at_start)
    try:
        import cloudpickle
    except ImportError:
        return {"error": {"reason": "no_cloudpickle", "python": sys.executable}}
    from IPython import get_ipython

    namespace = get_ipython().user_ns
    _pickle_local_modules_by_value(cloudpickle, notebook_dir)
    described = []
    for name in endpoints:
        function = namespace.get(name)
        examples = list(getattr(function, "_nb2svc_examples", ()))
        if hasattr(function, "_nb2svc_examples"):  # take the recorder off: the function itself is served
            function = namespace[name] = function.__wrapped__
        if not callable(function):
            return {"error": {"reason": "not_callable", "endpoint": name, "type": _type_name(function)}}
        try:
            examples = [{**example, "source": "notebook"} for example in examples]
            examples += [_run_example(function, data) for data in extra_examples.get(name, [])]
        except ExampleFailed as failed:
            return {"error": {"reason": "example_failed", "endpoint": name, **failed.args[0]}}
        try:
            payload = cloudpickle.dumps(function)
        except Exception as exc:  # cloudpickle raises TypeError, PicklingError, RecursionError...
            return {"error": _unpicklable(cloudpickle, name, function, exc)}
        described.append({**_write_artifact(name, function, payload, artifacts_dir), "examples": examples})
    return {
        "endpoints": described,
        "python": {
            "version": ".".join(map(str, sys.version_info[:3])),
            "implementation": sys.implementation.name,
            "executable": sys.executable,
        },
        "cloudpickle": cloudpickle.__version__,
        "distributions": _distributions(imported - set(sys.stdlib_module_names) - {"__main__"}),
    }


class ExampleFailed(Exception):
    """An example given on the command line could not be run."""


def _run_example(function: Any, data: Any) -> dict[str, Any]:
    """Call ``function`` as the service would for ``{"data": data}``, and record the answer."""
    envelope, encoding = _runtime_module("envelope"), _runtime_module("encoding")
    request = {"data": data}
    parameters = frozenset(inspect.signature(function).parameters)
    try:
        parsed = envelope.parse_request(json.dumps(request).encode(), parameters)
        if isinstance(parsed, envelope.Batch):
            result = [[row[0], function(*row[1:])] for row in parsed.rows]
        else:
            result = function(*parsed.args, **parsed.kwargs)
        response = json.loads(encoding.encode_json({"data": result}))
    except Exception as exc:
        raise ExampleFailed({"data": data, "exception": f"{type(exc).__name__}: {exc}"}) from None
    return {"request": request, "response": response, "source": "command line"}


def _write_artifact(name: str, function: Any, payload: bytes, artifacts_dir: str) -> dict[str, Any]:
    os.makedirs(artifacts_dir, exist_ok=True)
    with open(os.path.join(artifacts_dir, f"{name}.pkl"), "wb") as file:
        file.write(payload)
    return {
        "name": name,
        "artifact": f"artifacts/{name}.pkl",
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
        **_describe(function),
    }


def _describe(function: Any) -> dict[str, Any]:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return {"signature": "(*args, **kwargs)", "parameters": [], "doc": inspect.getdoc(function)}
    return {
        "signature": str(signature),
        "parameters": [_parameter(p) for p in signature.parameters.values()],
        "doc": inspect.getdoc(function),
        "is_async": inspect.iscoroutinefunction(function),
    }


def _parameter(parameter: inspect.Parameter) -> dict[str, Any]:
    described: dict[str, Any] = {"name": parameter.name, "kind": parameter.kind.name.lower()}
    if parameter.annotation is not inspect.Parameter.empty:
        annotation = parameter.annotation
        described["annotation"] = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
    if parameter.default is not inspect.Parameter.empty:
        try:
            json.dumps(parameter.default)
            described["default"] = parameter.default
        except (TypeError, ValueError):
            described["default_repr"] = repr(parameter.default)
    return described


def _pickle_local_modules_by_value(cloudpickle: Any, notebook_dir: str) -> None:
    """Modules the user keeps beside the notebook travel inside the artifact, like the notebook's own code."""
    root = os.path.realpath(notebook_dir) + os.sep
    installed = {os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    for name, module in list(sys.modules.items()):
        path = os.path.realpath(getattr(module, "__file__", None) or "")
        local = path.startswith(root) and not any(path.startswith(prefix) for prefix in installed)
        if local and "site-packages" not in path and "." not in name:
            cloudpickle.register_pickle_by_value(module)


def _top_level(modules: Any) -> set[str]:
    return {name.partition(".")[0] for name in modules}


def _distributions(top_level_modules: set[str]) -> dict[str, dict[str, Any]]:
    """The installed distributions that provide ``top_level_modules``, as this kernel's sys.path sees them."""
    providers = importlib.metadata.packages_distributions()
    found: dict[str, dict[str, Any]] = {}
    for top in sorted(top_level_modules):
        for name in providers.get(top, ()):
            entry = found.setdefault(name, {"version": importlib.metadata.version(name), "modules": []})
            entry["modules"].append(top)
    return found


def _unpicklable(cloudpickle: Any, endpoint: str, function: Any, exc: BaseException) -> dict[str, Any]:
    found = _find_unpicklable(cloudpickle, function, "", 0, {id(function)})
    path, culprit = found if found else (endpoint, function)
    return {
        "reason": "unpicklable",
        "endpoint": endpoint,
        "variable": path or endpoint,
        "type": _type_name(culprit),
        "exception": f"{type(exc).__name__}: {exc}",
    }


def _find_unpicklable(cloudpickle: Any, obj: Any, path: str, depth: int, seen: set[int]) -> tuple[str, Any] | None:
    """The deepest reference reachable from ``obj`` that cannot be pickled on its own, with its path."""
    if depth >= _MAX_DEPTH:
        return None
    for child_path, child in _references(obj, path):
        if id(child) in seen:
            continue
        seen.add(id(child))
        try:
            cloudpickle.dumps(child)
        except Exception:
            return _find_unpicklable(cloudpickle, child, child_path, depth + 1, seen) or (child_path, child)
    return None


def _references(obj: Any, path: str) -> list[tuple[str, Any]]:
    def join(name: str) -> str:
        return f"{path}.{name}" if path else name

    if inspect.isfunction(obj):
        closure = inspect.getclosurevars(obj)
        defaults = list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values())
        named = {**closure.nonlocals, **closure.globals}
        return list(named.items()) + [(f"{obj.__name__}'s default", default) for default in defaults]
    if inspect.ismethod(obj):
        return [(join("__self__"), obj.__self__), (join("__func__"), obj.__func__)]
    if isinstance(obj, dict):
        return [(f"{path}[{key!r}]", value) for key, value in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"{path}[{index}]", value) for index, value in enumerate(obj)]
    if hasattr(obj, "__dict__") and not inspect.ismodule(obj) and not inspect.isclass(obj):
        return [(join(name), value) for name, value in vars(obj).items()]
    return []


def _type_name(obj: Any) -> str:
    kind = type(obj)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
