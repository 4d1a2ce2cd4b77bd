"""What several test modules share: paths, kernels seen from /proc, service directories made from a manifest
object (no kernel build), and real server processes."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle

from nb2svc.render import copy_runtime
from nb2svc.runtime import schema
from nb2svc.runtime.manifest import (
    EndpointDescription,
    Example,
    LockDescription,
    Manifest,
    NotebookDescription,
    PythonDescription,
)
from nb2svc.server_process import ServerProcess, running_server

__all__ = [
    "FIXTURES",
    "ROOT",
    "ServerProcess",
    "kernel_processes",
    "make_service",
    "request_log_line",
    "running_server",
    "until",
    "uvicorn_access_lines",
    "write_manifest",
]

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def kernel_processes() -> list[str]:
    """Command lines of the live child processes of this test process that are Jupyter kernels."""
    children = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        children += (task / "children").read_text().split()
    lines = []
    for pid in children:
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except FileNotFoundError:
            continue
    return [line for line in lines if "ipykernel" in line]


def describe(
    name: str, function: Callable[..., Any], payload: bytes, examples: tuple[Example, ...] = ()
) -> EndpointDescription:
    """The manifest's description of ``function``, as a build writes it (with the runtime's ``describe``)."""
    function_description = schema.describe(function)
    return EndpointDescription(
        name=name,
        cell=1,
        artifact=f"artifacts/{name}.pkl",
        sha256=hashlib.sha256(payload).hexdigest(),
        bytes=len(payload),
        examples=examples,
        **{f.name: getattr(function_description, f.name) for f in dataclasses.fields(function_description)},
    )


def make_service(
    directory: Path, pins: dict[str, str] | None = None, runnable: bool = False, **functions: Callable[..., Any]
) -> Path:
    """A service directory serving ``functions`` (pickled by value), its manifest made as a build makes it.

    ``runnable``: with its runtime and app.py too, so that ``uvicorn app:app`` and ``nb2svc serve`` run it
    (the functions then travel by value, as a notebook's do; in-process they stay references to the test module).
    """
    (directory / "artifacts").mkdir(parents=True)
    if runnable:
        copy_runtime(directory)
        shutil.copy(ROOT / "nb2svc" / "templates" / "app.py", directory / "app.py")
    endpoints = []
    for name, function in functions.items():
        payload = _by_value(function) if runnable else cloudpickle.dumps(function)
        (directory / "artifacts" / f"{name}.pkl").write_bytes(payload)
        endpoints.append(describe(name, function, payload))
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    manifest = Manifest(
        name="test",
        version="0123456789ab",
        nb2svc_version="0",
        built_at="2026-11-29T00:00:00+00:00",
        notebook=NotebookDescription("test.ipynb", "0" * 64),
        source="build",
        python=PythonDescription(f"{minor}.0", minor, "cpython"),
        cloudpickle_version=cloudpickle.__version__,
        endpoints=tuple(endpoints),
        lock=LockDescription("none", minor, True, False, None, (), pins or {}),
    )
    write_manifest(directory, manifest)
    return directory


def _by_value(function: Callable[..., Any]) -> bytes:
    """Pickled with its module's code, as a notebook's functions are: the service needs no test module to load it."""
    module = sys.modules[function.__module__]
    cloudpickle.register_pickle_by_value(module)
    try:
        payload: bytes = cloudpickle.dumps(function)
        return payload
    finally:
        cloudpickle.unregister_pickle_by_value(module)


async def until(condition: Callable[[], bool]) -> None:
    """Let the event loop run until ``condition()`` holds (no timed sleeps: each turn runs the ready tasks)."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def write_manifest(directory: Path, manifest: Manifest) -> None:
    (directory / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")


def request_log_line(server: ServerProcess, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The service's JSON log line for the request ``request_id``, waited for: it is written once the answer is sent."""
    deadline = time.monotonic() + timeout
    while True:
        for line in server.output().splitlines():
            if line.startswith("{") and json.loads(line).get("request_id") == request_id:
                return dict(json.loads(line))
        assert time.monotonic() < deadline, f"no log line for {request_id} in:\n{server.output()}"
        time.sleep(0.05)


def uvicorn_access_lines(output: str) -> list[str]:
    """uvicorn's own access log lines (``127.0.0.1:5000 - "GET /health HTTP/1.1" 200 OK``) in a server's output."""
    return re.findall(r'^.*"[A-Z]+ \S+ HTTP/1\.1" \d{3}.*$', output, re.MULTILINE)
