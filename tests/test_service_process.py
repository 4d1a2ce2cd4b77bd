"""A service directory run for real (uvicorn on a port), made from a manifest object: no kernel, no index."""

from __future__ import annotations

import http.server
import json
import os
import socket
import sys
import threading
from pathlib import Path

import httpx2 as httpx
import pytest

from nb2svc.errors import ServiceDidNotStart, VerifyMismatch
from nb2svc.verification import _require_ready

from helpers import make_service, request_log_line, running_server, uvicorn_access_lines

pytestmark = pytest.mark.e2e


def fails(x):
    raise ValueError(f"cannot handle {x!r}")


def double(x):
    return x * 2


def commands(service: Path, port: int) -> dict[str, list[str]]:
    return {
        "nb2svc serve": [sys.executable, "-m", "nb2svc", "serve", str(service), "--port", str(port)],
        "uvicorn app:app": [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port), "--app-dir", str(service)],
    }


@pytest.mark.parametrize("how", ["nb2svc serve", "uvicorn app:app"])
@pytest.mark.parametrize(("value", "traceback"), [("on", True), ("off", False)])
def test_serve_and_uvicorn_read_the_debug_setting_alike(
    tmp_path: Path, unused_tcp_port: int, how: str, value: str, traceback: bool
) -> None:
    service = make_service(tmp_path, runnable=True, fails=fails)
    env = {**os.environ, "NB2SVC_DEBUG": value}
    with running_server(commands(service, unused_tcp_port)[how], unused_tcp_port, cwd=service, env=env) as server:
        error = httpx.post(f"{server.url}/v1/fails/latest", json={"data": 1}).json()["error"]
    assert ("traceback" in error) is traceback, error


@pytest.mark.parametrize("how", ["nb2svc serve", "uvicorn app:app"])
def test_served_on_uvloop_and_httptools_with_one_log_line_per_request(
    tmp_path: Path, unused_tcp_port: int, how: str
) -> None:
    service = make_service(tmp_path, runnable=True, double=double)
    with running_server(commands(service, unused_tcp_port)[how], unused_tcp_port, cwd=service) as server:
        answer = httpx.post(f"{server.url}/v1/double/latest", json={"data": 2}, headers={"X-Request-ID": "once"})
        line = request_log_line(server, "once")
        metrics = httpx.get(f"{server.url}/metrics").text
        output = server.output()
    assert answer.json() == {"data": 4}
    assert (line["path"], line["status"], line["endpoint"]) == ("/v1/double/latest", 200, "double")
    assert 'nb2svc_server_info{http="httptools",loop="uvloop"} 1.0' in metrics
    assert uvicorn_access_lines(output) == []  # the requests, /health polls included, are logged once: as JSON
    assert "Application startup complete." in output  # uvicorn's other logs are still there


def test_the_server_info_says_what_serves_when_it_is_not_uvloop_and_httptools(
    tmp_path: Path, unused_tcp_port: int
) -> None:
    service = make_service(tmp_path, runnable=True, double=double)
    command = commands(service, unused_tcp_port)["uvicorn app:app"] + ["--loop", "asyncio", "--http", "h11"]
    with running_server(command, unused_tcp_port, cwd=service) as server:
        metrics = httpx.get(f"{server.url}/metrics").text
    assert 'nb2svc_server_info{http="h11",loop="asyncio"} 1.0' in metrics
    assert "uvloop" not in metrics and "httptools" not in metrics


def test_a_body_that_stalls_is_answered_408_and_its_connection_closed(tmp_path: Path, unused_tcp_port: int) -> None:
    service = make_service(tmp_path, runnable=True, double=double)
    command = commands(service, unused_tcp_port)["nb2svc serve"] + ["--body-timeout", "0.5"]
    with running_server(command, unused_tcp_port) as server:
        stalled = [socket.create_connection(("127.0.0.1", unused_tcp_port), timeout=30) for _ in range(50)]
        for connection in stalled:  # the headers promise 100 bytes; none follow
            connection.sendall(b"POST /v1/double/latest HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        for connection in stalled:
            answer = _read_until_closed(connection)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "request_timeout"
        assert httpx.post(f"{server.url}/v1/double/latest", json={"data": 2}).json() == {"data": 4}


def _read_until_closed(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout fails the test)."""
    received = b""
    with connection:
        while chunk := connection.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize(
    ("example", "error"),
    [
        ({"request": {"data": 2}, "response": {"data": 5}}, VerifyMismatch),
        ({"request": {"data": None}, "response": {"data": 5}}, ServiceDidNotStart),
    ],
)
def test_verify_reads_why_a_real_service_is_not_ready(
    tmp_path: Path, unused_tcp_port: int, example: dict[str, object], error: type[Exception]
) -> None:
    service = make_service(tmp_path, runnable=True, double=double)
    manifest = json.loads((service / "manifest.json").read_text())
    manifest["endpoints"][0]["examples"] = [example]
    (service / "manifest.json").write_text(json.dumps(manifest))
    with running_server(commands(service, unused_tcp_port)["uvicorn app:app"], unused_tcp_port) as server:
        with pytest.raises(error):
            _require_ready(server.url)


@pytest.mark.parametrize(
    ("kind", "message", "error"),
    [  # the words mislead on purpose: the kind decides
        ("example_mismatch", "example 1 of f gives 5, not 4", VerifyMismatch),
        ("example_failed", "example 1 of f answers differently from the training kernel", ServiceDidNotStart),
        ("artifact", "answers differently from the training kernel", ServiceDidNotStart),
    ],
)
def test_verify_picks_its_exit_code_from_the_kind_not_the_words(
    kind: str, message: str, error: type[Exception]
) -> None:
    body = json.dumps({"error": {"type": "not_ready", "kind": kind, "message": message}}).encode()

    class NotReady(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotReady) as stub:
        serving = threading.Thread(target=stub.serve_forever)
        serving.start()
        try:
            with pytest.raises(error) as raised:
                _require_ready(f"http://127.0.0.1:{stub.server_address[1]}")
        finally:
            stub.shutdown()
            serving.join()
    assert message in str(raised.value)
