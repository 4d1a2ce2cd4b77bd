"""One server for a whole registry (``nb2svc serve --registry DIR``): every deployment, every version.

Modelbit's ``/v1/<name>/<latest|n|alias>`` and the Open Inference Protocol's ``/v2/models/<name>[/versions/<n>]``
answer from the catalog the ``Scanner`` keeps (``registry_catalog``), through the runtime's one call path
(``calls.answer``), executor, metrics, request log and error handlers. Every answer of a version carries
``X-Deployment-Version: <n>`` beside ``X-Model-Version``. ``/deployments`` and ``/`` are the dashboard's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from nb2svc import __version__
from nb2svc.registry import LATEST, Registry
from nb2svc.registry_catalog import Catalog, Scanner, ServedVersion
from nb2svc.runtime import dashboard, modelbit, oip
from nb2svc.runtime.app import HANDLERS, executor, metrics_route, middleware, static
from nb2svc.runtime.calls import Service, answer, attribute
from nb2svc.runtime.endpoint import Endpoint
from nb2svc.runtime.errors import NotReady
from nb2svc.runtime.observability import Metrics, quiet_uvicorn_access_log
from nb2svc.runtime.settings import Settings

_OIP = oip.OpenInference("")  # how an Open Inference request is answered before its version is known: errors


LOCAL_HOSTS = ["127.0.0.1", "localhost"]  # the addresses deploy starts its server on


def create_registry_app(root: str | Path, settings: Settings | None = None, *, local_only: bool = False) -> Starlette:
    """The app serving the registry at ``root`` (which may not exist yet); it reads the registry from its
    lifespan's start, every ``SCAN_INTERVAL`` seconds, until it stops.

    ``local_only`` (the server ``nb2svc.deploy`` starts on a laptop) answers only requests addressed to this
    machine by name (Host 127.0.0.1 or localhost): a web page the user visits cannot reach it through a domain
    that resolves to 127.0.0.1 (DNS rebinding) to read the recorded examples or call the models."""
    settings = settings or Settings.from_environment()
    quiet_uvicorn_access_log()
    metrics = Metrics()
    template = Service("", settings, executor(settings, metrics), metrics)
    scanner = Scanner(Registry(root), template)
    local = [Middleware(TrustedHostMiddleware, allowed_hosts=LOCAL_HOSTS)] if local_only else []

    @contextlib.asynccontextmanager
    async def scanning(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(scanner.keep_scanning())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = Starlette(
        routes=_Routes(scanner).routes(),
        exception_handlers=HANDLERS,
        middleware=[*middleware(settings, metrics), *local],
        lifespan=scanning,
    )
    app.state.service, app.state.protocol = template, modelbit.PROTOCOL
    app.state.known_routes = (
        "GET /health, GET /deployments (what it serves), POST /v1/<name>/<latest|version|alias> "
        "and POST /v2/models/<name>[/versions/<version>]/infer"
    )
    return app


class _Routes:
    """The routes, each reading the scanner's catalog once per request."""

    def __init__(self, scanner: Scanner) -> None:
        self.scanner = scanner
        self.template = scanner.template

    def routes(self) -> list[BaseRoute]:
        respond = static({})
        v2 = "/v2/models/{name}"
        return [
            Route("/v1/{name}/{version}", self.predict, methods=["POST"]),  # the traffic first
            Route(f"{v2}/infer", self.infer, methods=["POST"]),
            Route(f"{v2}/versions/{{version}}/infer", self.infer, methods=["POST"]),
            Route("/health", respond({"status": "ok"})),
            Route("/ready", self.readiness({"status": "ready"})),
            Route("/metrics", metrics_route(self.template.metrics)),
            Route("/deployments", self.deployments),
            Route("/", dashboard.page),
            Route("/v1/{name}/info", self.info),
            Route("/v1/{name}/{version}/info", self.info),
            Route(v2, self.metadata),
            Route(f"{v2}/ready", self.model_ready),
            Route(f"{v2}/versions/{{version}}", self.metadata),
            Route(f"{v2}/versions/{{version}}/ready", self.model_ready),
            Route("/v2", respond({"name": "nb2svc", "version": __version__, "extensions": []})),
            Route("/v2/health/live", respond({"live": True})),
            Route("/v2/health/ready", self.readiness({"ready": True})),
        ]

    async def predict(self, request: Request) -> Response:
        version, endpoint = self._answering(self.scanner.catalog, request)
        return await answer(request, version.service, endpoint, modelbit.PROTOCOL)

    async def infer(self, request: Request) -> Response:
        version, endpoint = self._answering(self.scanner.catalog, request, inference=True)
        return await answer(request, version.service, endpoint, version.inference)

    async def info(self, request: Request) -> Response:
        version, endpoint = self._answering(self.scanner.catalog, request)
        assert version.manifest is not None  # a ready version's manifest was read
        return version.service.json(modelbit.info(version.manifest, endpoint) | {"deployment_version": version.label})

    async def metadata(self, request: Request) -> Response:
        catalog = self.scanner.catalog
        version, endpoint = self._answering(catalog, request, inference=True)
        versions = catalog.deployment(version.name).ready_labels()
        return version.service.json(oip.metadata(version.name, endpoint, versions))

    async def model_ready(self, request: Request) -> Response:
        version, _ = self._answering(self.scanner.catalog, request, inference=True)
        return version.service.json({"name": version.name, "ready": True})

    async def deployments(self, request: Request) -> Response:
        catalog, root = self.scanner.catalog, str(self.scanner.registry.root)
        views = [d.view() for d in catalog.deployments.values()]
        return self.template.json({"registry": root, "pid": os.getpid(), "deployments": views})

    def readiness(self, payload: dict[str, Any]) -> Any:
        """200 once the registry was read and every deployment has a ready version; else 503 saying which not."""

        async def ready(request: Request) -> Response:
            catalog = self.scanner.catalog
            if not catalog.scanned:
                raise NotReady(f"the registry {self.scanner.registry.root} is being read and loaded", kind="loading")
            waiting = [d for d in catalog.deployments.values() if d.latest is None]
            if waiting:
                message = "; ".join(d.why_unready() for d in waiting)
                raise NotReady(f"not every deployment can answer: {message}", kind=waiting[0].versions[-1].kind)
            return self.template.json(payload)

        return ready

    @staticmethod
    def _answering(catalog: Catalog, request: Request, inference: bool = False) -> tuple[ServedVersion, Endpoint]:
        """The version the URL names and its endpoint; NotFound or NotReady answered in the format of the
        request's protocol (Modelbit's, or with ``inference`` the Open Inference Protocol's), with the version's
        headers once it is known."""
        request.state.protocol = _OIP if inference else modelbit.PROTOCOL
        params = request.path_params
        version = catalog.find(params["name"], params.get("version", LATEST))
        attribute(request, version.service, version.name, version.inference if inference else modelbit.PROTOCOL)
        return version, version.ready_endpoint()
