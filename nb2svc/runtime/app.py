"""The ASGI application of a service directory."""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from . import oip
from .auth import ApiKeys
from .compare import compare
from .drift import check_environment
from .encoding import EncodeError, encode_json
from .endpoint import Endpoint, load_endpoint
from .envelope import BindingError, RequestError, is_batch, read_body
from .invoke import CallFailed, answer
from .limits import Busy, CallPool, TimedOut, TooLarge, read_limited
from .observability import Metrics, RequestLog
from .openapi import openapi
from .settings import Settings

logger = logging.getLogger("nb2svc.runtime")
_DOCS = (Path(__file__).parent / "docs.html").read_text(encoding="utf-8")


def create_app(service_dir: str | Path, settings: Settings | None = None) -> Starlette:
    """Load every endpoint named in ``service_dir/manifest.json``, replay its examples, and route requests to it.

    A service that cannot be trusted (an artifact missing, corrupt or not matching its digest,
    another Python or cloudpickle, an example answered differently) does not crash: it stays
    up, ``/health`` answers 200, and ``/ready`` and every other route answer 503 with the reason.
    ``settings`` default to the environment's (``Settings.from_environment``).
    """
    settings = settings or Settings.from_environment()
    metrics = Metrics()
    service_dir = Path(service_dir)
    started = time.perf_counter()
    try:
        manifest = json.loads((service_dir / "manifest.json").read_text(encoding="utf-8"))
        drift = check_environment(manifest)
        endpoints = {described["name"]: load_endpoint(service_dir, described) for described in manifest["endpoints"]}
        replay_examples(endpoints)
    except Exception as exc:  # whatever it is, the process stays up and says so
        reason = str(exc) if isinstance(exc, NotReady) else f"the model did not load: {type(exc).__name__}: {exc}"
        logger.error("not ready: %s", reason)
        return _unready_app(reason, settings, metrics)
    metrics.load_seconds.set(time.perf_counter() - started)
    version = manifest.get("version", "1")
    service = _Service(version, settings, CallPool(settings.max_concurrent, settings.timeout_seconds), metrics)
    spec = openapi(manifest, list(endpoints.values()))
    # The predict routes first: the router tries routes in order, and they carry the traffic.
    routes = [Route(f"/v1/{e.name}/latest", _predict(e, service), methods=["POST"]) for e in endpoints.values()]
    routes += [
        Route("/health", service.static({"status": "ok"})),
        Route("/ready", service.static({"status": "ready"})),
        Route("/metrics", _metrics_route(metrics)),
        Route("/openapi.json", service.static(spec)),
        Route("/docs", service.static_html(_DOCS)),
        Route("/v2", service.static({"name": manifest["name"], "version": version, "extensions": []})),
        Route("/v2/health/live", service.static({"live": True})),
        Route("/v2/health/ready", service.static({"ready": True})),
    ]
    for endpoint in endpoints.values():
        routes += [
            Route(f"/v1/{endpoint.name}/info", service.static(_info(manifest, endpoint))),
            Route(f"/v1/{endpoint.name}/{{version}}", _predict(endpoint, service), methods=["POST"]),
            Route(f"/v2/models/{endpoint.name}", service.static(oip.metadata(endpoint, version))),
            Route(f"/v2/models/{endpoint.name}/ready", service.static({"name": endpoint.name, "ready": True})),
            Route(f"/v2/models/{endpoint.name}/infer", _infer(endpoint, service), methods=["POST"]),
        ]
    app = Starlette(
        routes=routes, exception_handlers={HTTPException: http_error}, middleware=_middleware(settings, metrics)
    )
    app.state.service = service
    app.state.drift = drift
    app.state.known_routes = ", ".join(f"POST /v1/{name}/latest" for name in endpoints)
    return app


def _middleware(settings: Settings, metrics: Metrics) -> list[Middleware]:
    """Outermost first: every request gets an id and a log line, then CORS (if configured), then the key check."""
    stack = [Middleware(RequestLog, metrics=metrics)]
    if settings.cors_origins:
        stack.append(Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Model-Version"],
        ))
    if settings.api_keys:
        stack.append(Middleware(ApiKeys, keys=settings.api_keys, metrics_need_key=settings.metrics_need_key))
    return stack


def _metrics_route(metrics: Metrics) -> Any:
    async def exposition(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return exposition


class NotReady(Exception):
    """The model loaded but cannot be trusted to answer (an example answered differently)."""


def replay_examples(endpoints: dict[str, Endpoint]) -> None:
    """Every example recorded in the training kernel, answered here as it was there; else NotReady."""
    for endpoint in endpoints.values():
        for number, example in enumerate(endpoint.described.get("examples", []), start=1):
            try:
                actual = json.loads(encode_json(answer(endpoint.invoker, example["request"]["data"])))
            except Exception as exc:
                raise NotReady(f"example {number} of {endpoint.name} failed: {type(exc).__name__}: {exc}") from exc
            difference = compare(example["response"], actual)
            if difference:
                raise NotReady(
                    f"example {number} of {endpoint.name} ({json.dumps(example['request'])[:80]}) answers differently "
                    f"from the training kernel: {difference}"
                )


def _unready_app(reason: str, settings: Settings, metrics: Metrics) -> Starlette:
    """Alive, and honest about it: 200 on /health, metrics, and 503 with ``reason`` everywhere else."""

    alive = encode_json({"status": "ok"})

    async def health(request: Request) -> Response:
        return Response(alive, media_type="application/json")

    async def unavailable(request: Request) -> Response:
        body = {"error": {"type": "not_ready", "message": reason, "request_id": request.state.request_id}}
        return Response(encode_json(body), status_code=503, media_type="application/json")

    routes = [
        Route("/health", health),
        Route("/metrics", _metrics_route(metrics)),
        Route("/{path:path}", unavailable, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    return Starlette(routes=routes, middleware=_middleware(settings, metrics))


class _Service:
    """What every answer of one service needs: its version (``X-Model-Version``), its settings, its call pool."""

    def __init__(self, version: str, settings: Settings, pool: CallPool, metrics: Metrics) -> None:
        self.version = version
        self.settings = settings
        self.pool = pool
        self.metrics = metrics
        self.headers = {"X-Model-Version": version}

    def json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(
            encode_json(payload), status_code=status, media_type="application/json", headers=headers or self.headers
        )

    def error(self, request: Request, status: int, error_type: str, message: str, **extra: Any) -> Response:
        body = {"error": {"type": error_type, "message": message, "request_id": request.state.request_id, **extra}}
        return self.json(body, status, {**self.headers, "Retry-After": "1"} if status == 429 else None)

    def static(self, payload: Any) -> Any:
        body = encode_json(payload)

        async def respond(request: Request) -> Response:
            return Response(body, media_type="application/json", headers=self.headers)

        return respond

    def static_html(self, page: str) -> Any:
        async def respond(request: Request) -> Response:
            return HTMLResponse(page, headers=self.headers)

        return respond


def _predict(endpoint: Endpoint, service: _Service) -> Any:
    settings = service.settings

    async def predict(request: Request) -> Response:
        request.state.endpoint = endpoint.name
        asked = request.path_params.get("version", "latest")
        if asked != "latest" and asked != service.version:
            message = f"{endpoint.name} has no version {asked!r}: use 'latest' or {service.version!r}"
            return service.error(request, 404, "not_found", message)
        try:
            data = read_body(await read_limited(request, settings.max_body_bytes))
            rows = request.state.rows = len(data) if is_batch(data) else 1
            if rows > settings.max_batch_rows:
                raise TooLarge(f"the batch has {rows} rows; the limit is {settings.max_batch_rows} (NB2SVC_MAX_BATCH_ROWS)")
            result = await service.pool.run(answer, endpoint.invoker, data)
            for _, error in result.get("errors", ()):  # rows whose call raised (not those that failed validation)
                if error["type"] != "validation_error":
                    service.metrics.errors.labels(endpoint.name, error["type"]).inc()
            return service.json(result)
        except RequestError as exc:
            return service.error(request, 400, "bad_request", str(exc))
        except TooLarge as exc:
            return service.error(request, 413, "too_large", str(exc))
        except BindingError as exc:
            extra = {"parameter": exc.parameter} if exc.parameter else {}
            return service.error(request, 422, "validation_error", str(exc), **extra)
        except Busy as exc:
            return service.error(request, 429, "busy", str(exc))
        except TimedOut as exc:
            return service.error(request, 504, "timeout", f"{endpoint.name}: {exc}")
        except CallFailed as exc:
            return _call_failed(request, service, endpoint, exc)
        except EncodeError as exc:
            return service.error(request, 500, "unencodable_result", f"{endpoint.name} returned a value that {exc}")

    return predict


def _call_failed(request: Request, service: _Service, endpoint: Endpoint, exc: CallFailed) -> Response:
    kind = type(exc.error).__name__
    service.metrics.errors.labels(endpoint.name, kind).inc()
    logger.error("%s raised %s (request %s)", endpoint.name, kind, request.state.request_id, exc_info=exc.error)
    extra = {"traceback": "".join(traceback.format_exception(exc.error))} if service.settings.debug else {}
    return service.error(request, 500, kind, f"{endpoint.name} raised: {exc.error}", **extra)


def _infer(endpoint: Endpoint, service: _Service) -> Any:
    """The Open Inference Protocol's errors are ``{"error": "..."}``; the request id rides in the header and the log."""
    settings = service.settings

    def error(request: Request, status: int, message: str) -> Response:
        headers = {**service.headers, "Retry-After": "1"} if status == 429 else None
        return service.json({"error": message, "request_id": request.state.request_id}, status, headers)

    async def infer(request: Request) -> Response:
        request.state.endpoint = endpoint.name
        try:
            body = json.loads(await read_limited(request, settings.max_body_bytes))
            rows = request.state.rows = oip.batch_size(body)
            if rows > settings.max_batch_rows:
                raise TooLarge(f"the batch has {rows} rows; the limit is {settings.max_batch_rows} (NB2SVC_MAX_BATCH_ROWS)")
            return service.json(await service.pool.run(oip.infer, endpoint, body, service.version))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error(request, 400, f"the request body is not valid JSON ({exc})")
        except TooLarge as exc:
            return error(request, 413, str(exc))
        except oip.InferError as exc:
            return error(request, 400, str(exc))
        except Busy as exc:
            return error(request, 429, str(exc))
        except TimedOut as exc:
            return error(request, 504, str(exc))
        except EncodeError as exc:
            return error(request, 500, f"{endpoint.name} returned a value that {exc}")

    return infer


def _info(manifest: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    described = endpoint.described
    observed = {
        re.sub(r"[-_.]+", "-", r["name"]).lower()  # the lock's pins are keyed by canonical names
        for r in manifest.get("requirements", [])
        if any(not reason.startswith(("the service", "--")) for reason in r["reasons"])
    }
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


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = f"{exc.detail}: {request.method} {request.url.path}"
    if exc.status_code in (404, 405):
        message += f". This service answers GET /health, GET /docs and {request.app.state.known_routes}"
    service: _Service = request.app.state.service
    return service.error(request, exc.status_code, _HTTP_ERROR_TYPES.get(exc.status_code, "http_error"), message)


_HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed"}
