"""The one path every prediction takes, whatever protocol it came by: read -> validate -> execute -> encode.

A protocol (``modelbit``, ``oip``) only says how it reads its request into a ``Call`` and
how it writes an error; limits, the executor, metrics, the log line and every error's
status are the same for all. Errors are raised as ``ServiceError``s and answered by
``service_error``, the one handler the app registers for them.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from .body import parse_json, read_body
from .encoding import encode_json
from .endpoint import Endpoint
from .errors import CallFailed, ServiceError, TimedOut, TooLarge, Unencodable
from .executor import Call, Executor
from .observability import Metrics
from .settings import Settings

logger = logging.getLogger("nb2svc.runtime")


class RequestProtocol(Protocol):
    """How one protocol reads its requests and writes its errors."""

    def read(self, payload: Any, endpoint: Endpoint) -> Call: ...

    def error_body(self, error: ServiceError, request_id: str, extra: dict[str, Any]) -> dict[str, Any]: ...


@dataclass
class Service:
    """What answering a loaded service's requests takes: its settings, executor, metrics and headers."""

    version: str
    settings: Settings
    executor: Executor
    metrics: Metrics
    headers: dict[str, str] = field(default_factory=dict)
    label: str = ""  # the version its metrics and log lines name: the model's, or a registry's version number

    def json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(encode_json(payload), status, headers or self.headers, "application/json")


async def answer(request: Request, service: Service, endpoint: Endpoint, protocol: RequestProtocol) -> Response:
    """The response to one prediction request; every failure is raised as a ServiceError."""
    attribute(request, service, endpoint.name, protocol)
    call = protocol.read(parse_json(await read_body(request, service.settings)), endpoint)
    if call.inputs is not None:  # to be gathered: dropped if its client goes while it waits
        call.disconnected = request.is_disconnected
    request.state.rows = call.rows
    limit = service.settings.max_batch_rows
    if call.rows > limit:
        raise TooLarge(f"the batch has {call.rows} rows; the limit is {limit} (NB2SVC_MAX_BATCH_ROWS)")
    try:
        result = await service.executor.run(call)
        for _, error in result.get("errors", ()):  # rows whose call raised (not those that failed validation)
            if error["type"] != "validation_error":
                service.metrics.errors.labels(endpoint.name, service.label, error["type"]).inc()
        return service.json(result)
    except CallFailed as exc:
        raise exc.with_endpoint(endpoint.name) from exc.error
    except TimedOut as exc:
        raise TimedOut(f"{endpoint.name}: {exc.message}") from None
    except Unencodable as exc:  # on the executor (a tensor) or here
        raise Unencodable(f"{endpoint.name} returned a value JSON cannot hold: {exc.message}") from None


def attribute(request: Request, service: Service, endpoint: str, protocol: RequestProtocol) -> None:
    """Whose request this is: its metrics and log line name the endpoint and version, its errors take the
    service's headers and the protocol's format."""
    state = request.state
    state.endpoint, state.version, state.service, state.protocol = endpoint, service.label, service, protocol


async def service_error(request: Request, exc: Exception) -> Response:
    """The one handler of ServiceErrors: counted and logged where the function raised, written as the protocol says."""
    assert isinstance(exc, ServiceError)
    state = request.state
    service: Service = getattr(state, "service", None) or request.app.state.service
    extra = {}
    if isinstance(exc, CallFailed):
        service.metrics.errors.labels(exc.endpoint, service.label, exc.type).inc()
        logger.error("%s raised %s (request %s)", exc.endpoint, exc.type, state.request_id, exc_info=exc.error)
        if service.settings.debug:
            extra["traceback"] = "".join(traceback.format_exception(exc.error))
    body = (getattr(state, "protocol", None) or request.app.state.protocol).error_body(exc, state.request_id, extra)
    return service.json(body, exc.status, {**service.headers, **exc.headers})
