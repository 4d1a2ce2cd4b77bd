"""Throughput of a built service against a hand-written Starlette app serving the same function.

Builds fixtures/linear_regression.ipynb, serves it and the baseline in turn with uvicorn (one worker,
127.0.0.1), drives each with wrk, alternating rounds, and prints requests per second. Needs wrk.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BODIES = {"single": '{"data": 3}', "batch of 3": '{"data": [[1, 3], [2, 5], [3, 9]]}'}
ROUNDS, SECONDS, CONNECTIONS = 5, 6, 16
# The server on one core, wrk on the other, so that they do not take turns on the same one.
SERVER_CPU, WRK_CPU = "0", "1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(command: list[str], cwd: Path, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/my_lr_deployement/latest", data=b'{"data": 1}')
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{command} did not start")


def wrk(port: int, body: str) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = {body!r}\nwrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(
        [
            "taskset",
            "-c",
            WRK_CPU,
            "wrk",
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{SECONDS}s",
            "-s",
            script.name,
            f"http://127.0.0.1:{port}/v1/my_lr_deployement/latest",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    if "Non-2xx" in out:
        raise SystemExit(f"errors during the run:\n{out}")
    requests_per_second = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if requests_per_second is None:
        raise SystemExit(f"wrk printed no Requests/sec:\n{out}")
    return float(requests_per_second.group(1))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="nb2svc-bench-"))
    service = work / "lr_service"
    subprocess.run(
        [str(BIN / "nb2svc"), "build", str(ROOT / "fixtures/linear_regression.ipynb"), "-o", str(service)],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    env = {**os.environ, "BENCH_ARTIFACT": str(service / "artifacts/my_lr_deployement.pkl")}
    uvicorn = [
        "taskset",
        "-c",
        SERVER_CPU,
        str(BIN / "python"),
        "-m",
        "uvicorn",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    apps = {
        "nb2svc service": (uvicorn + ["app:app"], service),
        "hand-written Starlette": (uvicorn + ["handwritten_app:app"], Path(__file__).parent),
    }
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(ROUNDS):
        for name, (command, cwd) in apps.items():
            port = free_port()
            process = start(command + ["--port", str(port)], cwd, env, port)
            try:
                for label, body in BODIES.items():
                    results.setdefault((name, label), []).append(wrk(port, body))
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait()
    subprocess.run([str(BIN / "python"), str(Path(__file__).with_name("asgi.py")), str(service)], check=True)
    print(
        f"wrk -t1 -c{CONNECTIONS} -d{SECONDS}s on CPU {WRK_CPU}, one uvicorn worker on CPU {SERVER_CPU}, "
        f"{ROUNDS} alternating rounds, median requests/s"
    )
    for label in BODIES:
        service_rps = statistics.median(results[("nb2svc service", label)])
        baseline_rps = statistics.median(results[("hand-written Starlette", label)])
        print(
            f"  {label:11} nb2svc {service_rps:8.0f}   hand-written {baseline_rps:8.0f}   "
            f"ratio {service_rps / baseline_rps:.3f}"
        )


if __name__ == "__main__":
    main()
