"""What several test modules share: paths, kernels seen from /proc, service directories made from a manifest
object (no kernel build), real server processes, and the local base image container builds use."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from nb2svc.image import podman_options
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
    "BASE_IMAGE",
    "FIXTURES",
    "PODMAN",
    "ROOT",
    "ServerProcess",
    "browser",
    "kernel_processes",
    "local_base_image",
    "make_service",
    "open_dashboard",
    "podman",
    "post_json",
    "request_log_line",
    "running_server",
    "try_it",
    "until",
    "uvicorn_access_lines",
    "write_manifest",
]

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
BASE_IMAGE = "localhost/nb2svc-test-base:bookworm"  # Debian bookworm: python3 3.11
PODMAN = ["podman", *podman_options()]


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


@contextmanager
def browser() -> Iterator[Any]:
    """A headless chromium driven by selenium (Debian's chromium and chromium-driver: `make browser`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail("Debian's chromium and chromium-driver are needed: `make browser` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="nb2svc-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def open_dashboard(driver: Any, url: str) -> None:
    """Load the dashboard at ``url`` and wait until it has listed the deployments."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/")
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "yes")


def try_it(driver: Any, version: Any) -> tuple[str, Any, str]:
    """Send a dashboard version's try-it form as it is: the HTTP status, the answer (parsed), the headers shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    version.find_element(By.CLASS_NAME, "try-send").click()
    status = version.find_element(By.CLASS_NAME, "try-status")
    WebDriverWait(driver, 20).until(lambda d: status.text.startswith("HTTP"))
    answer = json.loads(version.find_element(By.CLASS_NAME, "try-answer").text)
    return status.text, answer, version.find_element(By.CLASS_NAME, "try-headers").text


def post_json(url: str, body: Any) -> Any:
    """The answer of a direct ``POST url`` with ``body``, parsed."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True)


def local_base_image() -> str:
    """Debian bookworm's python3 as a local image (no image registry is reachable here): made once (about 40 s) by
    mmdebstrap and `podman import`, then found by its tag. `make container-tools` installs both."""
    if not (shutil.which("podman") and shutil.which("mmdebstrap")):
        pytest.fail("podman and mmdebstrap are needed: `make container-tools` installs them")
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the local base is Debian bookworm, whose python3 is 3.11: the kernel's Python must be 3.11")
    if podman("image", "exists", BASE_IMAGE).returncode != 0:
        with tempfile.TemporaryDirectory(prefix="nb2svc-base-") as scratch:
            rootfs = Path(scratch) / "rootfs.tar"
            include = "--include=python3-minimal,python3-venv,ca-certificates"
            made = subprocess.run(
                ["mmdebstrap", "--variant=minbase", include, "bookworm", str(rootfs)], capture_output=True, text=True
            )
            assert made.returncode == 0, made.stderr[-3000:]
            imported = podman("import", str(rootfs), BASE_IMAGE)
            assert imported.returncode == 0, imported.stderr
    return BASE_IMAGE
