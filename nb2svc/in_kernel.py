"""Code that runs inside the notebook's kernel: before the cells (what is loaded), after each
``predict`` cell (recording the notebook's calls of its endpoints), and after the last (capture).

This file is sent to the kernel as source text, never imported there: the
kernel's environment may not have nb2svc installed. It may use only the
standard library, IPython (which every Python kernel has), cloudpickle, and the
standard-library modules of the service's own runtime, imported from the
service directory being built. Its functions return JSON-able values; failures
come back as ``{"error": {...}}`` for the builder to turn into an nb2svc error.

The builder runs it with ``ARGUMENTS`` (the call's keyword arguments) set.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import inspect
import json
import math
import os
import sys
import types
from typing import Any

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


def record_calls(names: list[str], runtime_path: str) -> None:
    """Wrap the endpoints ``names`` so that the calls later cells make are recorded as examples.

    ``capture`` takes the wrappers off again before it serializes the functions.
    """
    from IPython import get_ipython

    namespace = get_ipython().user_ns
    for name in names:
        function = namespace.get(name)
        if callable(function) and not inspect.iscoroutinefunction(function) and not hasattr(function, "_nb2svc_examples"):
            namespace[name] = _recorder(function, runtime_path)


def _runtime(name: str, runtime_path: str) -> types.ModuleType:
    """A module of the service's runtime (nb2svc_runtime, in the directory being built): examples are read,
    called and encoded by the very code that will serve them. Only its standard-library modules are used here."""
    if runtime_path not in sys.path:
        sys.path.append(runtime_path)  # appended: it never shadows the notebook's own modules
    return importlib.import_module(f"nb2svc_runtime.{name}")


def _recorder(function: Any, runtime_path: str) -> Any:
    examples: list[dict[str, Any]] = []
    frames: dict[str, Any] = {}  # the columns and dtypes of DataFrames the notebook passed
    active: list[bool] = []  # a call in progress: the endpoint calling itself is not another example
    envelope, encoding, schema = (_runtime(name, runtime_path) for name in ("envelope", "encoding", "schema"))
    signature = schema.read_signature(function)

    @functools.wraps(function)
    def recorder(*args: Any, **kwargs: Any) -> Any:
        if active or len(examples) >= MAX_EXAMPLES:
            return function(*args, **kwargs)
        request = _request_body(function, signature, envelope, encoding, frames, args, kwargs)  # before the call mutates them
        active.append(True)
        try:
            result = function(*args, **kwargs)
        finally:
            active.pop()
        if request is not None and all(example["request"] != request for example in examples):
            try:
                examples.append({"request": request, "response": json.loads(encoding.encode_json({"data": result}))})
            except encoding.EncodeError:
                pass
        return result

    recorder._nb2svc_examples = examples  # type: ignore[attr-defined]
    recorder._nb2svc_frames = frames  # type: ignore[attr-defined]
    return recorder


def _request_body(
    function: Any, signature: Any, envelope: Any, encoding: Any, frames: dict[str, Any], args: Any, kwargs: Any
) -> Any:
    """The request the service reads as this very call, or None if JSON cannot express it unchanged."""
    try:
        bound = inspect.signature(function).bind(*args, **kwargs).arguments
    except TypeError:
        return None
    if signature.dataframe:
        [table] = bound.values()
        if not hasattr(table, "dtypes"):
            return None
        try:
            records = json.loads(encoding.encode_json(table))
        except encoding.EncodeError:
            return None
        frames.update(columns=[str(c) for c in table.columns], dtypes={str(c): str(t) for c, t in table.dtypes.items()})
        return {"data": records}
    if not _plain_json(list(bound.values())):
        return None
    for data in ([*bound.values()][0] if len(bound) == 1 else None, dict(bound)):
        if not envelope.is_batch(data) and _binds_to(envelope, signature, data, bound):
            return {"data": data}
    return None


def _binds_to(envelope: Any, signature: Any, data: Any, bound: dict[str, Any]) -> bool:
    try:
        return envelope.bind(data, signature) == dict(bound)
    except envelope.BindingError:
        return False


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
    runtime_path: str,
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
        frame = dict(getattr(function, "_nb2svc_frames", {}))
        if hasattr(function, "_nb2svc_examples"):  # take the recorder off: the function itself is served
            function = namespace[name] = function.__wrapped__
        if not callable(function):
            return {"error": {"reason": "not_callable", "endpoint": name, "type": _type_name(function)}}
        try:
            examples = [{**example, "source": "notebook"} for example in examples]
            examples += [_run_example(function, data, runtime_path, frame) for data in extra_examples.get(name, [])]
        except ExampleFailed as failed:
            return {"error": {"reason": "example_failed", "endpoint": name, **failed.args[0]}}
        try:
            payload = cloudpickle.dumps(function)
        except Exception as exc:  # cloudpickle raises TypeError, PicklingError, RecursionError...
            return {"error": _unpicklable(cloudpickle, name, function, exc)}
        schema = _runtime("schema", runtime_path).read_signature(function).to_dict()
        described.append(
            {**_write_artifact(name, function, payload, artifacts_dir), "examples": examples, "schema": schema}
            | ({"dataframe": frame} if frame else {})
        )
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


def _run_example(function: Any, data: Any, runtime_path: str, frame: dict[str, Any]) -> dict[str, Any]:
    """Call ``function`` as the service would for ``{"data": data}``, and record the answer."""
    invoke, encoding, endpoint = (_runtime(name, runtime_path) for name in ("invoke", "encoding", "endpoint"))
    invoker = endpoint.invoker_for(function, frame or None)
    try:
        response = json.loads(encoding.encode_json(invoke.answer(invoker, data)))
    except Exception as exc:
        raise ExampleFailed({"data": data, "exception": f"{type(exc).__name__}: {exc}"}) from None
    return {"request": {"data": data}, "response": response, "source": "command line"}


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
