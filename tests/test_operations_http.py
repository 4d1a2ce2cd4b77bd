"""The operational statuses over real HTTP, from `nb2svc serve` on a real port, and a graceful SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

import nb2svc

from helpers import FIXTURES, ServerProcess, running_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("ops") / "operations"
    nb2svc.build(FIXTURES / "operations.ipynb", output)
    return output


@pytest.fixture
def server(service: Path, unused_tcp_port: int) -> Iterator[ServerProcess]:
    command = [
        sys.executable,
        "-m",
        "nb2svc",
        "serve",
        str(service),
        "--port",
        str(unused_tcp_port),
        "--max-body-bytes",
        "1000",
        "--max-batch-rows",
        "5",
        "--timeout",
        "1",
        "--max-concurrent",
        "1",
    ]
    env = {**os.environ, "NB2SVC_API_KEY": "old-key,new-key"}
    with running_server(command, unused_tcp_port, env=env, ready_path="/ready") as server:
        yield server


def test_statuses_over_http(server: ServerProcess) -> None:
    base = server.url
    url = f"{base}/v1/double/latest"
    key = {"Authorization": "Bearer new-key"}
    assert httpx.get(f"{base}/health").status_code == 200
    assert httpx.get(f"{base}/ready").status_code == 200
    assert httpx.get(f"{base}/metrics").status_code == 200
    assert httpx.post(url, json={"data": 1}).status_code == 401
    assert httpx.post(url, json={"data": 1}, headers={"Authorization": "nope"}).status_code == 403
    answered = httpx.post(url, json={"data": 1}, headers={"Authorization": "old-key"})
    assert answered.status_code == 200 and answered.json() == {"data": 2.0}
    assert answered.headers["x-request-id"] and answered.headers["x-model-version"]
    assert httpx.post(url, content="{", headers=key).status_code == 400
    assert httpx.post(url, json={"data": "x"}, headers=key).status_code == 422
    assert httpx.post(url, json={"data": "x" * 2000}, headers=key).status_code == 413
    assert httpx.post(url, json={"data": [[i, i] for i in range(6)]}, headers=key).status_code == 413
    slow = httpx.post(f"{base}/v1/slow/latest", json={"data": 2}, headers=key, timeout=10)
    assert slow.status_code == 504
    busy = httpx.post(url, json={"data": 1}, headers=key)  # the slow call still holds the only slot
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert "Traceback" not in slow.text + busy.text


def test_sigterm_finishes_the_request_in_flight_then_exits_0(server: ServerProcess) -> None:
    base, process = server.url, server.process
    answers: list[httpx.Response] = []
    call = threading.Thread(
        target=lambda: answers.append(
            httpx.post(f"{base}/v1/slow/latest", json={"data": 0.7}, headers={"Authorization": "new-key"}, timeout=10)
        )
    )
    call.start()
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGTERM)
    call.join()
    assert answers[0].status_code == 200 and answers[0].json() == {"data": 0.7}
    assert process.wait(timeout=30) == 0
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{base}/health", timeout=1)
