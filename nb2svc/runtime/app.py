"""The ASGI application of a service directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .drift import check_environment
from .encoding import EncodeError, encode_json
from .endpoint import CallFailed, Endpoint, load_endpoint
from .envelope import RequestError, parse_request

logger = logging.getLogger("nb2svc.runtime")


def create_app(service_dir: str | Path) -> Starlette:
    """Load every endpoint named in ``service_dir/manifest.json`` and route requests to it."""
    service_dir = Path(service_dir)
    manifest = json.loads((service_dir / "manifest.json").read_text(encoding="utf-8"))
    drift = check_environment(manifest)
    endpoints = [load_endpoint(service_dir, described) for described in manifest["endpoints"]]
    routes = [Route("/health", health, methods=["GET"])]
    routes += [Route(f"/v1/{e.name}/latest", predict_route(e), methods=["POST"], name=e.name) for e in endpoints]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.manifest = manifest
    app.state.drift = drift
    app.state.known_routes = ", ".join(f"POST /v1/{e.name}/latest" for e in endpoints)
    return app


async def health(request: Request) -> Response:
    return json_response({"status": "ok"})


def predict_route(endpoint: Endpoint) -> Any:
    async def predict(request: Request) -> Response:
        try:
            parsed = parse_request(await request.body(), endpoint.parameter_names)
        except RequestError as exc:
            return error_response(400, "bad_request", str(exc))
        try:
            return json_response({"data": await endpoint.answer(parsed)})
        except CallFailed as exc:
            return _call_failed(endpoint, exc)
        except EncodeError as exc:
            return error_response(500, "unencodable_result", f"{endpoint.name} returned a value that {exc}")

    return predict


def _call_failed(endpoint: Endpoint, exc: CallFailed) -> Response:
    where = f"{endpoint.name} (batch row id {exc.row_id!r})" if exc.row_id is not None else endpoint.name
    logger.error("%s raised %s", where, type(exc.error).__name__, exc_info=exc.error)
    extra = {"id": exc.row_id} if exc.row_id is not None else {}
    return error_response(500, type(exc.error).__name__, f"{where} raised: {exc.error}", **extra)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = f"{exc.detail}: {request.method} {request.url.path}"
    if exc.status_code in (404, 405):
        message += f". This service answers GET /health and {request.app.state.known_routes}"
    return error_response(exc.status_code, _HTTP_ERROR_TYPES.get(exc.status_code, "http_error"), message)


_HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed"}


def error_response(status: int, error_type: str, message: str, **extra: Any) -> Response:
    return json_response({"error": {"type": error_type, "message": message, **extra}}, status)


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(encode_json(payload), status_code=status, media_type="application/json")
