"""After the notebook's last cell: serialize each endpoint into the service directory and describe it.

Each endpoint's description is the manifest's own ``EndpointDescription``, made here by the service
runtime's ``manifest`` and ``schema`` modules, so the builder reads back exactly what it will write.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from . import failures, recording
from .loaded import distributions_imported_since
from .runtime import runtime_module
from .unpicklable import unpicklable

_NB2SVC = __name__.partition(".")[0]  # nb2svc's own package (``_nb2svc`` in a build's kernel): never by value


class _Failed(Exception):
    """Capture cannot go on; ``args[0]`` is the failure, for the builder to explain."""


def capture(
    endpoints: dict[str, int],
    service_dir: str,
    notebook_dir: str,
    modules_at_start: list[str],
    extra_examples: dict[str, list[Any]],
) -> dict[str, Any]:
    """Serialize each endpoint of the notebook's namespace (its name: its cell) into ``service_dir/artifacts``.

    ``extra_examples`` maps endpoint names to ``data`` values to call them with, as requests would.
    The answer is ``{"capture": {...}}`` (the fields of the builder's ``Capture``) or ``{"failure": {...}}``.
    """
    notebook_distributions = distributions_imported_since(modules_at_start)  # before this imports cloudpickle
    from IPython import get_ipython

    namespace = get_ipython().user_ns
    functions = {}
    for name, cell in endpoints.items():
        recorded = recording.take_off(namespace, name)  # the function itself is served, not its recorder
        functions[name] = (namespace.get(name), cell, recorded)
    return capture_functions(
        functions, service_dir, notebook_dir, extra_examples, notebook_distributions, "command line"
    )


def capture_functions(
    functions: dict[str, tuple[Any, int, recording.Recording]],
    service_dir: str,
    notebook_dir: str,
    extra_examples: dict[str, list[Any]],
    notebook_distributions: dict[str, dict[str, Any]],
    example_source: str,
) -> dict[str, Any]:
    """Serialize each ``name: (function, cell, what its recorder saw)`` into ``service_dir/artifacts``: the
    answer of ``capture``. ``nb2svc.deploy`` calls it in the notebook's own process, on the live function.
    ``extra_examples`` are recorded with ``example_source`` ("command line", "deploy")."""
    try:
        import cloudpickle
    except ImportError:
        return {"failure": failures.to_json(failures.NoCloudpickle(python=sys.executable))}
    registered = _pickle_local_modules_by_value(cloudpickle, notebook_dir)
    manifest = runtime_module("manifest", service_dir)
    try:
        with _content_addressed_classes(cloudpickle):
            described = [
                _endpoint(
                    cloudpickle, name, function, cell, recorded, service_dir, extra_examples.get(name, []),
                    example_source,
                )
                for name, (function, cell, recorded) in functions.items()
            ]  # fmt: skip
    except _Failed as failed:
        return {"failure": failures.to_json(failed.args[0])}
    finally:  # the session pickles as it did before (nb2svc.deploy runs in the user's own)
        for module in registered:
            cloudpickle.unregister_pickle_by_value(module)
    return {
        "capture": {
            "endpoints": [manifest.plain(description) for description in described],
            "python_version": ".".join(map(str, sys.version_info[:3])),
            "python_implementation": sys.implementation.name,
            "python_executable": sys.executable,
            "cloudpickle_version": cloudpickle.__version__,
            "notebook_distributions": notebook_distributions,
        }
    }


def _endpoint(
    cloudpickle: Any,
    name: str,
    function: Any,
    cell: int,
    recorded: recording.Recording,
    service_dir: str,
    extra_examples: list[Any],
    example_source: str,
) -> Any:
    """The endpoint ``name``, serialized into its artifact: its nb2svc_runtime.manifest.EndpointDescription."""
    if not callable(function):
        raise _Failed(failures.NotCallable(endpoint=name, type=failures.type_name(function)))
    problem = runtime_module("schema", service_dir).batch_problem(function)
    if problem is not None:
        raise _Failed(failures.NotBatchable(endpoint=name, problem=problem))
    examples = recorded.examples + [
        _run_example(name, function, data, service_dir, recorded.frame, example_source) for data in extra_examples
    ]
    try:
        payload = cloudpickle.dumps(function)
    except Exception as exc:  # cloudpickle raises TypeError, PicklingError, RecursionError...
        raise _Failed(unpicklable(cloudpickle, name, function, exc)) from None
    described = runtime_module("schema", service_dir).describe(function)
    return runtime_module("manifest", service_dir).EndpointDescription(
        name=name,
        cell=cell,
        artifact=_write_artifact(service_dir, name, payload),
        sha256=hashlib.sha256(payload).hexdigest(),
        bytes=len(payload),
        signature=described.signature,
        doc=described.doc,
        is_async=described.is_async,
        parameters=described.parameters,
        returns=described.returns,
        dataframe=described.dataframe,
        batch=described.batch,
        recorded_frame=recorded.frame,
        examples=tuple(examples),
        calls_seen=recorded.seen,
        unrecorded=tuple(recorded.unrecorded),
    )


@contextlib.contextmanager
def _content_addressed_classes(cloudpickle: Any) -> Iterator[None]:
    """While capturing, a class pickled by value is tracked by a digest of its own definition, not a random id.

    cloudpickle gives each class it pickles by value (one the notebook defined) a ``uuid4`` "tracker id", so that
    the loads of several pickles in one process share one class object: with it, two builds of the same notebook
    were never the same bytes, nor the same model version. Here the id is a digest of the class pickled with
    the ids of the classes it refers to (its own a placeholder while it is being pickled): the same definition
    gets the same id, in every build; another definition another id, so the versions that one server loads
    never share a class that is not the same. Where the kernel's cloudpickle has no such (private) function, its
    ids stay random.
    """
    module = getattr(cloudpickle, "cloudpickle", None)
    original = getattr(module, "_get_or_create_tracker_id", None)
    if original is None:
        yield
        return
    made: dict[type, str] = {}

    def tracker_id(class_def: type) -> str:
        if class_def not in made:
            made[class_def] = "0" * 32  # while its definition is pickled, which may refer to it
            made[class_def] = hashlib.sha256(cloudpickle.dumps(class_def)).hexdigest()[:32]
        return made[class_def]

    module._get_or_create_tracker_id = tracker_id  # type: ignore[union-attr]
    try:
        yield
    finally:
        module._get_or_create_tracker_id = original  # type: ignore[union-attr]


def _write_artifact(service_dir: str, name: str, payload: bytes) -> str:
    """Write ``payload`` as the artifact of ``name``; its path relative to the service directory."""
    artifact = f"artifacts/{name}.pkl"
    os.makedirs(os.path.join(service_dir, "artifacts"), exist_ok=True)
    with open(os.path.join(service_dir, artifact), "wb") as file:
        file.write(payload)
    return artifact


def _run_example(name: str, function: Any, data: Any, service_dir: str, frame: Any, source: str) -> Any:
    """Call ``function`` as the service would for ``{"data": data}``: the example, with the answer."""
    invoke, encoding, endpoint, errors, manifest = (
        runtime_module(module, service_dir) for module in ("invoke", "encoding", "endpoint", "errors", "manifest")
    )
    invoker = endpoint.invoker_for(function, frame)
    try:
        response = json.loads(encoding.encode_json(invoke.answer(invoker, data)))
    except Exception as exc:
        raised = exc.error if isinstance(exc, errors.CallFailed) else exc  # what the function itself raised
        exception = f"{type(raised).__name__}: {raised}"
        raise _Failed(failures.ExampleFailed(endpoint=name, data=data, exception=exception)) from None
    return manifest.Example(request={"data": data}, response=response, source=source)


def _pickle_local_modules_by_value(cloudpickle: Any, notebook_dir: str) -> list[Any]:
    """Modules the user keeps beside the notebook travel inside the artifact, like the notebook's own code.
    The ones this registers (those not registered already), for the caller to unregister when done."""
    already = set(cloudpickle.list_registry_pickle_by_value())
    registered = []
    root = os.path.realpath(notebook_dir) + os.sep
    installed = {os.path.realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    for name, module in list(sys.modules.items()):
        path = os.path.realpath(getattr(module, "__file__", None) or "")
        local = path.startswith(root) and not any(path.startswith(prefix) for prefix in installed)
        own = module.__name__  # __main__ is in sys.modules twice under joblib (__mp_main__): registered once
        if local and "site-packages" not in path and "." not in name and name != _NB2SVC and own not in already:
            cloudpickle.register_pickle_by_value(module)
            registered.append(module)
            already.add(own)
    return registered
