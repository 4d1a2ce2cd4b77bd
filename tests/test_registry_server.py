"""One server for a whole registry: every version at its number, latest and aliases; versions added, removed and
re-aliased while it runs; a version that fails to load never takes traffic."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

import nb2svc
from nb2svc.cli import cli
from nb2svc.errors import UsageError
from nb2svc.registry import Registry
from nb2svc.registry_catalog import Scanner
from nb2svc.registry_server import create_registry_app
from nb2svc.runtime.calls import Service
from nb2svc.runtime.manifest import read_manifest
from nb2svc.runtime.settings import Settings
from nb2svc.runtime.verified import record_verification

from helpers import FIXTURES, ServerProcess, make_service, running_server

OFFSETS = (1, 2, 3)  # a model per offset: add_offset(x) = x + offset


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Service directories built from fixtures/offset.ipynb, one per offset (the notebook's constant changed)."""
    notebook = json.loads((FIXTURES / "offset.ipynb").read_text(encoding="utf-8"))
    built = {}
    for offset in OFFSETS:
        folder = tmp_path_factory.mktemp(f"offset{offset}")
        notebook["cells"][1]["source"] = [f"offset = {offset}"]
        (folder / "offset.ipynb").write_text(json.dumps(notebook), encoding="utf-8")
        built[offset] = nb2svc.build(folder / "offset.ipynb", folder / "service").service_dir
    return built


def copy_of(service: Path) -> Callable[[Path], None]:
    def write(directory: Path) -> None:
        shutil.copytree(service, directory, dirs_exist_ok=True)

    return write


def corrupted_copy_of(service: Path) -> Callable[[Path], None]:
    def write(directory: Path) -> None:
        shutil.copytree(service, directory, dirs_exist_ok=True)
        [artifact] = (directory / "artifacts").glob("*.pkl")
        payload = bytearray(artifact.read_bytes())
        payload[len(payload) // 2] ^= 0xFF
        artifact.write_bytes(bytes(payload))

    return write


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def serve_registry(registry: Registry, port: int) -> list[str]:
    """The command that serves ``registry`` on ``port``."""
    return [sys.executable, "-m", "nb2svc", "serve", "--registry", str(registry.root), "--port", str(port)]


@pytest.fixture
def server(registry: Registry, unused_tcp_port: int) -> Iterator[ServerProcess]:
    with running_server(serve_registry(registry, unused_tcp_port), unused_tcp_port) as started:
        yield started


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it gives something true (returned), failing with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        time.sleep(0.02)
    return found


def predict(server: ServerProcess, version: str, x: float = 10) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/model/{version}", json={"data": x})


def answered_by(server: ServerProcess, version: str) -> str:
    """The deployment version that answered a request to ``version``, or its status if it did not answer."""
    response = predict(server, version)
    return response.headers["X-Deployment-Version"] if response.status_code == 200 else str(response.status_code)


def version_states(server: ServerProcess) -> dict[str, str]:
    deployments = httpx.get(f"{server.url}/deployments").json()["deployments"]
    return {v["version"]: v["state"] for d in deployments for v in d["versions"]}


@pytest.mark.e2e
def test_each_version_answers_with_its_own_model_latest_and_aliases_as_the_version_they_name(
    models: dict[int, Path], registry: Registry, unused_tcp_port: int
) -> None:
    for offset in (1, 2):
        registry.publish("model", copy_of(models[offset]))
    registry.set_alias("model", "prod", 1)
    command = serve_registry(registry, unused_tcp_port)
    with running_server(command, unused_tcp_port, ready_path="/ready") as server:
        for asked, number, answer in (("1", "1", 11.0), ("2", "2", 12.0), ("latest", "2", 12.0), ("prod", "1", 11.0)):
            response = predict(server, asked)
            assert response.status_code == 200 and response.json() == {"data": answer}, asked
            assert response.headers["X-Deployment-Version"] == number, asked
            model_version = json.loads((registry.root / "model" / number / "manifest.json").read_text())["version"]
            assert response.headers["X-Model-Version"] == model_version
        tensor = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [10]}]}
        inferred = httpx.post(f"{server.url}/v2/models/model/versions/1/infer", json=tensor)
        assert inferred.headers["X-Deployment-Version"] == "1"
        assert inferred.json()["model_version"] == "1" and inferred.json()["model_name"] == "model"
        assert inferred.json()["outputs"][0]["data"] == [11.0]
        assert httpx.post(f"{server.url}/v2/models/model/infer", json=tensor).json()["outputs"][0]["data"] == [12.0]
        assert httpx.get(f"{server.url}/v2/models/model").json()["versions"] == ["1", "2"]
        assert httpx.get(f"{server.url}/v2/models/model/versions/2/ready").json() == {"name": "model", "ready": True}
        assert httpx.get(f"{server.url}/v1/model/1/info").json()["deployment_version"] == "1"
        assert predict(server, "\u00b2").status_code == 404  # a digit, but not a number
        unknown = predict(server, "canary")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["message"] == "model has no version 'canary': it has latest, 1, 2, prod"
        assert "no deployment 'other'" in httpx.post(f"{server.url}/v1/other/latest", json={"data": 1}).text
        [deployment] = httpx.get(f"{server.url}/deployments").json()["deployments"]
        assert deployment["latest"] == "2" and deployment["aliases"] == {"prod": "1"}
        assert [(v["version"], v["url"], v["state"]) for v in deployment["versions"]] == [
            ("1", "/v1/model/1", "ready"),
            ("2", "/v1/model/2", "ready"),
        ]
        assert "text/html" in httpx.get(f"{server.url}/").headers["content-type"]
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'nb2svc_requests_total{endpoint="add_offset",status="200",version="1"}' in metrics


@pytest.mark.e2e
def test_a_version_published_under_a_stream_of_requests_takes_over_latest_without_a_failed_request(
    models: dict[int, Path], registry: Registry, server: ServerProcess
) -> None:
    registry.publish("model", copy_of(models[1]))  # after the server started: a registry that did not exist yet
    wait_for(lambda: answered_by(server, "latest") == "1", "version 1 answers")
    stop = threading.Event()
    answers: Counter[tuple[str, float]] = Counter()
    failures: list[str] = []

    def stream() -> None:
        with httpx.Client(base_url=server.url) as client:
            while not stop.is_set():
                try:
                    response = client.post("/v1/model/latest", json={"data": 10})
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                    continue
                answers[(response.headers["X-Deployment-Version"], response.json()["data"])] += 1

    clients = [threading.Thread(target=stream) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        wait_for(lambda: answers[("1", 11.0)] >= 20, "the stream is answered by version 1")
        registry.publish("model", copy_of(models[2]))
        wait_for(lambda: answers[("2", 12.0)] >= 20, "latest moves to version 2")
    finally:
        stop.set()
        for client in clients:
            client.join()
    assert failures == []
    assert set(answers) == {("1", 11.0), ("2", 12.0)}  # each version with its own model, nothing else


@pytest.mark.e2e
def test_a_corrupted_version_stays_unready_and_latest_keeps_the_old_one(
    models: dict[int, Path], registry: Registry, server: ServerProcess
) -> None:
    registry.publish("model", copy_of(models[1]))
    registry.publish("model", corrupted_copy_of(models[2]))
    wait_for(lambda: version_states(server) == {"1": "ready", "2": "unready"}, "version 2 found unready")
    refused = predict(server, "2")
    assert refused.status_code == 503 and refused.headers["X-Deployment-Version"] == "2"
    error = refused.json()["error"]
    assert error["kind"] == "artifact" and "does not match the manifest" in error["message"]
    assert answered_by(server, "latest") == "1"
    [deployment] = httpx.get(f"{server.url}/deployments").json()["deployments"]
    assert deployment["latest"] == "1"
    assert deployment["versions"][1]["reason"]["kind"] == "artifact"
    assert "does not match the manifest" in deployment["versions"][1]["reason"]["message"]
    assert httpx.get(f"{server.url}/ready").status_code == 200  # every deployment has a version that answers
    registry.publish("model", copy_of(models[3]))  # a good version after it takes over
    wait_for(lambda: answered_by(server, "latest") == "3", "version 3 answers as latest")


@pytest.mark.e2e
def test_a_moved_alias_and_a_removed_version_are_seen_without_a_restart(
    models: dict[int, Path], registry: Registry, server: ServerProcess
) -> None:
    for offset in (1, 2):
        registry.publish("model", copy_of(models[offset]))
    registry.set_alias("model", "prod", 2)
    wait_for(lambda: answered_by(server, "prod") == "2", "prod answers as 2")
    registry.set_alias("model", "prod", 1)
    wait_for(lambda: answered_by(server, "prod") == "1", "prod moves to 1")
    registry.remove("model", 2)
    wait_for(lambda: answered_by(server, "2") == "404", "version 2 is gone")
    assert answered_by(server, "latest") == "1"
    assert "it has latest, 1, prod" in predict(server, "2").text


@pytest.fixture
def two_endpoints(registry: Registry) -> Registry:
    """Versions whose manifest has two endpoints: `model` (one of them named so), `pair` (neither is)."""

    def write(directory: Path) -> None:
        directory.rmdir()  # make_service creates it
        make_service(directory, model=double, other=triple)

    def unnamed(directory: Path) -> None:
        directory.rmdir()
        make_service(directory, double=double, triple=triple)

    registry.publish("model", write)
    registry.publish("pair", unnamed)
    return registry


def double(x: float) -> float:
    return x * 2


def triple(x: float) -> float:
    return x * 3


def wait_until_scanned(client: TestClient) -> Any:
    """``GET /ready``'s body once the server has read the registry and loaded what it found."""

    def scanned() -> Any:
        body = client.get("/ready").json()
        return None if body.get("error", {}).get("kind") == "loading" else body

    return wait_for(scanned, "the first scan")


def test_a_version_serves_the_endpoint_named_as_its_deployment_or_is_unready_saying_why(
    two_endpoints: Registry,
) -> None:
    model = two_endpoints.root / "model" / "1"
    record_verification(model, read_manifest(model).version, True)  # as `nb2svc verify` does
    with TestClient(create_registry_app(two_endpoints.root, Settings())) as client:
        ready = wait_until_scanned(client)
        verified = {d["name"]: d["versions"][0]["verified"] for d in client.get("/deployments").json()["deployments"]}
        assert verified["model"]["ok"] is True and verified["pair"] is None
        assert ready["error"]["kind"] == "manifest"
        assert ready["error"]["message"].startswith("not every deployment can answer: pair has no ready version")
        assert client.post("/v1/model/latest", json={"data": 2}).json() == {"data": 4}
        refused = client.post("/v1/pair/1", json={"data": 2})
        assert refused.status_code == 503 and refused.json()["error"]["kind"] == "manifest"
        assert "has the endpoints double, triple; a version of deployment pair serves one" in refused.text
        latest = client.post("/v1/pair/latest", json={"data": 2}).json()["error"]
        assert latest["kind"] == "manifest" and latest["message"].startswith("pair has no ready version (version 1:")
        oip = client.post("/v2/models/pair/infer", json={"inputs": []})
        assert oip.status_code == 503 and oip.json()["error"].startswith("pair has no ready version")


def test_an_empty_or_missing_registry_is_ready_with_no_deployments(tmp_path: Path) -> None:
    with TestClient(create_registry_app(tmp_path / "not yet", Settings())) as client:
        wait_until_scanned(client)
        assert client.get("/ready").json() == {"status": "ready"}
        listed = client.get("/deployments").json()
        assert listed == {"registry": str(tmp_path / "not yet"), "pid": os.getpid(), "deployments": []}
        missing = client.post("/v1/model/latest", json={"data": 1})
        assert missing.status_code == 404 and "there is no deployment 'model': this server has none yet" in missing.text


def test_serve_takes_a_registry_or_a_service_dir_not_both_and_one_worker(tmp_path: Path) -> None:
    runner = CliRunner()
    both = runner.invoke(cli, ["serve", "--registry", str(tmp_path), str(tmp_path)])
    assert both.exit_code == 2 and "serve either SERVICE_DIR" in both.output
    workers = runner.invoke(cli, ["serve", "--registry", str(tmp_path), "--workers", "2"])
    assert workers.exit_code == 2 and "a registry is served by one process" in workers.output


def test_a_deployment_whose_files_cannot_be_read_does_not_hold_up_the_others(registry: Registry) -> None:
    def doubling(directory: Path) -> None:
        directory.rmdir()
        make_service(directory, model=double)

    registry.publish("model", doubling)
    registry.publish("broken", doubling)
    (registry.root / "broken" / "aliases.json").write_text("{not json")
    with TestClient(create_registry_app(registry.root, Settings())) as client:
        wait_until_scanned(client)
        assert [d["name"] for d in client.get("/deployments").json()["deployments"]] == ["model"]
        registry.publish("model", doubling)  # a new version of the other deployment is still seen
        wait_for(lambda: client.post("/v1/model/2", json={"data": 2}).status_code == 200, "version 2")
        (registry.root / "broken" / "aliases.json").unlink()  # fixed: served from the next read on
        wait_for(lambda: client.post("/v1/broken/latest", json={"data": 2}).status_code == 200, "broken, fixed")
    (registry.root / "model" / "aliases.json").write_text("[]")
    with pytest.raises(UsageError, match=r"is not \{alias: version number\}: remove it, then set the aliases again"):
        registry.aliases("model")


def test_after_a_restart_the_newest_version_loads_first(registry: Registry) -> None:
    for _ in range(3):
        registry.publish("model", lambda directory: None)
    scanner = Scanner(registry, Service("", Settings(), None, None))  # type: ignore[arg-type]
    scanner.catalog = scanner._arranged(scanner._read())
    assert [v.state for v in scanner.catalog.deployment("model").versions] == ["loading"] * 3
    waiting = scanner._next_to_load()
    assert waiting is not None and waiting.number == 3


def test_the_server_deploy_starts_answers_only_requests_addressed_to_this_machine(tmp_path: Path) -> None:
    app = create_registry_app(tmp_path, Settings(), local_only=True)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        assert client.get("/health").status_code == 200
        assert client.get("/health", headers={"Host": "localhost:8765"}).status_code == 200
        rebound = client.get("/deployments", headers={"Host": "attacker.example:8765"})  # DNS rebinding
        assert rebound.status_code == 400 and "registry" not in rebound.text
