"""The ASGI application of a service directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import oip
from .drift import check_environment
from .encoding import EncodeError, encode_json
from .endpoint import Endpoint, load_endpoint
from .envelope import BindingError, RequestError, read_body
from .invoke import CallFailed, answer
from .openapi import openapi

logger = logging.getLogger("nb2svc.runtime")
_DOCS = (Path(__file__).parent / "docs.html").read_text(encoding="utf-8")


def create_app(service_dir: str | Path) -> Starlette:
    """Load every endpoint named in ``service_dir/manifest.json`` and route requests to it."""
    service_dir = Path(service_dir)
    manifest = json.loads((service_dir / "manifest.json").read_text(encoding="utf-8"))
    drift = check_environment(manifest)
    endpoints = {described["name"]: load_endpoint(service_dir, described) for described in manifest["endpoints"]}
    version = manifest.get("version", "1")
    spec = encode_json(openapi(manifest, list(endpoints.values())))
    routes = [
        Route("/health", _static({"status": "ok"})),
        Route("/openapi.json", lambda request: Response(spec, media_type="application/json")),
        Route("/docs", lambda request: HTMLResponse(_DOCS)),
        Route("/v2", _static({"name": manifest["name"], "version": version, "extensions": []})),
        Route("/v2/health/live", _static({"live": True})),
        Route("/v2/health/ready", _static({"ready": True})),
    ]
    for endpoint in endpoints.values():
        routes += [
            Route(f"/v1/{endpoint.name}/{{version}}", _predict(endpoint, version), methods=["POST"]),
            Route(f"/v1/{endpoint.name}/info", _static(_info(manifest, endpoint))),
            Route(f"/v2/models/{endpoint.name}", _static(oip.metadata(endpoint, version))),
            Route(f"/v2/models/{endpoint.name}/ready", _static({"name": endpoint.name, "ready": True})),
            Route(f"/v2/models/{endpoint.name}/infer", _infer(endpoint, version), methods=["POST"]),
        ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error},
        middleware=[Middleware(ModelVersionHeader, version=version)],
    )
    app.state.manifest = manifest
    app.state.drift = drift
    app.state.known_routes = ", ".join(f"POST /v1/{name}/latest" for name in endpoints)
    return app


def _static(payload: Any) -> Any:
    body = encode_json(payload)

    async def respond(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return respond


def _predict(endpoint: Endpoint, version: str) -> Any:
    async def predict(request: Request) -> Response:
        asked = request.path_params["version"]
        if asked not in ("latest", version):
            return error_response(404, "not_found", f"{endpoint.name} has no version {asked!r}: use 'latest' or {version!r}")
        try:
            return json_response(await run_in_threadpool(answer, endpoint.invoker, read_body(await request.body())))
        except RequestError as exc:
            return error_response(400, "bad_request", str(exc))
        except BindingError as exc:
            return error_response(422, "validation_error", str(exc), **({"parameter": exc.parameter} if exc.parameter else {}))
        except CallFailed as exc:
            logger.error("%s raised %s", endpoint.name, type(exc.error).__name__, exc_info=exc.error)
            return error_response(500, type(exc.error).__name__, f"{endpoint.name} raised: {exc.error}")
        except EncodeError as exc:
            return error_response(500, "unencodable_result", f"{endpoint.name} returned a value that {exc}")

    return predict


def _infer(endpoint: Endpoint, version: str) -> Any:
    async def infer(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            return json_response(await run_in_threadpool(oip.infer, endpoint, body, version))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return json_response({"error": f"the request body is not valid JSON ({exc})"}, 400)
        except oip.InferError as exc:
            return json_response({"error": str(exc)}, 400)
        except EncodeError as exc:
            return json_response({"error": f"{endpoint.name} returned a value that {exc}"}, 500)

    return infer


def _info(manifest: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    described = endpoint.described
    observed = {r["name"] for r in manifest.get("requirements", []) if any(not x.startswith(("the service", "--")) for x in r["reasons"])}
    return {
        "name": endpoint.name,
        "version": manifest.get("version"),
        "signature": described.get("signature"),
        "notebook": manifest["notebook"],
        "cell": described.get("cell"),
        "parameters": manifest.get("parameters", {}),
        "built_at": manifest.get("built_at"),
        "nb2svc_version": manifest.get("nb2svc_version"),
        "python": manifest["python"],
        "packages": {name: pin for name, pin in manifest["lock"]["pins"].items() if name in observed},
        "artifact": {"path": described["artifact"], "sha256": described["sha256"], "bytes": described.get("bytes")},
    }


class ModelVersionHeader:
    """Adds ``X-Model-Version`` to every answer."""

    def __init__(self, app: ASGIApp, version: str) -> None:
        self.app = app
        self.header = (b"x-model-version", version.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = f"{exc.detail}: {request.method} {request.url.path}"
    if exc.status_code in (404, 405):
        message += f". This service answers GET /health, GET /docs and {request.app.state.known_routes}"
    return error_response(exc.status_code, _HTTP_ERROR_TYPES.get(exc.status_code, "http_error"), message)


_HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed"}


def error_response(status: int, error_type: str, message: str, **extra: Any) -> Response:
    return json_response({"error": {"type": error_type, "message": message, **extra}}, status)


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(encode_json(payload), status_code=status, media_type="application/json")
