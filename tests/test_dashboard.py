"""The dashboard of a single service: ``GET /deployments`` through the app, and the page ``GET /`` in a real browser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

import nb2svc
from nb2svc.runtime.app import build_app
from nb2svc.runtime.load import load_service
from nb2svc.runtime.settings import Settings
from nb2svc.server_process import free_port

from helpers import FIXTURES, browser, make_service, open_dashboard, post_json, running_server, try_it


def double(x):
    return x * 2


def add(a, b=1):
    return a + b


def test_each_endpoint_is_a_deployment_and_an_unready_service_says_why(tmp_path: Path) -> None:
    served = make_service(tmp_path / "served", double=double, add=add)
    broken = make_service(tmp_path / "broken", triple=double)
    (broken / "artifacts" / "triple.pkl").unlink()
    with TestClient(build_app([load_service(served), load_service(broken)], Settings())) as client:
        page = client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "http://" not in page.text and "https://" not in page.text  # nothing from the network
        assert "GET /, GET /health" in client.get("/nope").json()["error"]["message"]
        listed = client.get("/deployments").json()["deployments"]
    assert [d["name"] for d in listed] == ["double", "add", "triple"]
    model_version = json.loads((served / "manifest.json").read_text())["version"]
    added = listed[1]
    assert (added["latest"], added["aliases"]) == (model_version, {})
    [version] = added["versions"]
    assert {k: version[k] for k in ("version", "state", "reason", "url", "model_version", "notebook")} == {
        "version": model_version,
        "state": "ready",
        "reason": None,
        "url": "/v1/add/latest",
        "model_version": model_version,
        "notebook": "test.ipynb",
    }
    assert version["signature"] == "add(a, b=1)"
    assert version["reads"] == '{"data": [a, b]} by position, or {"data": {"a": ..., "b": ...}} by name'
    assert version["schema"]["anyOf"][0]["required"] == ["a"]
    [unready] = listed[2]["versions"]
    assert (unready["state"], unready["url"], unready["reason"]["kind"]) == ("unready", "/v1/triple/latest", "artifact")
    assert "the artifact of triple is missing" in unready["reason"]["message"]


def test_the_dashboard_of_a_service_that_did_not_load(tmp_path: Path) -> None:
    service = make_service(tmp_path, double=double)
    (service / "artifacts" / "double.pkl").unlink()
    with TestClient(build_app([load_service(service)], Settings())) as client:
        assert "nb2svc deployments" in client.get("/").text  # not the 503 every other path answers
        [deployment] = client.get("/deployments").json()["deployments"]
    assert deployment["versions"][0]["reason"]["kind"] == "artifact"


def test_the_page_is_open_and_the_deployments_need_the_key(tmp_path: Path) -> None:
    service = make_service(tmp_path, double=double)
    with TestClient(build_app([load_service(service)], Settings(api_keys=("k",)))) as client:
        assert client.get("/").status_code == 200
        assert client.get("/deployments").status_code == 401
        assert client.get("/deployments", headers={"Authorization": "Bearer k"}).status_code == 200


@pytest.mark.e2e
def test_the_dashboard_shows_the_endpoint_and_its_form_answers_the_example(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    service = tmp_path / "lr"
    nb2svc.build(FIXTURES / "linear_regression.ipynb", service)
    model_version = json.loads((service / "manifest.json").read_text())["version"]
    port = free_port()
    command = [sys.executable, "-m", "nb2svc", "serve", str(service), "--port", str(port)]
    with running_server(command, port) as server, browser() as driver:
        open_dashboard(driver, server.url)
        version = driver.find_element(By.CSS_SELECTOR, '[data-deployment="my_lr_deployement"] .version')
        assert version.get_attribute("data-version") == model_version
        assert version.get_attribute("data-state") == "ready"
        assert version.find_element(By.CLASS_NAME, "latest").text == "latest"
        url = f"{server.url}/v1/my_lr_deployement/latest"
        assert version.find_element(By.CLASS_NAME, "curl").text == f'curl -s -XPOST "{url}" -d \'{{"data": 3}}\''
        assert (
            version.find_element(By.CLASS_NAME, "requests").text == f'requests.post("{url}", json={{"data": 3}}).json()'
        )
        status, answer, headers = try_it(driver, version)
        assert (status, answer) == ("HTTP 200", post_json(url, {"data": 3}))
        assert headers == f"X-Model-Version: {model_version}"


def echo(text: str) -> str:
    return text


@pytest.mark.e2e
def test_the_copied_curl_line_runs_in_a_shell_whatever_the_example_holds(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    service = make_service(tmp_path / "echo", runnable=True, echo=echo)
    manifest = json.loads((service / "manifest.json").read_text())
    tricky = 'it\'s $HOME `date` "quoted"'
    manifest["endpoints"][0]["examples"] = [{"request": {"data": tricky}, "response": {"data": tricky}}]
    manifest["parameters"] = {"alpha": 0.5, "fit": True, "tags": ["a", None]}  # -p/-f, as papermill reads them
    (service / "manifest.json").write_text(json.dumps(manifest))
    port = free_port()
    command = [sys.executable, "-m", "nb2svc", "serve", str(service), "--port", str(port)]
    with running_server(command, port, ready_path="/ready") as server, browser() as driver:
        open_dashboard(driver, server.url)
        line = driver.find_element(By.CSS_SELECTOR, '[data-deployment="echo"] .curl').text
        facts = driver.find_element(By.CSS_SELECTOR, '[data-deployment="echo"] .facts').text
        ran = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30)
    assert 'parameters alpha = 0.5, fit = True, tags = ["a", None]' in facts  # written as Python, as injected
    assert json.loads(ran.stdout) == {"data": tricky}  # sent as the example is, nothing run by the shell
