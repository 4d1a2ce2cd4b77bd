"""The API as real clients see it, on a real port: a browser on the docs page, tritonclient on the OIP routes."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import pytest

import nb2svc

from helpers import FIXTURES, browser, running_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    output = tmp_path_factory.mktemp("clients") / "typed_api"
    nb2svc.build(FIXTURES / "typed_api.ipynb", output)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)]
    with running_server(command, port, cwd=output) as server:
        yield server.url


def test_docs_page_sends_a_request_from_the_browser(base_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with browser() as driver:
        driver.get(f"{base_url}/docs")
        WebDriverWait(driver, 20).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "yes"
        )
        assert "typed_api" in driver.find_element(By.ID, "title").text
        section = driver.find_element(By.ID, "endpoint-add")
        assert '{"data": [a, b]} by position' in section.text
        assert '{"data":{"a":1,"b":2.5}}' in section.text  # the recorded example
        body = driver.find_element(By.ID, "body-add")
        body.clear()
        body.send_keys('{"data": [[1, 2, 3], [2, "x"]]}')
        driver.find_element(By.ID, "send-add").click()
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "status-add").text.startswith("HTTP"))
        assert driver.find_element(By.ID, "status-add").text == "HTTP 200"
        answer = driver.find_element(By.ID, "answer-add").text
        assert '"data": [\n    [\n      1,\n      5\n    ]' in answer
        assert "parameter 'a' must be integer" in answer


def test_tritonclient_calls_the_open_inference_protocol_routes(base_url: str) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(base_url.removeprefix("http://"))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("add")
        metadata = client.get_model_metadata("add")
        assert [i["name"] for i in metadata["inputs"]] == ["a", "b"]
        a = triton.InferInput("a", [3], "INT64")
        a.set_data_from_numpy(np.array([1, 2, 3], dtype=np.int64), binary_data=False)
        b = triton.InferInput("b", [3], "FP64")
        b.set_data_from_numpy(np.array([0.5, 0.25, 0.0]), binary_data=False)
        result = client.infer("add", [a, b], outputs=[triton.InferRequestedOutput("output", binary_data=False)])
        assert result.as_numpy("output").tolist() == [1.5, 2.25, 3.0]

        # A DataFrame endpoint: its tensors are the table's columns, as the notebook's own calls named them.
        assert [(i["name"], i["datatype"]) for i in client.get_model_metadata("score")["inputs"]] == [
            ("rooms", "INT64"),
            ("area", "FP64"),
        ]
        rooms = triton.InferInput("rooms", [2], "INT64")
        rooms.set_data_from_numpy(np.array([1, 2], dtype=np.int64), binary_data=False)
        area = triton.InferInput("area", [2], "FP64")
        area.set_data_from_numpy(np.array([30.0, 45.5]), binary_data=False)
        scored = client.infer(
            "score", [rooms, area], outputs=[triton.InferRequestedOutput("output", binary_data=False)]
        )
        assert scored.as_numpy("output").tolist() == [40.0, 65.5]
    finally:
        client.close()
