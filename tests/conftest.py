from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

import cloudpickle

import httpx2 as httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def lock_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One lock cache for the session (builds in subprocesses inherit it), away from the user's own."""
    cache = tmp_path_factory.mktemp("nb2svc-cache")
    previous = os.environ.get("NB2SVC_CACHE_DIR")
    os.environ["NB2SVC_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        del os.environ["NB2SVC_CACHE_DIR"]
    else:
        os.environ["NB2SVC_CACHE_DIR"] = previous


@pytest.fixture
def unused_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def make_service(directory: Path, pins: dict[str, str] | None = None, **functions: Callable[..., Any]) -> Path:
    (directory / "artifacts").mkdir(parents=True)
    endpoints = []
    for name, function in functions.items():
        payload = cloudpickle.dumps(function)
        (directory / "artifacts" / f"{name}.pkl").write_bytes(payload)
        endpoints.append({"name": name, "artifact": f"artifacts/{name}.pkl", "sha256": hashlib.sha256(payload).hexdigest()})
    manifest = {
        "name": "test",
        "version": "0123456789ab",
        "nb2svc_version": "0",
        "notebook": {"file": "test.ipynb", "sha256": "0" * 64},
        "endpoints": endpoints,
        "python": {"minor": f"{sys.version_info.major}.{sys.version_info.minor}"},
        "cloudpickle_version": cloudpickle.__version__,
        "lock": {"pins": pins or {}},
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: IO[str]

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()


@contextmanager
def running_server(command: list[str], port: int, cwd: Path | None = None, env: dict[str, str] | None = None,
                   ready_path: str = "/health", timeout: float = 60) -> Iterator[Server]:
    """Start a server process, wait until ``ready_path`` answers 200, yield it, then stop it by PID if it still runs."""
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}:\n{server.output()}")
            try:
                if httpx.get(f"{server.url}{ready_path}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not answer {ready_path} within {timeout}s:\n{server.output()}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
