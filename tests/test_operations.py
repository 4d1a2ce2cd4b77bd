"""What a platform engineer relies on: request ids, logs, metrics, limits, API keys, safe defaults."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from nb2svc.runtime.app import create_app
from nb2svc.runtime.settings import Settings

from helpers import make_service


def double(x):
    return x * 2


def slow(seconds):
    time.sleep(seconds)
    return seconds


def fails(x):
    raise ValueError("no")


def client_for(tmp_path: Path, **settings: Any) -> TestClient:
    service = make_service(tmp_path, double=double, slow=slow, fails=fails)
    return TestClient(create_app(service, Settings(**settings)))


def post(client: TestClient, name: str, body: Any, **headers: str) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(f"/v1/{name}/latest", content=content, headers={"Content-Type": "application/json", **headers})


def test_request_id_is_taken_or_made_and_echoed(tmp_path: Path) -> None:
    with client_for(tmp_path) as client:
        assert post(client, "double", {"data": 1}, **{"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
        made = post(client, "fails", {"data": 1})
        assert len(made.headers["x-request-id"]) == 32
        assert made.json()["error"]["request_id"] == made.headers["x-request-id"]


def test_one_json_log_line_per_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with client_for(tmp_path) as client:
        post(client, "double", {"data": [[1, 2], [2, 3]]}, **{"X-Request-ID": "log-me"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    [line] = [line for line in lines if line["request_id"] == "log-me"]
    assert line["endpoint"] == "double" and line["status"] == 200 and line["rows"] == 2
    assert line["path"] == "/v1/double/latest" and line["duration_ms"] > 0 and "time" in line


def test_metrics(tmp_path: Path) -> None:
    with client_for(tmp_path) as client:
        post(client, "double", {"data": [[1, 2], [2, 3], [3, 4]]})
        post(client, "double", {"data": "x"})
        post(client, "fails", {"data": 1})
        post(client, "fails", {"data": [[1, 1], [2, 2]]})  # two rows that raise
        text = client.get("/metrics").text
    assert 'nb2svc_requests_total{endpoint="double",status="200",version="0123456789ab"} 2.0' in text
    assert 'nb2svc_requests_total{endpoint="fails",status="500",version="0123456789ab"} 1.0' in text
    assert 'nb2svc_request_duration_seconds_count{endpoint="double",status="200",version="0123456789ab"} 2.0' in text
    assert 'nb2svc_batch_rows_sum{endpoint="double"} 4.0' in text
    assert (
        'nb2svc_requests_total{endpoint="fails",status="200",version="0123456789ab"} 1.0' in text
    )  # a batch answers 200, row by row
    assert 'nb2svc_predict_errors_total{endpoint="fails",type="ValueError",version="0123456789ab"} 3.0' in text
    assert "nb2svc_requests_in_flight 1.0" in text  # the /metrics request itself
    assert "nb2svc_model_load_seconds " in text


def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    with client_for(tmp_path, max_body_bytes=100) as client:
        response = post(client, "double", {"data": "x" * 200})
        assert response.status_code == 413
        assert "the limit is 100 (NB2SVC_MAX_BODY_BYTES)" in response.json()["error"]["message"]

        def chunks():  # no Content-Length: counted as it arrives
            yield b'{"data": "'
            yield b"x" * 200
            yield b'"}'

        streamed = client.post("/v1/double/latest", content=chunks())
        assert streamed.status_code == 413
        assert post(client, "double", {"data": 1}).status_code == 200


def test_batch_over_the_limit_is_413(tmp_path: Path) -> None:
    with client_for(tmp_path, max_batch_rows=3) as client:
        response = post(client, "double", {"data": [[i, i] for i in range(4)]})
        assert response.status_code == 413
        assert "the batch has 4 rows; the limit is 3" in response.json()["error"]["message"]
        tensor = {"inputs": [{"name": "x", "shape": [4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}
        infer = client.post("/v2/models/double/infer", json=tensor)  # the Open Inference Protocol too
        assert infer.status_code == 413 and infer.json()["request_id"] == infer.headers["x-request-id"]
        assert post(client, "double", {"data": [[i, i] for i in range(3)]}).status_code == 200


def test_a_slow_call_is_504_and_does_not_hold_up_the_next_requests(tmp_path: Path) -> None:
    with client_for(tmp_path, timeout_seconds=0.3, max_concurrent=2) as client:
        started = time.monotonic()
        response = post(client, "slow", {"data": 3})
        assert response.status_code == 504
        assert response.json()["error"]["message"].startswith("slow: the call took longer than 0.3 s")
        assert "took longer than 0.3 s (NB2SVC_TIMEOUT)" in response.json()["error"]["message"]
        assert post(client, "double", {"data": 2}).json() == {"data": 4}  # the other slot answers at once
        assert time.monotonic() - started < 2


def test_all_slots_busy_is_429_with_retry_after(tmp_path: Path) -> None:
    with client_for(tmp_path, timeout_seconds=0.2, max_concurrent=1) as client:
        assert post(client, "slow", {"data": 1.0}).status_code == 504  # its thread still runs
        busy = post(client, "double", {"data": 2})
        assert busy.status_code == 429
        assert busy.headers["retry-after"] == "1"
        assert "all 1 prediction slots are busy" in busy.json()["error"]["message"]
        time.sleep(1.2)
        assert post(client, "double", {"data": 2}).status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"Authorization": "wrong"}, 403),
        ({"Authorization": "Bearer key-one"}, 200),
        ({"Authorization": "key-two"}, 200),  # Modelbit's bare form, and the second key of a rotation
    ],
)
def test_api_keys(tmp_path: Path, headers: dict[str, str], status: int) -> None:
    with client_for(tmp_path, api_keys=("key-one", "key-two")) as client:
        response = post(client, "double", {"data": 1}, **headers)
        assert response.status_code == status
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["type"] == "missing_api_key"
        assert client.get("/openapi.json", headers=headers).status_code == status
        for open_route in ("/", "/health", "/ready", "/metrics", "/docs"):  # the pages ask for the key themselves
            assert client.get(open_route).status_code == 200


def test_metrics_can_ask_for_the_key(tmp_path: Path) -> None:
    with client_for(tmp_path, api_keys=("k",), metrics_need_key=True) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer k"}).status_code == 200


def test_no_traceback_unless_debug(tmp_path: Path) -> None:
    with client_for(tmp_path) as client:
        assert "traceback" not in post(client, "fails", {"data": 1}).json()["error"]
    with client_for(tmp_path / "debug", debug=True) as client:
        assert 'raise ValueError("no")' in post(client, "fails", {"data": 1}).json()["error"]["traceback"]


def test_cors_only_for_configured_origins(tmp_path: Path) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with client_for(tmp_path) as client:
        assert "access-control-allow-origin" not in client.options("/v1/double/latest", headers=preflight).headers
    with client_for(tmp_path / "cors", cors_origins=("https://app.example",)) as client:
        answer = client.options("/v1/double/latest", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://app.example"


def test_a_setting_that_cannot_be_read_is_refused_naming_its_variable(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from nb2svc.cli import cli
    from nb2svc.runtime.settings import SettingError

    assert Settings.from_environment({"NB2SVC_DEBUG": "on", "NB2SVC_TIMEOUT": "2.5"}) == Settings(
        debug=True, timeout_seconds=2.5
    )
    with pytest.raises(SettingError, match="NB2SVC_DEBUG='banana' \\(what --debug sets\\) cannot be used"):
        Settings.from_environment({"NB2SVC_DEBUG": "banana"})
    service = make_service(tmp_path, runnable=True, double=double)
    refused = CliRunner().invoke(cli, ["serve", str(service)], env={"NB2SVC_MAX_BODY_BYTES": "lots"})
    assert refused.exit_code == 2
    assert "NB2SVC_MAX_BODY_BYTES='lots' (what --max-body-bytes sets) cannot be used" in refused.stderr
    flag = CliRunner().invoke(cli, ["serve", str(service), "--timeout", "-1"])
    assert flag.exit_code == 2 and "must be a number of seconds above 0" in flag.stderr
