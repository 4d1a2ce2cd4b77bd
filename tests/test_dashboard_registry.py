"""The dashboard of a registry server (``nb2svc serve --registry DIR``) in a real browser."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from nb2svc.registry import Registry
from nb2svc.server_process import free_port

from helpers import ServerProcess, browser, make_service, open_dashboard, running_server, try_it

pytestmark = pytest.mark.e2e


def serving(registry: Path, ready_path: str = "/ready") -> AbstractContextManager[ServerProcess]:
    """``nb2svc serve --registry`` on a free port, once ``ready_path`` answers 200."""
    port = free_port()
    command = [sys.executable, "-m", "nb2svc", "serve", "--registry", str(registry), "--port", str(port)]
    return running_server(command, port, ready_path=ready_path)


def double(x: float) -> float:
    return x * 2


def triple(x: float) -> float:
    return x * 3


def version_of(function: Callable[[float], float]) -> Callable[[Path], None]:
    """A version of ``my_lr`` serving ``function``, with the example 3 recorded."""

    def write(directory: Path) -> None:
        make_service(directory, runnable=True, my_lr=function)
        manifest = json.loads((directory / "manifest.json").read_text())
        manifest["endpoints"][0]["examples"] = [{"request": {"data": 3}, "response": {"data": function(3)}}]
        (directory / "manifest.json").write_text(json.dumps(manifest))

    return write


def test_the_dashboard_lists_versions_latest_and_aliases_and_calls_a_version(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    registry = Registry(tmp_path / "registry")
    registry.publish("my_lr", version_of(double))
    registry.publish("my_lr", version_of(triple))
    registry.set_alias("my_lr", "prod", 1)
    with serving(registry.root) as server, browser() as driver:
        open_dashboard(driver, server.url)
        versions = driver.find_elements(By.CSS_SELECTOR, '[data-deployment="my_lr"] .version')
        assert [v.get_attribute("data-version") for v in versions] == ["2", "1"]  # newest first
        assert [v.get_attribute("data-state") for v in versions] == ["ready", "ready"]
        newest, first = versions
        assert [b.text for b in newest.find_elements(By.CLASS_NAME, "latest")] == ["latest"]
        assert first.find_elements(By.CLASS_NAME, "latest") == []
        assert [b.text for b in first.find_elements(By.CLASS_NAME, "alias")] == ["prod"]
        assert newest.find_elements(By.CLASS_NAME, "alias") == []
        url = f"{server.url}/v1/my_lr/1"
        assert first.find_element(By.CLASS_NAME, "curl").text == f'curl -s -XPOST "{url}" -d \'{{"data": 3}}\''
        status, answer, headers = try_it(driver, first)
        assert (status, answer) == ("HTTP 200", {"data": 6})  # version 1's model, not latest's (9)
        assert "X-Deployment-Version: 1" in headers
        assert try_it(driver, newest)[1] == {"data": 9}


def test_an_empty_registry_says_how_to_deploy(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    (tmp_path / "registry").mkdir()
    with serving(tmp_path / "registry", ready_path="/health") as server, browser() as driver:
        open_dashboard(driver, server.url)
        empty = driver.find_element(By.ID, "empty")
        assert empty.is_displayed()
        assert "nb2svc.deploy(fn)" in empty.text and "nb2svc build NOTEBOOK --deploy" in empty.text
        assert driver.find_elements(By.CSS_SELECTOR, "[data-deployment]") == []
