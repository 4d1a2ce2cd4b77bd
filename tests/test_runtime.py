"""The service runtime through starlette's TestClient, on service directories made by hand."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pickle
import re
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from nb2svc.runtime.app import create_app
from nb2svc.runtime.manifest import MANIFEST_FORMAT

from helpers import make_service


def double(x):
    return x * 2


def describe(a, b=10):
    return {"a": a, "b": b}


def fails(x):
    raise ValueError(f"cannot handle {x!r}")


def numpy_result(x):
    return {"scalar": np.float64(x) / 4, "int": np.int64(x), "array": np.arange(x), "matrix": np.eye(2)}


def not_finite(x):
    return [math.nan, math.inf, np.float64("nan"), 1.5]


def unencodable(x):
    return object()


async def async_double(x):
    return x * 2


@pytest.fixture
def client(tmp_path: Path):
    service = make_service(
        tmp_path,
        double=double,
        describe=describe,
        fails=fails,
        numpy_result=numpy_result,
        not_finite=not_finite,
        unencodable=unencodable,
        async_double=async_double,
    )
    with TestClient(create_app(service)) as client:
        yield client


def post(client: TestClient, name: str, body: Any) -> Any:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(f"/v1/{name}/latest", content=content, headers={"Content-Type": "application/json"})


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_single_call(client: TestClient) -> None:
    response = post(client, "double", {"data": 21})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"data": 42}


def test_single_list_argument_is_not_a_batch(client: TestClient) -> None:
    assert post(client, "double", {"data": [1, 2]}).json() == {"data": [1, 2, 1, 2]}


def test_batch_answers_in_request_order_with_ids_as_given(client: TestClient) -> None:
    body = {"data": [["b", 3], [1, 5], [None, 1], [7.5, "x"]]}
    assert post(client, "double", body).json() == {"data": [["b", 6], [1, 10], [None, 2], [7.5, "xx"]]}


def test_batch_rows_with_several_arguments(client: TestClient) -> None:
    body = {"data": [[1, "x"], [2, "y", 3]]}
    assert post(client, "describe", body).json() == {"data": [[1, {"a": "x", "b": 10}], [2, {"a": "y", "b": 3}]]}


def test_dict_of_parameter_names_is_keyword_arguments(client: TestClient) -> None:
    assert post(client, "describe", {"data": {"a": 1, "b": 2}}).json() == {"data": {"a": 1, "b": 2}}


def test_dict_with_other_keys_is_one_argument(client: TestClient) -> None:
    assert post(client, "describe", {"data": {"z": 1}}).json() == {"data": {"a": {"z": 1}, "b": 10}}


def test_async_endpoint(client: TestClient) -> None:
    assert post(client, "async_double", {"data": [[1, 2], [2, 3]]}).json() == {"data": [[1, 4], [2, 6]]}


def test_numpy_results_are_plain_json(client: TestClient) -> None:
    assert post(client, "numpy_result", {"data": 3}).json() == {
        "data": {"scalar": 0.75, "int": 3, "array": [0, 1, 2], "matrix": [[1.0, 0.0], [0.0, 1.0]]}
    }


def test_nan_and_infinity_become_null(client: TestClient) -> None:
    response = post(client, "not_finite", {"data": 0})
    assert response.text == '{"data":[null,null,null,1.5]}'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"data": ', "the request body is not valid JSON"),
        (b"\xff\xfe", "the request body is not valid JSON"),
        (b'{"input": 3}', 'must be a JSON object with a "data" field'),
        (b"[1, 2]", 'must be a JSON object with a "data" field'),
        (b'{"data": [[1, 2], 3]}', r"data\[1\] must be a list \[id, arg, ...\]"),
        (b'{"data": [[1, 2], []]}', r"data\[1\] must be a list \[id, arg, ...\]"),
    ],
)
def test_malformed_requests_are_400_with_a_json_error(client: TestClient, body: bytes, message: str) -> None:
    response = post(client, "double", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "bad_request"
    assert re.search(message, error["message"])


def test_exception_in_function_is_500_and_service_goes_on(client: TestClient) -> None:
    response = post(client, "fails", {"data": 3})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error == {
        "type": "ValueError",
        "message": "fails raised: cannot handle 3",
        "request_id": error["request_id"],
    }
    assert response.headers["x-request-id"] == error["request_id"]
    assert "Traceback" not in response.text
    assert post(client, "double", {"data": 1}).json() == {"data": 2}


def test_a_failing_batch_row_does_not_fail_the_others(client: TestClient) -> None:
    response = post(client, "double", {"data": [["r1", 1], ["r2", 2]]})
    assert response.json() == {"data": [["r1", 2], ["r2", 4]]}
    response = post(client, "fails", {"data": [["r1", 1], ["r2", 2]]})
    assert response.status_code == 200
    assert response.json() == {
        "data": [["r1", None], ["r2", None]],
        "errors": [
            ["r1", {"type": "ValueError", "message": "cannot handle 1"}],
            ["r2", {"type": "ValueError", "message": "cannot handle 2"}],
        ],
    }


def test_unencodable_result_names_the_type(client: TestClient) -> None:
    response = post(client, "unencodable", {"data": 1})
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "unencodable_result"
    assert "builtins.object" in response.json()["error"]["message"]


def test_unknown_endpoint_is_json_404_listing_the_routes(client: TestClient) -> None:
    response = post(client, "nope", {"data": 1})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
    assert "POST /v1/double/latest" in response.json()["error"]["message"]


def test_get_on_predict_route_is_405(client: TestClient) -> None:
    assert client.get("/v1/double/latest").status_code == 405


def assert_up_but_not_ready(service: Path, reason: str) -> None:
    """The process stays up: /health 200; /ready and the predict routes 503, with the same reason."""
    with TestClient(create_app(service)) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert reason in ready.json()["error"]["message"]
        predict = post(client, "double", {"data": 1})
        assert predict.status_code == 503
        assert predict.json()["error"]["message"] == ready.json()["error"]["message"]


def edit_manifest(service: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((service / "manifest.json").read_text())
    change(manifest)
    (service / "manifest.json").write_text(json.dumps(manifest))


def test_a_loaded_service_is_ready(client: TestClient) -> None:
    assert client.get("/ready").json() == {"status": "ready"}


def test_a_tampered_artifact_is_never_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = make_service(tmp_path, double=double)
    (service / "artifacts" / "double.pkl").write_bytes(cloudpickle.dumps(fails))
    unpickled = []
    monkeypatch.setattr(pickle, "loads", lambda *args: unpickled.append(args))  # to see that it is never called
    assert_up_but_not_ready(service, "does not match the manifest (sha256")
    assert unpickled == []


def test_a_missing_artifact(tmp_path: Path) -> None:
    service = make_service(tmp_path, double=double)
    (service / "artifacts" / "double.pkl").unlink()
    assert_up_but_not_ready(service, "the artifact of double is missing")


def test_a_corrupt_artifact_whose_digest_was_updated(tmp_path: Path) -> None:
    service = make_service(tmp_path, double=double)
    (service / "artifacts" / "double.pkl").write_bytes(b"not a pickle")
    edit_manifest(service, lambda m: m["endpoints"][0].update(sha256=hashlib.sha256(b"not a pickle").hexdigest()))
    assert_up_but_not_ready(service, "the model did not load: UnpicklingError")


def test_an_artifact_outside_the_service_is_refused(tmp_path: Path) -> None:
    service = make_service(tmp_path / "service", double=double)
    edit_manifest(service, lambda m: m["endpoints"][0].update(artifact="../outside.pkl"))
    assert_up_but_not_ready(service, "which is not in artifacts/: refusing to load it")


def test_an_example_answered_differently(tmp_path: Path) -> None:
    service = make_service(tmp_path, double=double)
    edit_manifest(
        service, lambda m: m["endpoints"][0].update(examples=[{"request": {"data": 2}, "response": {"data": 5}}])
    )
    assert_up_but_not_ready(
        service,
        'example 1 of double ({"data": 2}) answers differently from the training kernel: data: expected 5, got 4',
    )


def test_another_python_minor_is_refused(tmp_path: Path) -> None:
    service = make_service(tmp_path, double=double)
    edit_manifest(service, lambda m: m["python"].update(minor="3.7"))
    assert_up_but_not_ready(service, "pickled on Python 3.7 and this is Python 3")


def test_another_cloudpickle_is_refused(tmp_path: Path) -> None:
    service = make_service(tmp_path, double=double)
    edit_manifest(service, lambda m: m.update(cloudpickle_version="0.0.1"))
    assert_up_but_not_ready(service, f"written by cloudpickle 0.0.1 and this environment has {cloudpickle.__version__}")


def test_drifted_pins_are_logged_and_the_service_still_starts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pins = {"starlette": "0.0.1", "cloudpickle": cloudpickle.__version__, "not-installed-anywhere": "1.0"}
    service = make_service(tmp_path, pins=pins, double=double)
    with caplog.at_level("WARNING", logger="nb2svc.runtime"):
        app = create_app(service)
    assert app.state.drift == [
        f"starlette is locked at 0.0.1 but {version('starlette')} here",
        "not-installed-anywhere is locked at 1.0 but not installed here",
    ]
    assert "environment drift: starlette is locked at 0.0.1" in caplog.text
    with TestClient(app) as client:
        assert post(client, "double", {"data": 2}).json() == {"data": 4}


def tuple_keys(x):
    return {(1, 2): x}


def test_a_result_json_cannot_hold_is_a_json_500(tmp_path: Path) -> None:
    with TestClient(create_app(make_service(tmp_path, tuple_keys=tuple_keys))) as client:
        response = post(client, "tuple_keys", {"data": 1})
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "unencodable_result"
        assert "keys must be str" in response.json()["error"]["message"]


def table_in_table_out(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(total=table["a"] * 2)


def test_a_dataframe_endpoint_may_answer_a_batch_with_a_dataframe(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    with TestClient(create_app(make_service(tmp_path, table_in_table_out=table_in_table_out))) as client:
        response = post(client, "table_in_table_out", {"data": [["r1", {"a": 1}], ["r2", {"a": 5}]]})
        assert response.json() == {"data": [["r1", {"a": 1, "total": 2}], ["r2", {"a": 5, "total": 10}]]}


def test_sets_are_sorted_by_value() -> None:
    from nb2svc.runtime.encoding import encode_json

    assert encode_json({9, 10, 100}) == b"[9,10,100]"
    assert encode_json({1, "a"}) in (b'[1,"a"]', b'["a",1]')


def test_json_values_become_what_the_hint_asks_for() -> None:
    import datetime
    import decimal

    from nb2svc.runtime.schema import _converter

    assert _converter(datetime.date)("2026-11-27") == datetime.date(2026, 11, 27)
    assert _converter(datetime.datetime)("2026-11-27T06:30:00") == datetime.datetime(2026, 11, 27, 6, 30)
    assert _converter(bytes)("bmIyc3Zj") == b"nb2svc"
    assert _converter(decimal.Decimal)("1.10") == decimal.Decimal("1.10")
    assert type(_converter(int)(3.0)) is int


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # deeper than the parser follows
        b'{"data": NaN}',
        b'{"data": [1, Infinity]}',
        b'{"data": -Infinity}',
        b'{"data": 1e400}',
        b'{"data": [[1, -1E999]]}',
        b'{"data": ' + b"9" * 400 + b".0}",  # too many digits for a float
    ],
)
def test_a_body_that_is_not_standard_json_is_a_json_400(client: TestClient, body: bytes) -> None:
    for path in ("/v1/double/latest", "/v2/models/double/infer"):
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (path, response.text[:300])
        error = response.json()["error"]
        assert "not valid JSON" in (error if isinstance(error, str) else error["message"])


def test_large_finite_numbers_and_exponents_are_still_numbers(client: TestClient) -> None:
    assert post(client, "double", b'{"data": 1.5e300}').json() == {"data": 3e300}
    assert post(client, "double", b'{"data": [[1, 2E-3]]}').json() == {"data": [[1, 4e-3]]}


def test_a_405_says_which_methods_are_allowed(client: TestClient) -> None:
    response = client.get("/v1/double/latest")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["type"] == "method_not_allowed"


def test_both_protocols_answer_count_and_log_a_raising_function_alike(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    def errors_counted() -> float:
        text = client.get("/metrics").text
        found = re.search(
            r'nb2svc_predict_errors_total\{endpoint="fails",type="ValueError",version="\w+"\} (\S+)', text
        )
        return float(found.group(1)) if found else 0.0

    before = errors_counted()
    with caplog.at_level("ERROR", logger="nb2svc.runtime"):
        v1 = post(client, "fails", {"data": 3})
        v2 = client.post(
            "/v2/models/fails/infer", json={"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [3]}]}
        )
    assert v1.status_code == v2.status_code == 500
    assert v1.json()["error"]["message"] == v2.json()["error"] == "fails raised: cannot handle 3"
    assert errors_counted() == before + 2
    logged = [r.getMessage() for r in caplog.records if r.name == "nb2svc.runtime"]
    assert logged == [
        f"fails raised ValueError (request {v1.headers['x-request-id']})",
        f"fails raised ValueError (request {v2.headers['x-request-id']})",
    ]


def test_both_protocols_refuse_a_wrong_value_with_the_same_status(tmp_path: Path) -> None:
    def typed(x: int) -> int:
        return x

    with TestClient(create_app(make_service(tmp_path, typed=typed))) as client:
        v1 = post(client, "typed", {"data": "seven"})
        v2 = client.post(
            "/v2/models/typed/infer",
            json={"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ['"seven"']}]},
        )
    assert v1.status_code == v2.status_code == 422
    assert v1.json()["error"]["message"] == v2.json()["error"]


def test_a_manifest_of_a_newer_format_says_so(tmp_path: Path) -> None:
    service = make_service(tmp_path, double=double)
    edit_manifest(service, lambda m: m.update(manifest_format=99, nb2svc_version="9.0"))
    assert_up_but_not_ready(
        service, f"manifest.json is format 99 (written by nb2svc 9.0) and this runtime reads format {MANIFEST_FORMAT}"
    )
    with TestClient(create_app(service)) as client:
        assert client.get("/ready").json()["error"]["kind"] == "manifest"


def test_a_manifest_without_a_field_names_it(tmp_path: Path) -> None:
    service = make_service(tmp_path, double=double)
    edit_manifest(service, lambda m: m.pop("lock"))
    assert_up_but_not_ready(service, "manifest.json: Manifest has no 'lock': rebuild the service")


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        (lambda m: m["endpoints"][0].update(sha256="0" * 64), "artifact"),
        (lambda m: m["python"].update(minor="3.7"), "environment"),
        (
            lambda m: m["endpoints"][0].update(examples=[{"request": {"data": 2}, "response": {"data": 5}}]),
            "example_mismatch",
        ),
        (
            lambda m: m["endpoints"][0].update(examples=[{"request": {"data": None}, "response": {"data": 5}}]),
            "example_failed",
        ),
    ],
)
def test_ready_says_what_kind_of_thing_is_wrong(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], kind: str
) -> None:
    service = make_service(tmp_path, double=double)
    edit_manifest(service, change)
    with TestClient(create_app(service)) as client:
        assert client.get("/ready").json()["error"]["kind"] == kind


def test_info_lists_only_the_packages_the_model_imported(tmp_path: Path) -> None:
    from nb2svc.runtime.manifest import RequirementEntry, RequirementReason, read_manifest

    from helpers import write_manifest

    service = make_service(
        tmp_path, pins={"numpy": "2.0", "cloudpickle": "3.1", "attrs": "25.1", "rich": "14"}, double=double
    )
    entries = (
        RequirementEntry("numpy", "numpy==2.0", (RequirementReason("notebook", "imported by the notebook (numpy)"),)),
        RequirementEntry(
            "cloudpickle", "cloudpickle==3.1", (RequirementReason("runtime", "serialized the artifacts"),)
        ),
        RequirementEntry(
            "attrs", "attrs==25.1", (RequirementReason("import_statement", "an import statement in double"),)
        ),
        RequirementEntry("rich", "rich==14", (RequirementReason("user", "--python-package"),)),
    )
    write_manifest(service, dataclasses.replace(read_manifest(service), requirements=entries))
    with TestClient(create_app(service)) as client:
        assert client.get("/v1/double/info").json()["packages"] == {"numpy": "2.0", "attrs": "25.1"}


def huge(x):
    return 10**5000  # more digits than int-to-str conversion allows


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [1]},
        {"inputs": [{"name": "x", "shape": [None], "datatype": "INT64", "data": [1]}]},
        {"inputs": [{"name": "x", "shape": [2, 1.5], "datatype": "INT64", "data": [1, 2, 3]}]},
        {"inputs": [{"name": "x", "shape": [-1, -3], "datatype": "INT64", "data": [1, 2, 3]}]},
        {"inputs": [{"name": "x", "shape": [True], "datatype": "INT64", "data": [1]}]},
        {"inputs": [{"name": "x", "shape": [1] * 33, "datatype": "INT64", "data": [1]}]},
        {"inputs": [{"name": "x", "shape": [10**9], "datatype": "INT64", "data": [1]}]},
        {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": "1"}]},
        {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["NaN"]}]},
        {"inputs": []},
        {"outputs": []},
        [1, 2],
    ],
)
def test_an_inference_request_of_the_wrong_shape_is_a_json_400(client: TestClient, body: Any) -> None:
    response = client.post("/v2/models/double/infer", json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["error"], str)


def test_tensor_data_nested_deeply_is_read_without_recursion(client: TestClient) -> None:
    data: Any = 1
    for _ in range(600):
        data = [data]
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": data}]}
    response = client.post("/v2/models/double/infer", content=json.dumps(body))
    assert response.json()["outputs"][0]["data"] == [2]


@pytest.mark.parametrize("name", ["unencodable", "huge"])
def test_a_result_json_cannot_hold_is_the_same_500_on_both_protocols(tmp_path: Path, name: str) -> None:
    with TestClient(create_app(make_service(tmp_path, unencodable=unencodable, huge=huge))) as client:
        v1 = post(client, name, {"data": 1})
        v2 = client.post(
            f"/v2/models/{name}/infer", json={"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}]}
        )
    assert v1.status_code == v2.status_code == 500
    assert v1.json()["error"]["type"] == "unencodable_result"
    assert v1.json()["error"]["message"] == v2.json()["error"]
    assert v1.json()["error"]["message"].startswith(f"{name} returned a value JSON cannot hold: ")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m["lock"].update(pins=[]), "manifest.json: Manifest.lock.pins must be an object, not []"),
        (lambda m: m["python"].update(minor=3.11), "manifest.json: Manifest.python.minor must be a string, not 3.11"),
        (lambda m: m["endpoints"][0].update(bytes="12"), 'Manifest.endpoints[0].bytes must be an integer, not "12"'),
        (
            lambda m: m.update(requirements=[{"name": "x", "spec": "x==1", "reasons": [{"source": "?", "text": "t"}]}]),
            "Manifest.requirements[0].reasons[0].source must be one of notebook, artifact_load",
        ),
    ],
)
def test_a_manifest_field_of_the_wrong_type_is_named(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], field: str
) -> None:
    service = make_service(tmp_path, double=double)
    edit_manifest(service, change)
    assert_up_but_not_ready(service, field)


def test_a_client_that_leaves_before_its_body_is_a_499_not_a_server_error(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from starlette.applications import Starlette
    from starlette.types import Message, Scope

    app: Starlette = client.app  # type: ignore[assignment]  # TestClient types its app loosely
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/double/latest", "raw_path": b"/v1/double/latest", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"data"', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    async def send(message: Message) -> None:
        pass

    capsys.readouterr()
    asyncio.run(app(scope, receive, send))  # raises nothing
    [line] = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert line["status"] == 499
    assert (
        'nb2svc_requests_total{endpoint="double",status="499",version="0123456789ab"} 1.0'
        in client.get("/metrics").text
    )


def triple(x):
    return x * 3


def test_one_unready_service_does_not_stop_another(tmp_path: Path) -> None:
    from nb2svc.runtime.app import build_app
    from nb2svc.runtime.load import load_service
    from nb2svc.runtime.settings import Settings

    ready = make_service(tmp_path / "a", double=double)
    broken = make_service(tmp_path / "b", triple=triple)
    edit_manifest(broken, lambda m: m["endpoints"][0].update(sha256="0" * 64))
    with TestClient(build_app([load_service(ready), load_service(broken)], Settings())) as client:
        assert post(client, "double", {"data": 2}).json() == {"data": 4}
        refused = post(client, "triple", {"data": 2})
        assert refused.status_code == 503 and refused.json()["error"]["kind"] == "artifact"
        assert client.post("/v2/models/triple/infer", json={}).status_code == 503
        assert client.get("/ready").status_code == 503
        assert client.get("/v2/health/ready").status_code == 503


def test_a_value_that_does_not_fit_its_recorded_column_dtype_is_a_422_naming_the_column(tmp_path: Path) -> None:
    pytest.importorskip("pandas")
    from nb2svc.runtime.manifest import RecordedFrame, read_manifest

    from helpers import write_manifest

    service = make_service(tmp_path, table_in_table_out=table_in_table_out)
    manifest = read_manifest(service)
    frame = RecordedFrame(columns=("a",), dtypes={"a": "int64"})  # the notebook passed integers
    endpoint = dataclasses.replace(manifest.endpoints[0], recorded_frame=frame)
    write_manifest(service, dataclasses.replace(manifest, endpoints=(endpoint,)))
    with TestClient(create_app(service)) as client:
        refused = post(client, "table_in_table_out", {"data": [{"a": 29.5}]})
        assert refused.status_code == 422  # never truncated to 29
        assert refused.json()["error"]["message"].startswith("parameter 'table[0].a' must be integer")
        answered = post(client, "table_in_table_out", {"data": [{"a": 29}]})
        assert answered.json() == {"data": [{"a": 29, "total": 58}]}
        one_record = post(client, "table_in_table_out", {"data": {"a": 29}})  # a one-row table
        assert one_record.json() == {"data": [{"a": 29, "total": 58}]}
        refused = post(client, "table_in_table_out", {"data": {"a": 29.5}})
        assert refused.json()["error"]["message"].startswith("parameter 'table.a' must be integer")


def unlucky(table: pd.DataFrame) -> list[int]:
    if (table["a"] == 13).any():
        raise ValueError("13 is unlucky")
    doubled: list[int] = (table["a"] * 2).tolist()
    return doubled


def test_a_dataframe_batch_answers_every_row_it_can(tmp_path: Path) -> None:
    from nb2svc.runtime.manifest import RecordedFrame, read_manifest

    from helpers import write_manifest

    service = make_service(tmp_path, unlucky=unlucky)
    manifest = read_manifest(service)
    endpoint = dataclasses.replace(manifest.endpoints[0], recorded_frame=RecordedFrame(("a",), {"a": "int64"}))
    write_manifest(service, dataclasses.replace(manifest, endpoints=(endpoint,)))
    with TestClient(create_app(service)) as client:
        rows = [["r1", {"a": 1}], ["r2", {"a": "x"}], ["r3", {"a": 13}], ["r4", {"a": 4}], ["r5", 7], ["r6", {"a": 6}]]
        response = post(client, "unlucky", {"data": rows})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] == [["r1", 2], ["r2", None], ["r3", None], ["r4", 8], ["r5", None], ["r6", 12]]
    errors = dict((row_id, error) for row_id, error in body["errors"])
    assert errors["r2"]["type"] == "validation_error" and "'table.a' must be integer" in errors["r2"]["message"]
    assert errors["r3"] == {"type": "ValueError", "message": "13 is unlucky"}
    assert errors["r5"]["type"] == "validation_error" and "[id, record]" in errors["r5"]["message"]
    assert list(errors) == ["r2", "r3", "r5"]


def half(x: float) -> float:
    return x / 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (2**53 + 1, "9007199254740993 has no exact float value"),
        (10**400, "an integer of 1329 bits is beyond a float's range"),
    ],
)
def test_an_integer_no_float_holds_is_refused_not_rounded(tmp_path: Path, data: int, message: str) -> None:
    with TestClient(create_app(make_service(tmp_path, half=half))) as client:
        assert post(client, "half", {"data": 2**53}).json() == {"data": 2**52}  # exact: accepted
        refused = post(client, "half", {"data": data})
    assert refused.status_code == 422
    assert message in refused.json()["error"]["message"]
