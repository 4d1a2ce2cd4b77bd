"""Modelbit's protocol: ``POST /v1/<name>/latest`` with ``{"data": ...}`` (the rules are in ``envelope``).

Errors are ``{"error": {"type", "message", "request_id", "parameter"?}}``.
"""

from __future__ import annotations

import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .calls import Service, answer, attribute
from .endpoint import Endpoint
from .envelope import is_batch, read_data
from .errors import NotFound, ServiceError
from .executor import Call, gathered_call
from .invoke import answer as call_endpoint, inputs_of
from .manifest import Manifest, plain


class Modelbit:
    def read(self, payload: Any, endpoint: Endpoint) -> Call:
        data = read_data(payload)
        if endpoint.signature.batch is not None:  # one call for every row, gathered with other requests'
            return gathered_call(endpoint, inputs_of(endpoint.invoker, data))
        rows = len(data) if is_batch(data) else 1
        return Call(endpoint, rows, functools.partial(call_endpoint, endpoint.invoker, data))

    def error_body(self, error: ServiceError, request_id: str, extra: dict[str, Any]) -> dict[str, Any]:
        return {"error": {**error.body(), "request_id": request_id, **extra}}


PROTOCOL = Modelbit()


def predict_routes(service: Service, endpoints: tuple[Endpoint, ...]) -> list[BaseRoute]:
    """``/v1/<name>/latest`` for each endpoint: the routes that carry the traffic, tried first."""
    return [Route(e.described.route, _predict(service, e), methods=["POST"]) for e in endpoints]


def routes(service: Service, endpoints: tuple[Endpoint, ...], manifest: Manifest, static: Any) -> list[BaseRoute]:
    """``/v1/<name>/<version>`` and ``/v1/<name>/info`` for each endpoint."""
    found: list[BaseRoute] = []
    for endpoint in endpoints:
        found += [
            Route(f"/v1/{endpoint.name}/info", static(info(manifest, endpoint))),
            Route(f"/v1/{endpoint.name}/{{version}}", _versioned(service, endpoint), methods=["POST"]),
        ]
    return found


def _predict(service: Service, endpoint: Endpoint) -> Any:
    async def predict(request: Request) -> Response:
        return await answer(request, service, endpoint, PROTOCOL)

    return predict


def _versioned(service: Service, endpoint: Endpoint) -> Any:
    async def predict(request: Request) -> Response:
        asked = request.path_params["version"]
        if asked != "latest" and asked != service.version:
            attribute(request, service, endpoint.name, PROTOCOL)
            raise NotFound(f"{endpoint.name} has no version {asked!r}: use 'latest' or {service.version!r}")
        return await answer(request, service, endpoint, PROTOCOL)

    return predict


def info(manifest: Manifest, endpoint: Endpoint) -> dict[str, Any]:
    """Provenance: where the endpoint comes from, what built it, and the packages the notebook's code imported."""
    described = endpoint.described
    return {
        "name": endpoint.name,
        "version": manifest.version,
        "signature": described.signature,
        "notebook": plain(manifest.notebook),
        "cell": described.cell,
        "parameters": manifest.parameters,
        "built_at": manifest.built_at,
        "nb2svc_version": manifest.nb2svc_version,
        "python": plain(manifest.python),
        "packages": manifest.imported_packages(),
        "artifact": {"path": described.artifact, "sha256": described.sha256, "bytes": described.bytes},
    }
