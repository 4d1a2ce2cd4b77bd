"""What the dashboard (``GET /``) shows, as JSON (``GET /deployments``): deployments, their versions, aliases.

One shape for a single service (each endpoint a deployment with one version) and for a registry server
(``<name>/<n>/`` versions): the page reads only this.

    {"deployments": [{"name", "latest", "aliases": {alias: version},
                      "versions": [{"version", "state", "reason", "url", "model_version", "built_at",
                                    "notebook", "python", "verified", "signature", "doc", "reads", "schema", "batch",
                                    "examples": [{"request", "response"}]}]}]}

``state`` is ``ready``, ``loading`` or ``unready`` (then ``reason`` is ``{"kind", "message"}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import HTMLResponse

from .endpoint import Endpoint
from .envelope import data_schema
from .load import LoadedService, NotReadyReason, UnreadyService
from .manifest import EndpointDescription, Manifest, plain
from .openapi import reading
from .verified import verification_of

VersionState = Literal["ready", "loading", "unready"]
_PAGE = (Path(__file__).parent / "dashboard.html").read_text(encoding="utf-8")


async def page(request: Request) -> HTMLResponse:
    """``GET /``: the dashboard, a page of its own (no CDN) that reads ``GET deployments``."""
    return HTMLResponse(_PAGE)


def version_view(
    version: str,
    url: str,
    state: VersionState,
    manifest: Manifest | None = None,
    endpoint: Endpoint | None = None,
    reason: NotReadyReason | None = None,
    service_dir: Path | None = None,
) -> dict[str, Any]:
    """One version of a deployment: where to call it, its state, and (once its manifest is read) what it takes
    and what ``nb2svc verify`` last found of it (``verified``: ``{"ok", "at"}`` or None)."""
    view: dict[str, Any] = {
        "version": version,
        "state": state,
        "reason": plain(reason) if reason is not None else None,
        "url": url,
    }
    if manifest is not None:
        view |= {
            "verified": verification_of(service_dir, manifest.version) if service_dir is not None else None,
            "model_version": manifest.version,
            "built_at": manifest.built_at,
            "notebook": manifest.notebook.file,
            "python": manifest.python.version,
            "parameters": manifest.parameters,  # the overrides of the build's -p/-f, shown when there are some
        }
    described: EndpointDescription | None = endpoint.described if endpoint is not None else None
    if described is None and manifest is not None and len(manifest.endpoints) == 1:
        described = manifest.endpoints[0]
    if described is not None:
        view |= {
            "signature": f"{described.name}{described.signature}",
            "doc": described.doc,
            "batch": plain(described.batch) if described.batch is not None else None,
            "examples": [{"request": e.request, "response": e.response} for e in described.examples],
        }
    if endpoint is not None:
        view |= {"reads": reading(endpoint.signature, endpoint.name), "schema": data_schema(endpoint.signature)}
    return view


def deployment_view(
    name: str, versions: list[dict[str, Any]], latest: str | None, aliases: dict[str, str]
) -> dict[str, Any]:
    return {"name": name, "latest": latest, "aliases": aliases, "versions": versions}


def services_view(services: Sequence[LoadedService | UnreadyService]) -> dict[str, Any]:
    """``GET /deployments`` of an app serving service directories: each endpoint is a deployment with one
    version, labelled by its manifest's model version; the endpoints of a service that did not load (when its
    manifest was read) are there too, unready with the reason."""
    deployments = []
    for service in services:
        manifest = service.manifest
        if manifest is None:
            continue
        if isinstance(service, LoadedService):
            views = {
                e.name: version_view(
                    manifest.version, e.described.route, "ready", manifest, e, None, service.service_dir
                )
                for e in service.endpoints
            }
        else:
            views = {
                d.name: version_view(
                    manifest.version,
                    d.route,
                    "unready",
                    manifest,
                    reason=service.reason,
                    service_dir=service.service_dir,
                )
                for d in manifest.endpoints
            }
        deployments += [deployment_view(name, [view], manifest.version, {}) for name, view in views.items()]
    return {"deployments": deployments}
