"""The ASGI application of a service directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from . import oip
from .compare import compare
from .drift import check_environment
from .encoding import EncodeError, encode_json
from .endpoint import Endpoint, load_endpoint
from .envelope import BindingError, RequestError, read_body
from .invoke import CallFailed, answer
from .openapi import openapi

logger = logging.getLogger("nb2svc.runtime")
_DOCS = (Path(__file__).parent / "docs.html").read_text(encoding="utf-8")


def create_app(service_dir: str | Path) -> Starlette:
    """Load every endpoint named in ``service_dir/manifest.json``, replay its examples, and route requests to it.

    A service that cannot be trusted (an artifact missing, corrupt or not matching its digest,
    another Python or cloudpickle, an example answered differently) does not crash: it stays
    up, ``/health`` answers 200, and ``/ready`` and every other route answer 503 with the reason.
    """
    service_dir = Path(service_dir)
    try:
        manifest = json.loads((service_dir / "manifest.json").read_text(encoding="utf-8"))
        drift = check_environment(manifest)
        endpoints = {described["name"]: load_endpoint(service_dir, described) for described in manifest["endpoints"]}
        replay_examples(endpoints)
    except Exception as exc:  # whatever it is, the process stays up and says so
        reason = str(exc) if isinstance(exc, NotReady) else f"the model did not load: {type(exc).__name__}: {exc}"
        logger.error("not ready: %s", reason)
        return _unready_app(reason)
    version = manifest.get("version", "1")
    answer_json = _Answers(version)
    spec = openapi(manifest, list(endpoints.values()))
    # The predict routes first: the router tries routes in order, and they carry the traffic.
    routes = [
        Route(f"/v1/{e.name}/latest", _predict(e, answer_json), methods=["POST"]) for e in endpoints.values()
    ]
    routes += [
        Route("/health", answer_json.static({"status": "ok"})),
        Route("/ready", answer_json.static({"status": "ready"})),
        Route("/openapi.json", answer_json.static(spec)),
        Route("/docs", answer_json.static_html(_DOCS)),
        Route("/v2", answer_json.static({"name": manifest["name"], "version": version, "extensions": []})),
        Route("/v2/health/live", answer_json.static({"live": True})),
        Route("/v2/health/ready", answer_json.static({"ready": True})),
    ]
    for endpoint in endpoints.values():
        routes += [
            Route(f"/v1/{endpoint.name}/info", answer_json.static(_info(manifest, endpoint))),
            Route(f"/v1/{endpoint.name}/{{version}}", _predict(endpoint, answer_json), methods=["POST"]),
            Route(f"/v2/models/{endpoint.name}", answer_json.static(oip.metadata(endpoint, version))),
            Route(f"/v2/models/{endpoint.name}/ready", answer_json.static({"name": endpoint.name, "ready": True})),
            Route(f"/v2/models/{endpoint.name}/infer", _infer(endpoint, answer_json), methods=["POST"]),
        ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.answers = answer_json
    app.state.manifest = manifest
    app.state.drift = drift
    app.state.known_routes = ", ".join(f"POST /v1/{name}/latest" for name in endpoints)
    return app


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


def _unready_app(reason: str) -> Starlette:
    """Alive, and honest about it: 200 on /health, 503 with ``reason`` everywhere else."""
    body = {"error": {"type": "not_ready", "message": reason}}

    async def unavailable(request: Request) -> Response:
        return Response(encode_json(body), status_code=503, media_type="application/json")

    routes = [
        Route("/health", lambda request: Response(encode_json({"status": "ok"}), media_type="application/json")),
        Route("/{path:path}", unavailable, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    app = Starlette(routes=routes)
    app.state.not_ready = reason
    return app


class _Answers:
    """Every answer of one service: JSON (or the docs page) with the ``X-Model-Version`` header."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.headers = {"X-Model-Version": version}

    def json(self, payload: Any, status: int = 200) -> Response:
        return Response(encode_json(payload), status_code=status, media_type="application/json", headers=self.headers)

    def error(self, status: int, error_type: str, message: str, **extra: Any) -> Response:
        return self.json({"error": {"type": error_type, "message": message, **extra}}, status)

    def static(self, payload: Any) -> Any:
        body = encode_json(payload)

        async def respond(request: Request) -> Response:
            return Response(body, media_type="application/json", headers=self.headers)

        return respond

    def static_html(self, page: str) -> Any:
        async def respond(request: Request) -> Response:
            return HTMLResponse(page, headers=self.headers)

        return respond


def _predict(endpoint: Endpoint, answers: _Answers) -> Any:
    async def predict(request: Request) -> Response:
        asked = request.path_params.get("version", "latest")
        if asked != "latest" and asked != answers.version:
            return answers.error(404, "not_found", f"{endpoint.name} has no version {asked!r}: use 'latest' or {answers.version!r}")
        try:
            return answers.json(await run_in_threadpool(answer, endpoint.invoker, read_body(await request.body())))
        except RequestError as exc:
            return answers.error(400, "bad_request", str(exc))
        except BindingError as exc:
            return answers.error(422, "validation_error", str(exc), **({"parameter": exc.parameter} if exc.parameter else {}))
        except CallFailed as exc:
            logger.error("%s raised %s", endpoint.name, type(exc.error).__name__, exc_info=exc.error)
            return answers.error(500, type(exc.error).__name__, f"{endpoint.name} raised: {exc.error}")
        except EncodeError as exc:
            return answers.error(500, "unencodable_result", f"{endpoint.name} returned a value that {exc}")

    return predict


def _infer(endpoint: Endpoint, answers: _Answers) -> Any:
    async def infer(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            return answers.json(await run_in_threadpool(oip.infer, endpoint, body, answers.version))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return answers.json({"error": f"the request body is not valid JSON ({exc})"}, 400)
        except oip.InferError as exc:
            return answers.json({"error": str(exc)}, 400)
        except EncodeError as exc:
            return answers.json({"error": f"{endpoint.name} returned a value that {exc}"}, 500)

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


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = f"{exc.detail}: {request.method} {request.url.path}"
    if exc.status_code in (404, 405):
        message += f". This service answers GET /health, GET /docs and {request.app.state.known_routes}"
    answers: _Answers = request.app.state.answers
    return answers.error(exc.status_code, _HTTP_ERROR_TYPES.get(exc.status_code, "http_error"), message)


_HTTP_ERROR_TYPES = {404: "not_found", 405: "method_not_allowed"}
