"""The Open Inference Protocol (KServe v2): tensors in, tensors out, beside Modelbit's routes.

The first dimension of every input tensor is the batch: the function is called
once per row, each parameter taking its tensor's row. A DataFrame endpoint is
called once, the tensors being the table's columns (named as in the notebook's
own calls). The results form the tensor "output".
"""

from __future__ import annotations

import functools
import json
import math
from typing import Any, TypeGuard

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .body import strict_loads
from .calls import Service, answer
from .encoding import encode_json
from .endpoint import Endpoint
from .errors import BadRequest, BindingError, ServiceError
from .executor import Call, gathered_call
from .invoke import Inputs, every_result, per_row
from .turns import between_rows

_DATATYPES = {"integer": "INT64", "number": "FP64", "boolean": "BOOL", "string": "BYTES"}
_FRAME_DATATYPES = {"int64": "INT64", "int32": "INT32", "float64": "FP64", "float32": "FP32", "bool": "BOOL"}


class OpenInference:
    """Errors are ``{"error": "..."}`` as the protocol says.

    The request id rides beside it, in the header and the log.
    """

    def __init__(self, version: str, name: str | None = None) -> None:
        self.version = version  # the model_version of every answer
        self.name = name  # the model_name of every answer (a registry's deployment), else the endpoint's

    def read(self, payload: Any, endpoint: Endpoint) -> Call:
        """The tensors, checked here on the event loop (shapes, names, sizes); the calls run on the executor."""
        columns, rows = _columns(endpoint, payload)
        request_id, name = payload.get("id"), self.name or endpoint.name
        if endpoint.signature.batch is not None:  # the rows are inputs of one call, gathered with other requests'
            inputs = Inputs(
                _inputs(endpoint, columns, rows),
                lambda outcomes: _response(name, self.version, request_id, every_result(outcomes)),
            )
            return gathered_call(endpoint, inputs)
        answering = functools.partial(infer, endpoint, columns, rows, request_id, self.version, name)
        return Call(endpoint, rows, answering)

    def error_body(self, error: ServiceError, request_id: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {"error": error.message, "request_id": request_id, **extra}


def server_routes(static: Any, name: str, version: str, unready: Any | None) -> list[BaseRoute]:
    """The server's own routes; ``unready``, if given, answers readiness (503 with the reason) instead."""
    return [
        Route("/v2", static({"name": name, "version": version, "extensions": []})),
        Route("/v2/health/live", static({"live": True})),
        Route("/v2/health/ready", unready or static({"ready": True})),
    ]


def model_routes(service: Service, endpoints: tuple[Endpoint, ...], static: Any) -> list[BaseRoute]:
    protocol = OpenInference(service.version)
    found: list[BaseRoute] = []
    for endpoint in endpoints:
        found += [
            Route(f"/v2/models/{endpoint.name}", static(metadata(endpoint.name, endpoint, [service.version]))),
            Route(f"/v2/models/{endpoint.name}/ready", static({"name": endpoint.name, "ready": True})),
            Route(f"/v2/models/{endpoint.name}/infer", _infer_route(service, endpoint, protocol), methods=["POST"]),
        ]
    return found


def _infer_route(service: Service, endpoint: Endpoint, protocol: OpenInference) -> Any:
    async def infer_request(request: Request) -> Response:
        return await answer(request, service, endpoint, protocol)

    return infer_request


def metadata(name: str, endpoint: Endpoint, versions: list[str]) -> dict[str, Any]:
    """The model's metadata: ``name`` as the client calls it, the ``versions`` it has ready, its tensors."""
    frame = endpoint.described.recorded_frame
    if endpoint.signature.dataframe and frame:
        inputs = [
            {"name": column, "datatype": _FRAME_DATATYPES.get(frame.dtypes.get(column, ""), "BYTES"), "shape": [-1]}
            for column in frame.columns
        ]
    else:
        inputs = [
            {"name": p.name, "datatype": _DATATYPES.get(str(p.schema.get("type")), "BYTES"), "shape": [-1]}
            for p in endpoint.signature.parameters
        ]
    return {
        "name": name,
        "versions": versions,
        "platform": "nb2svc",
        "inputs": inputs,
        "outputs": [
            {
                "name": "output",
                "datatype": _DATATYPES.get(str(endpoint.signature.returns.get("type")), "BYTES"),
                "shape": [-1],
            }
        ],
    }


def infer(
    endpoint: Endpoint, columns: dict[str, list[Any]], rows: int, request_id: Any, version: str, name: str
) -> dict[str, Any]:
    """The response to ``POST /v2/models/<name>/infer``, from its checked tensors; runs on the executor."""
    invoker = endpoint.invoker
    if endpoint.signature.dataframe:
        records = [{name: column[i] for name, column in columns.items()} for i in range(rows)]
        results = per_row(invoker.call(records), rows)
    else:
        results = []
        for i in range(rows):
            between_rows()  # the calls waiting behind a long batch run between its rows
            results.append(invoker.call_named({name: column[i] for name, column in columns.items()}))
    return _response(name, version, request_id, results)


def _response(name: str, version: str, request_id: Any, results: list[Any]) -> dict[str, Any]:
    response = {"model_name": name, "model_version": version, "outputs": [_tensor("output", results)]}
    return response | ({} if request_id is None else {"id": request_id})


def _inputs(endpoint: Endpoint, columns: dict[str, list[Any]], rows: int) -> list[dict[str, Any] | BindingError]:
    """A batchable endpoint's inputs: each row of the tensors (a DataFrame endpoint's: a record of its columns)."""
    name = endpoint.signature.parameters[0].name
    if endpoint.signature.dataframe:
        return [{name: {column: values[i] for column, values in columns.items()}} for i in range(rows)]
    return [{name: value} for value in columns[name]]


def _columns(endpoint: Endpoint, request: Any) -> tuple[dict[str, list[Any]], int]:
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise BadRequest('an inference request is a JSON object with a non-empty "inputs" list of tensors')
    names = [p.name for p in endpoint.signature.parameters]
    tensors = request["inputs"]
    dataframe = endpoint.signature.dataframe
    if (
        len(tensors) == 1
        and len(names) == 1
        and isinstance(tensors[0], dict)
        and tensors[0].get("name") not in names
        and not dataframe
    ):
        tensors = [{**tensors[0], "name": names[0]}]  # one unnamed input for a one-parameter function
    columns: dict[str, list[Any]] = {}
    for tensor in tensors:
        if not isinstance(tensor, dict):
            raise BadRequest(
                f"every input is a tensor object {{name, shape, datatype, data}}; got {json.dumps(tensor)[:80]}"
            )
        name = tensor.get("name")
        if not isinstance(name, str) or (name not in names and not dataframe):
            raise BadRequest(f"input {name!r} is not a parameter of {endpoint.name}; its inputs are {names}")
        columns[name] = _rows(tensor, dataframe or _wants_string(endpoint, name))
    counts = {len(column) for column in columns.values()}
    if len(counts) != 1:
        raise BadRequest(f"the inputs' first dimensions differ ({sorted(counts)}): it is the batch size")
    return columns, counts.pop()


def _wants_string(endpoint: Endpoint, name: str) -> bool:
    return next(p.schema.get("type") == "string" for p in endpoint.signature.parameters if p.name == name)


def _rows(tensor: dict[str, Any], wants_string: bool) -> list[Any]:
    shape, data = tensor.get("shape"), tensor.get("data")
    if not _is_shape(shape) or not isinstance(data, list):
        raise BadRequest(
            f"input {tensor.get('name')!r} needs a shape (1 to {MAX_DIMENSIONS} sizes, 0 or more) and data"
        )
    flat = _flatten(data)
    if math.prod(shape) != len(flat):
        raise BadRequest(f"input {tensor['name']!r} has shape {shape} but {len(flat)} values")
    if tensor.get("datatype") == "BYTES" and not wants_string:
        try:
            flat = [strict_loads(value) if isinstance(value, str) else value for value in flat]
        except (ValueError, RecursionError) as exc:
            raise BadRequest(
                f"input {tensor['name']!r} is BYTES holding JSON, and a value is not standard JSON ({exc})"
            ) from None
    return _reshape(flat, shape)


MAX_DIMENSIONS = 32


def _is_shape(shape: Any) -> TypeGuard[list[int]]:
    sizes = isinstance(shape, list) and 0 < len(shape) <= MAX_DIMENSIONS
    return sizes and all(type(size) is int and size >= 0 for size in shape)


def _flatten(data: list[Any]) -> list[Any]:
    """The leaves of nested lists, in order (without recursion: the nesting is the client's to choose)."""
    flat: list[Any] = []
    pending = [iter(data)]
    while pending:
        for item in pending[-1]:
            if isinstance(item, list):
                pending.append(iter(item))
                break
            flat.append(item)
        else:
            pending.pop()
    return flat


def _reshape(flat: list[Any], shape: list[int]) -> list[Any]:
    if len(shape) == 1:
        return flat
    size = math.prod(shape[1:])
    return [_reshape(flat[i * size : (i + 1) * size], shape[1:]) for i in range(shape[0])]


def _tensor(name: str, results: list[Any]) -> dict[str, Any]:
    plain = [r.tolist() if hasattr(r, "tolist") else r for r in results]
    shape = [len(plain)]
    inner = plain
    while inner and all(isinstance(r, list) for r in inner) and len({len(r) for r in inner}) == 1:
        shape.append(len(inner[0]))
        inner = [leaf for r in inner for leaf in r]
    if all(isinstance(v, bool) for v in inner):
        datatype = "BOOL"
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in inner):
        datatype = "INT64"
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in inner):
        datatype = "FP64"
    else:
        datatype = "BYTES"
        inner = [v if isinstance(v, str) else encode_json(v).decode() for v in inner]  # Unencodable, as on /v1
    return {"name": name, "datatype": datatype, "shape": shape, "data": inner}
