"""What tests/test_ray.py observes of a service on Ray Serve, run as one program inside network and PID
namespaces of its own (loopback only; when this program, the namespace's first process, exits, the kernel ends
every Ray process with it).

    unshare --net --pid --fork --mount-proc sh -c 'ip link set lo up && exec python ray_scenario.py SERVICE_DIR TMP'

It starts a Ray head, `nb2svc serve SERVICE_DIR --ray --replicas 2`, and `nb2svc serve SERVICE_DIR` (uvicorn) beside
it; sends both the same requests; kills one replica's process during a steady stream of requests and counts what
was lost; with NB2SVC_RAY_BENCH=SECONDS also measures requests per second through each. It writes what it saw as
JSON to TMP/observed.json: the test asserts on that.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from nb2svc.server_process import running_server

RAY_PORT, UVICORN_PORT, GCS = 8000, 8001, "127.0.0.1:6379"
REPLICA_CLASS = "ServeReplica:{name}:{name}"
STREAM_THREADS = 4


def request(port: int, method: str, path: str, body: Any = None, raw: bytes | None = None) -> dict[str, Any]:
    """One request on a new connection: its status, content type and body (JSON where it is)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    connection.request(method, path, body=payload, headers={"X-Request-ID": "same-id"})
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = text
    return {"status": response.status, "content_type": response.getheader("content-type"), "body": parsed}


def answers(port: int, manifest: dict[str, Any]) -> dict[str, Any]:
    endpoint = manifest["endpoints"][0]
    name, example = endpoint["name"], endpoint["examples"][0]["request"]
    route = f"/v1/{name}/latest"
    infer = {"inputs": [{"name": "input_x", "datatype": "FP64", "shape": [1], "data": [3]}]}
    return {
        "example": request(port, "POST", route, example),
        "batch": request(port, "POST", route, {"data": [[1, 3], [2, 5], [3, 9]]}),
        "bad_request": request(port, "POST", route, raw=b"{not json"),
        "oip_infer": request(port, "POST", f"/v2/models/{name}/infer", infer),
        "oip_ready": request(port, "GET", f"/v2/models/{name}/ready"),
        "ready": request(port, "GET", "/ready"),
    }


class Stream:
    """``STREAM_THREADS`` clients, each posting the example over its own keep-alive connection, one after another."""

    def __init__(self, port: int, route: str, body: Any) -> None:
        self.port, self.route, self.body = port, route, json.dumps(body).encode()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failed: list[str] = []
        self.retried_ok = 0  # failures whose immediate retry was answered
        self.threads = [threading.Thread(target=self._client) for _ in range(STREAM_THREADS)]

    def __enter__(self) -> Stream:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def _client(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stopping.is_set():
            connection, outcome = self._post(connection)
            retried = None
            if outcome is not None:  # would the client's one retry have been answered?
                connection, retried = self._post(connection)
            with self.lock:
                if outcome is None:
                    self.ok += 1
                else:
                    self.failed.append(outcome)
                    self.retried_ok += retried is None
        connection.close()

    def _post(self, connection: http.client.HTTPConnection) -> tuple[http.client.HTTPConnection, str | None]:
        """The connection to go on with, and None or what went wrong."""
        try:
            connection.request("POST", self.route, body=self.body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read()
            return connection, None if response.status == 200 else f"{response.status} {text[:200]!r}"
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30), f"{type(exc).__name__}: {exc}"


def replica_pids(name: str) -> list[int]:
    """The live replicas' process ids, from Ray's public state API."""
    from ray.util.state import list_actors

    alive = list_actors(filters=[("class_name", "=", REPLICA_CLASS.format(name=name)), ("state", "=", "ALIVE")])
    return sorted(actor.pid for actor in alive if actor.pid is not None)


def kill_one_replica(name: str, route: str, example: Any) -> dict[str, Any]:
    """SIGKILL one replica during a steady stream; wait until Ray has two live replicas again, one of them new."""
    import ray

    ray.init(address=GCS, logging_level=logging.ERROR, log_to_driver=False)
    before = replica_pids(name)
    with Stream(RAY_PORT, route, example) as stream:
        time.sleep(2)
        os.kill(before[0], signal.SIGKILL)
        killed_at = time.monotonic()
        replaced_after = None
        while time.monotonic() - killed_at < 90:
            now = replica_pids(name)
            if len(now) == 2 and before[0] not in now and _answers_ready():
                replaced_after = time.monotonic() - killed_at
                break
            time.sleep(0.25)
        time.sleep(2)  # the stream goes on through the new replica too
    return {
        "before": before,
        "after": replica_pids(name),
        "replaced_after_seconds": replaced_after,
        "ok": stream.ok,
        "failed": stream.failed,
        "retried_ok": stream.retried_ok,
    }


def _answers_ready() -> bool:
    return bool(request(RAY_PORT, "GET", "/ready")["status"] == 200)


def requests_per_second(port: int, route: str, example: Any, seconds: float) -> float:
    with Stream(port, route, example) as stream:
        time.sleep(seconds)
    return stream.ok / seconds


def deploy_broken_copy(service_dir: Path, scratch: Path, env: dict[str, str]) -> dict[str, Any]:
    """A copy whose artifact changed after the build: its replicas fail their first health check."""
    broken = scratch / "broken"
    shutil.copytree(service_dir, broken)
    artifact = next((broken / "artifacts").glob("*.pkl"))
    artifact.write_bytes(artifact.read_bytes() + b"changed")
    command = [sys.executable, "-m", "nb2svc", "serve", str(broken), "--ray", "--address", GCS, "--port", "8002"]
    started = time.monotonic()
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    return {"exit": finished.returncode, "stderr": finished.stderr[-3000:], "seconds": time.monotonic() - started}


def main(service_dir: Path, scratch: Path) -> None:
    manifest = json.loads((service_dir / "manifest.json").read_text())
    endpoint = manifest["endpoints"][0]
    route, example = f"/v1/{endpoint['name']}/latest", endpoint["examples"][0]["request"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         "--port=6379", "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         "--disable-usage-stats", f"--temp-dir={scratch / 'ray'}"],
        env=env, stdout=(scratch / "head.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    observed: dict[str, Any] = {}
    nb2svc = [sys.executable, "-m", "nb2svc", "serve", str(service_dir)]
    on_ray = [*nb2svc, "--ray", "--replicas", "2", "--address", GCS, "--port", str(RAY_PORT)]
    started = time.monotonic()
    with running_server(on_ray, RAY_PORT, env=env, ready_path="/ready", timeout=180) as ray_server:
        observed["deployed_seconds"] = time.monotonic() - started
        with running_server([*nb2svc, "--port", str(UVICORN_PORT)], UVICORN_PORT, env=env) as uvicorn_server:
            observed["ray"] = answers(RAY_PORT, manifest)
            observed["uvicorn"] = answers(UVICORN_PORT, manifest)
            observed["kill"] = kill_one_replica(service_dir.name, route, example)
            bench = float(os.environ.get("NB2SVC_RAY_BENCH", "0"))
            if bench:
                observed["rps"] = {
                    "ray": requests_per_second(RAY_PORT, route, example, bench),
                    "uvicorn": requests_per_second(UVICORN_PORT, route, example, bench),
                }
            observed["uvicorn_output"] = uvicorn_server.output()[-2000:]
        ray_server.process.send_signal(signal.SIGTERM)  # the application is deleted, then the command exits
        observed["serve_exit"] = ray_server.process.wait(timeout=60)
        observed["ray_output"] = ray_server.output()[-4000:]
    observed["broken"] = deploy_broken_copy(service_dir, scratch, env)
    (scratch / "observed.json").write_text(json.dumps(observed, indent=1))
    head.send_signal(signal.SIGTERM)  # the rest ends with this namespace's first process: this one


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
