"""The ASGI application: loaded services behind their protocols' routes, with one set of error handlers.

``create_app(service_dir)`` is what a service directory's ``app.py`` runs; ``build_app`` makes
the application for any number of services already loaded (``load.load_service``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from . import dashboard, modelbit, oip
from .auth import ApiKeys
from .calls import Service, service_error
from .encoding import encode_json
from .errors import NotReady, RoutingError, ServiceError
from .executor import BatchingExecutor, CallExecutor
from .load import LoadedService, UnreadyService, load_service
from .observability import Metrics, RequestLog, quiet_uvicorn_access_log
from .openapi import openapi
from .settings import Settings

_DOCS = (Path(__file__).parent / "docs.html").read_text(encoding="utf-8")
_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def create_app(service_dir: str | Path, settings: Settings | None = None) -> Starlette:
    """The app of one service directory. It never raises: a service that cannot be trusted (see ``load``)
    stays up, ``/health`` answers 200, and ``/ready`` and every other route 503 with the reason.
    ``settings`` default to the environment's (``Settings.from_environment``)."""
    return build_app([load_service(service_dir)], settings or Settings.from_environment())


def build_app(services: Sequence[LoadedService | UnreadyService], settings: Settings) -> Starlette:
    """One app serving every loaded service's endpoints; ``/ready`` is 200 only when all of them loaded.
    Each request is logged once, by the app: uvicorn's own access log is turned off."""
    quiet_uvicorn_access_log()
    metrics = Metrics()
    loaded = [s for s in services if isinstance(s, LoadedService)]
    unready = [s for s in services if isinstance(s, UnreadyService)]
    version = loaded[0].manifest.version if len(loaded) == 1 and not unready else ""
    headers = {"X-Model-Version": version} if version else {}
    default = Service(version, settings, executor(settings, metrics), metrics, headers, version)
    served = [(s, _service(s, default)) for s in loaded]
    routes: list[BaseRoute] = []
    for service, answering in served:  # the predict routes first: the router tries routes in order
        routes += modelbit.predict_routes(answering, service.endpoints)
    routes += _common_routes(default, served, unready)
    routes += [
        Route("/", dashboard.page),
        Route("/deployments", static(default.headers)(dashboard.services_view(services))),
    ]
    for service, answering in served:
        routes += modelbit.routes(answering, service.endpoints, service.manifest, static(answering.headers))
        routes += oip.model_routes(answering, service.endpoints, static(answering.headers))
    for failed in unready:  # its endpoints, where its manifest names them, say why they cannot answer
        routes += _unready_endpoint_routes(failed)
    if not loaded:  # nothing to serve: every other path says why
        routes.append(Route("/{path:path}", _unready(unready[0]), methods=_METHODS))
    app = Starlette(routes=routes, exception_handlers=HANDLERS, middleware=middleware(settings, metrics))
    app.state.service, app.state.protocol = default, modelbit.PROTOCOL
    app.state.drift = [warning for s in loaded for warning in s.drift]
    predict = ", ".join(f"POST {e.described.route}" for s in loaded for e in s.endpoints)
    app.state.known_routes = f"GET /, GET /health, GET /docs and {predict}"
    metrics.load_seconds.set(sum(s.load_seconds for s in loaded))
    return app


def executor(settings: Settings, metrics: Metrics) -> BatchingExecutor:
    """The app's one executor, shared by every service it serves."""
    return BatchingExecutor(CallExecutor(settings.max_concurrent, settings.timeout_seconds), settings, metrics)


def _service(loaded: LoadedService, default: Service) -> Service:
    """How a loaded service answers: its own version; the executor, metrics and settings shared by the app."""
    version = loaded.manifest.version
    headers = {"X-Model-Version": version}
    return Service(version, default.settings, default.executor, default.metrics, headers, version)


def _common_routes(
    default: Service, served: list[tuple[LoadedService, Service]], unready: list[UnreadyService]
) -> list[BaseRoute]:
    respond = static(default.headers)
    not_ready = _unready(unready[0]) if unready else None
    routes: list[BaseRoute] = [
        Route("/health", respond({"status": "ok"})),
        Route("/ready", not_ready or respond({"status": "ready"})),
        Route("/metrics", metrics_route(default.metrics)),
    ]
    if not served:
        return routes
    manifest = served[0][0].manifest
    endpoints = tuple(e for service, _ in served for e in service.endpoints)
    return routes + [
        Route("/openapi.json", respond(openapi(manifest, endpoints))),
        Route("/docs", _page(_DOCS, default.headers)),
        *oip.server_routes(respond, manifest.name if len(served) == 1 else "nb2svc", default.version, not_ready),
    ]


def middleware(settings: Settings, metrics: Metrics) -> list[Middleware]:
    """Outermost first: every request gets an id and a log line, then CORS (if configured), then the key check."""
    stack = [Middleware(RequestLog, metrics=metrics)]
    if settings.cors_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                expose_headers=["X-Request-ID", "X-Model-Version"],
            )
        )
    if settings.api_keys:
        stack.append(Middleware(ApiKeys, keys=settings.api_keys, metrics_need_key=settings.metrics_need_key))
    return stack


def static(headers: dict[str, str]) -> Any:
    """A route answering ``payload``, encoded once."""

    def route(payload: Any) -> Any:
        body = encode_json(payload)

        async def respond(request: Request) -> Response:
            return Response(body, media_type="application/json", headers=headers)

        return respond

    return route


def _page(page: str, headers: dict[str, str]) -> Any:
    async def respond(request: Request) -> Response:
        return HTMLResponse(page, headers=headers)

    return respond


def metrics_route(metrics: Metrics) -> Any:
    async def exposition(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return exposition


def _unready_endpoint_routes(service: UnreadyService) -> list[BaseRoute]:
    if service.manifest is None:
        return []
    answer = _unready(service)
    names = [e.name for e in service.manifest.endpoints]
    return [
        Route(path, answer, methods=_METHODS)
        for name in names
        for path in (f"/v1/{name}/{{rest:path}}", f"/v2/models/{name}", f"/v2/models/{name}/{{rest:path}}")
    ]


def _unready(service: UnreadyService) -> Any:
    async def unavailable(request: Request) -> Response:
        raise NotReady(service.reason.message, kind=service.reason.kind)

    return unavailable


async def http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 from the router, as JSON errors (405 with its Allow header)."""
    assert isinstance(exc, HTTPException)
    message = f"{exc.detail}: {request.method} {request.url.path}"
    if exc.status_code in (404, 405):
        message += f". This service answers {request.app.state.known_routes}"
    return await service_error(request, RoutingError(exc.status_code, message, dict(exc.headers or {})))


HANDLERS = {ServiceError: service_error, HTTPException: http_error}  # every error answered in one place
