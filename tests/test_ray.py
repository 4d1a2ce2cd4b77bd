"""The example on a real Ray cluster: `nb2svc serve DIR --ray --replicas 2` against a Ray head started here, in
network and PID namespaces of their own (loopback only; the kernel ends every Ray process with the namespace).
What runs inside is tests/ray_scenario.py; this module asserts on what it saw."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import nb2svc

from helpers import FIXTURES

pytestmark = [pytest.mark.ray, pytest.mark.e2e, pytest.mark.network]  # the build locks against the package index

SCENARIO = Path(__file__).with_name("ray_scenario.py")


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c", "ip link set lo up"]
    return subprocess.run(probe, capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("ray.serve")
    if not _namespaces_work():
        pytest.skip("needs unshare --net --pid (root, iproute2): Ray must see only loopback")
    service_dir = nb2svc.build(
        FIXTURES / "linear_regression.ipynb", tmp_path_factory.mktemp("built") / "lr_service"
    ).service_dir
    scratch = tmp_path_factory.mktemp("ray")
    inside = f"ip link set lo up && exec {sys.executable} {SCENARIO} {service_dir} {scratch}"
    # --kill-child: if this test gives up (timeout), unshare's end takes the namespace's first process with it.
    command = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", inside]
    env = {**os.environ, "PYTHONPATH": str(SCENARIO.parent)}
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    results = scratch / "observed.json"
    head_log = (scratch / "head.log").read_text() if (scratch / "head.log").exists() else ""
    assert results.exists(), f"{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}\n{head_log[-2000:]}"
    seen: dict[str, Any] = json.loads(results.read_text())
    shutil.rmtree(scratch / "ray", ignore_errors=True)  # Ray's temp dir: sessions, logs, sockets
    seen["manifest"] = json.loads((service_dir / "manifest.json").read_text())
    return seen


def test_ray_serve_answers_the_recorded_example_as_recorded(observed: dict[str, Any]) -> None:
    recorded = observed["manifest"]["endpoints"][0]["examples"][0]["response"]
    assert observed["ray"]["example"]["status"] == 200
    assert observed["ray"]["example"]["body"] == recorded
    assert observed["ray"]["ready"] == {"status": 200, "content_type": "application/json", "body": {"status": "ready"}}


def test_every_route_answers_through_ray_exactly_as_under_uvicorn(observed: dict[str, Any]) -> None:
    assert observed["ray"] == observed["uvicorn"]
    assert observed["ray"]["batch"]["status"] == 200 and len(observed["ray"]["batch"]["body"]["data"]) == 3
    bad = observed["ray"]["bad_request"]
    assert (bad["status"], bad["body"]["error"]["type"]) == (400, "bad_request")
    assert observed["ray"]["oip_infer"]["status"] == 200, observed["ray"]["oip_infer"]


def test_figures(observed: dict[str, Any]) -> None:
    """Not assertions: what `pytest -s` shows (NB2SVC_RAY_BENCH=SECONDS adds requests per second)."""
    print(json.dumps({"deployed_seconds": observed["deployed_seconds"], "rps": observed.get("rps")}))
    assert observed["deployed_seconds"] > 0


def test_a_killed_replica_is_replaced_and_the_stream_goes_on(observed: dict[str, Any]) -> None:
    kill = observed["kill"]
    print(json.dumps({k: v for k, v in kill.items() if k != "failed"}), kill["failed"][:5])
    assert len(kill["before"]) == 2 and kill["replaced_after_seconds"] is not None, kill
    assert len(kill["after"]) == 2 and kill["before"][0] not in kill["after"]
    assert kill["ok"] > 0
    # At most what was in flight on the killed replica, one request per client; each one's retry was answered.
    assert len(kill["failed"]) <= 4, kill["failed"]
    assert kill["retried_ok"] == len(kill["failed"])


def test_a_replica_whose_service_is_not_ready_takes_no_traffic_and_serve_says_why(observed: dict[str, Any]) -> None:
    broken = observed["broken"]
    assert broken["exit"] == 15, broken["stderr"]
    assert "error: Ray Serve could not start the replicas of broken:" in broken["stderr"]
    assert "service not ready (artifact): " in broken["stderr"] and "does not match the manifest" in broken["stderr"]


def test_sigterm_deletes_the_application_and_exits_0(observed: dict[str, Any]) -> None:
    assert observed["serve_exit"] == 0, observed["ray_output"]
    assert "Deleting app ['lr_service']" in observed["ray_output"]
