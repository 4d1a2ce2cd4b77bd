"""Per request: an id (X-Request-ID), one JSON log line, and Prometheus metrics (several workers included)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .encoding import encode_json


class Metrics:
    """The service's metrics, in a registry of its own (or shared files with PROMETHEUS_MULTIPROC_DIR)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        labels = ["endpoint", "version", "status"]  # version: the model's, or a registry's version number
        self.requests = Counter("nb2svc_requests", "Requests answered", labels, registry=self.registry)
        self.latency = Histogram("nb2svc_request_duration_seconds", "Time to answer", labels, registry=self.registry)
        self.in_flight = Gauge(
            "nb2svc_requests_in_flight", "Requests being answered", registry=self.registry, multiprocess_mode="livesum"
        )
        self.errors = Counter(
            "nb2svc_predict_errors", "Calls that raised", ["endpoint", "version", "type"], registry=self.registry
        )
        self.rows = Histogram(
            "nb2svc_batch_rows",
            "Rows per predict request",
            ["endpoint"],
            registry=self.registry,
            buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000),
        )
        self.load_seconds = Gauge(
            "nb2svc_model_load_seconds",
            "Time to load the artifacts and replay the examples",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.batch_inputs = Histogram(
            "nb2svc_batch_inputs",
            "Inputs per call of a batchable function",
            ["endpoint"],
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.queue_wait = Histogram(
            "nb2svc_queue_wait_seconds",
            "Time a call to a batchable function waited to join a batch",
            ["endpoint"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.call_seconds = Histogram(
            "nb2svc_batch_call_seconds",
            "Time of one call of a batchable function (a whole batch)",
            ["endpoint"],
            registry=self.registry,
        )
        self.queued = Gauge(
            "nb2svc_batch_queue_inputs",
            "Inputs waiting to join a batch",
            ["endpoint"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.server = Gauge(
            "nb2svc_server_info",
            "The event loop and the HTTP parser that serve the requests (1 for the pair in use)",
            ["loop", "http"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    def batching(self, endpoint: str) -> BatchMetrics:
        """The batching metrics of one batchable endpoint."""
        return BatchMetrics(
            self.batch_inputs.labels(endpoint),
            self.queue_wait.labels(endpoint),
            self.call_seconds.labels(endpoint),
            self.queued.labels(endpoint),
        )

    def served_by(self, receive: Receive) -> None:
        """Record what serves the requests, as seen from one: the running loop's package (``uvloop``, ``asyncio``)
        and the server's HTTP implementation that ``receive`` belongs to (``httptools``, ``h11`` under uvicorn)."""
        loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]
        cycle = getattr(receive, "__self__", None)  # uvicorn's receive is a method of the connection's request cycle
        module = type(cycle).__module__ if cycle is not None else getattr(receive, "__module__", "")
        http = module.rpartition(".")[2].removesuffix("_impl")  # uvicorn.protocols.http.httptools_impl
        self.server.labels(loop, http).set(1)

    def answered(self, endpoint: str, version: str, status: int, seconds: float, rows: int | None) -> None:
        """Count one answer; the labelled children are looked up once per (endpoint, version, status), then reused."""
        key = (endpoint, version, status)
        children = self._children.get(key)
        if children is None:
            labels = (endpoint, version, str(status))
            children = self._children[key] = (
                self.requests.labels(*labels),
                self.latency.labels(*labels),
                self.rows.labels(endpoint),
            )
        children[0].inc()
        children[1].observe(seconds)
        if endpoint and rows is not None:
            children[2].observe(rows)

    def exposition(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)


@dataclass(frozen=True)
class BatchMetrics:
    batch_inputs: Any
    queue_wait: Any
    call_seconds: Any
    queued: Any


class RequestLog:
    """ASGI middleware: X-Request-ID in and out, one JSON line per request, request metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._server_seen = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._server_seen:
            self._server_seen = True
            self.metrics.served_by(receive)
        # Not os.urandom: it lets go of the GIL for its system call, and under load a worker thread waiting to run
        # a call takes it, holding up the event loop for that whole call (3 thread switches a request, not 1).
        request_id = _header(scope, b"x-request-id") or f"{random.getrandbits(128):032x}"
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        in_flight = self.metrics.in_flight
        in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            in_flight.dec()
            self._record(scope, request_id, status, time.perf_counter() - started)

    def _record(self, scope: Scope, request_id: str, status: int, seconds: float) -> None:
        state: dict[str, Any] = scope["state"]
        endpoint, version = state.get("endpoint", ""), state.get("version", "")
        rows = state.get("rows")
        self.metrics.answered(endpoint, version, status, seconds, rows)
        line = {
            "time": round(time.time(), 3),
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"],
            "endpoint": endpoint or None,
            "version": version or None,
            "status": status,
            "duration_ms": round(seconds * 1000, 3),
            "rows": rows,
        }
        # Straight to stderr: the logging module's records cost more than the request's own work.
        sys.stderr.write(encode_json(line).decode("utf-8") + "\n")


def quiet_uvicorn_access_log() -> None:
    """Turn uvicorn's access log off: the service writes its own line per request, and ``uvicorn app:app`` would
    write a second one. This is what uvicorn's ``--no-access-log`` does (``Config.configure_logging``); uvicorn
    configures its logging before it imports the app, and each connection it opens logs requests only if
    ``logging.getLogger("uvicorn.access").hasHandlers()``. Its other loggers (``uvicorn.error``) are untouched."""
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            text = value.decode("latin-1").strip()
            return text[:128] if text else None
    return None
