"""The OpenAPI 3.1 description of a service, made once at start-up from its endpoints and examples."""

from __future__ import annotations

from typing import Any

from .endpoint import Endpoint
from .envelope import data_schema
from .manifest import Manifest, plain
from .schema import Signature

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "parameter": {"type": "string"},
                "request_id": {"type": "string"},
            },
        }
    },
}


def openapi(manifest: Manifest, endpoints: tuple[Endpoint, ...]) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/health": {"get": {"summary": "The process is alive", "responses": {"200": _json_response("alive", {})}}},
    }
    for endpoint in endpoints:
        paths[f"/v1/{endpoint.name}/latest"] = {"post": _predict(endpoint)}
        paths[f"/v1/{endpoint.name}/info"] = {
            "get": {"summary": f"Provenance of {endpoint.name}", "responses": {"200": _json_response("provenance", {})}}
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": manifest.name,
            "version": manifest.version,
            "description": f"Built by nb2svc {manifest.nb2svc_version} from {manifest.notebook.file}.",
        },
        "paths": paths,
        "components": {"schemas": {"Error": _ERROR}},
    }


def reading(signature: Signature, name: str) -> str:
    """How the endpoint reads ``data``, in words (shown on the docs page)."""
    params = [p.name for p in signature.parameters]
    if signature.batch is not None:
        table = "records (a list of them, or one) become" if signature.dataframe else "x is"
        return (
            f'batchable: {{"data": x}} is one input; {table} rows of one call {name}([...]), gathered with '
            "concurrent requests' inputs; a batch [[id, x], ...] is one call"
        )
    if signature.dataframe:
        return f'{{"data": [{{...}}, ...]}} (records) becomes one DataFrame: {name}(table); a batch is one call'
    if not params:
        return f'{{"data": null}} calls {name}()'
    if len(params) == 1:
        return f'{{"data": x}} calls {name}(x)'
    keywords = ", ".join(f'"{p}": ...' for p in params)
    if not signature.spreads_lists:
        return f'{{"data": x}} calls {name}(x), or {{"data": {{{keywords}}}}} by name'
    return f'{{"data": [{", ".join(params)}]}} by position, or {{"data": {{{keywords}}}}} by name'


def _predict(endpoint: Endpoint) -> dict[str, Any]:
    signature, described = endpoint.signature, endpoint.described
    examples = {
        f"example {number}": {"value": example.request, "summary": f"recorded answer: {example.response}"}
        for number, example in enumerate(described.examples, start=1)
    }
    media: dict[str, Any] = {"schema": _request(signature)}
    if examples:
        media["examples"] = examples
    batching = {}
    if described.batch is not None:
        batching["x-nb2svc-batch"] = plain(described.batch)
    return {
        "operationId": endpoint.name,
        "summary": f"{endpoint.name}{described.signature}",
        "description": (described.doc or "") + f"\n\nReads: {reading(signature, endpoint.name)}",
        "x-nb2svc-reading": reading(signature, endpoint.name),
        **batching,
        "requestBody": {"required": True, "content": {"application/json": media}},
        "responses": {
            "200": _json_response(
                "the answer", {"type": "object", "properties": {"data": {}, "errors": {"type": "array"}}}
            ),
            "400": _json_response("the body is not a request", {"$ref": "#/components/schemas/Error"}),
            "422": _json_response("a value does not fit its parameter", {"$ref": "#/components/schemas/Error"}),
            "401": _json_response("no API key, when the service asks for one", {"$ref": "#/components/schemas/Error"}),
            "403": _json_response("a wrong API key", {"$ref": "#/components/schemas/Error"}),
            "413": _json_response("the body or the batch is over its limit", {"$ref": "#/components/schemas/Error"}),
            "429": _json_response(
                "every prediction slot is busy: retry after Retry-After", {"$ref": "#/components/schemas/Error"}
            ),
            "500": _json_response(
                "the function raised, or its result cannot be encoded", {"$ref": "#/components/schemas/Error"}
            ),
            "503": _json_response("the model is not ready (see /ready)", {"$ref": "#/components/schemas/Error"}),
            "504": _json_response("the call took longer than the time limit", {"$ref": "#/components/schemas/Error"}),
        },
    }


def _request(signature: Signature) -> dict[str, Any]:
    return {"type": "object", "required": ["data"], "properties": {"data": data_schema(signature)}}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}
