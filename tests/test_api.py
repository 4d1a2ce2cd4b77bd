"""The service's API through HTTP (starlette's TestClient): modes, types, validation, encodings, OpenAPI, OIP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.testclient import TestClient

import nb2svc
from nb2svc.runtime.app import create_app

from helpers import FIXTURES

pytestmark = pytest.mark.network  # the typed_api service is built, and locked against the package index


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("api") / "typed_api"
    nb2svc.build(FIXTURES / "typed_api.ipynb", output)
    return output


@pytest.fixture(scope="module")
def client(service: Path) -> Any:
    with TestClient(create_app(service)) as client:
        yield client


def call(client: TestClient, name: str, data: Any) -> Any:
    return client.post(f"/v1/{name}/latest", json={"data": data})


@pytest.mark.parametrize(
    ("name", "data", "answer"),
    [
        ("add", [1, 2], 3.0),  # several parameters by position
        ("add", {"a": 1, "b": 2}, 3.0),  # by name
        ("add", {"a": 1}, 1.5),  # the default is honoured
        ("add", 4, 4.5),  # one value is the first parameter
        ("scale", [1, 2], [2.0, 4.0]),  # a list is one argument when the rest have defaults...
        ("scale", {"values": [1, 2], "factor": 3}, [3.0, 6.0]),
        ("pick", ["max", [3, 9, 4]], 9),
        ("maybe", None, "nothing"),
        ("maybe", 7, "got 7"),
        ("norm", {"x": 3, "y": 4}, 5.0),  # a TypedDict parameter takes the object itself
        ("area", {"width": 2, "height": 4}, 8.0),  # a dataclass is built from the object
        ("area", {"width": 3}, 3.0),
        ("total", {"item": "pen"}, {"item": "pen", "quantity": 1, "type": "Order"}),  # a pydantic model
        ("counts", {"a": 1, "b": 2}, 3),
        ("mean", {"values": [[1, 2], [3, 4]]}, 2002.5),  # a 2-D numpy array: by name, since [[...]] is a batch
        ("score", [{"rooms": 1, "area": 30}, {"rooms": 2, "area": 45.5}], [40.0, 65.5]),  # records -> one DataFrame
        ("score", {"rooms": 1, "area": 30}, [40.0]),  # one record -> a one-row DataFrame
    ],
)
def test_request_modes_and_types(client: TestClient, name: str, data: Any, answer: Any) -> None:
    response = call(client, name, data)
    assert response.status_code == 200, response.text
    assert response.json() == {"data": answer}


def test_batch_answers_in_order_with_ids_echoed(client: TestClient) -> None:
    response = call(client, "add", [["first", 1, 2], [7, {"a": 5}], [None, 3]])
    assert response.json() == {"data": [["first", 3.0], [7, 5.5], [None, 3.5]]}


def test_bad_rows_do_not_fail_the_others(client: TestClient) -> None:
    response = call(client, "add", [[1, 12, 0.4], [2, "x"], [3, 1, 2, 3]])
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == [[1, 12.4], [2, None], [3, None]]
    assert body["errors"][0] == [
        2,
        {
            "type": "validation_error",
            "parameter": "a",
            "message": "parameter 'a' must be integer; received \"x\" (string)",
        },
    ]
    assert body["errors"][1][0] == 3 and "3 values given" in body["errors"][1][1]["message"]


def test_dataframe_batch_is_one_call_with_the_notebooks_dtypes(client: TestClient) -> None:
    response = call(client, "score", [["a", {"rooms": 1, "area": 30}], ["b", {"rooms": 3, "area": 1}]])
    assert response.json() == {"data": [["a", 40.0], ["b", 31.0]]}
    # area came as integers; the notebook passed floats, so the table is built with float64
    assert call(client, "dtypes_of", [{"rooms": 1, "area": 30}]).json() == {
        "data": {"rooms": "int64", "area": "float64"}
    }


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("add", {"a": "one"}, "parameter 'a' must be integer; received \"one\" (string)"),
        ("add", {"a": 1.5}, "parameter 'a' must be integer; received 1.5 (number)"),
        ("add", {"a": True}, "parameter 'a' must be integer; received true (boolean)"),
        ("add", {"a": 1, "b": "2"}, "parameter 'b' must be number; received \"2\" (string)"),
        ("scale", {"values": [1, "x"]}, "parameter 'values[1]' must be number; received \"x\" (string)"),
        ("pick", ["median", [1]], "parameter 'mode' must be one of ['min', 'max']; received \"median\" (string)"),
        ("area", {"height": 2}, "parameter 'box' must contain ['width'] properties"),
        ("add", {"b": 1}, "parameter 'a' is required and was not given"),
    ],
)
def test_a_value_of_the_wrong_type_is_422_naming_the_parameter(
    client: TestClient, name: str, data: Any, message: str
) -> None:
    response = call(client, name, data)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert message in error["message"]


def test_an_int_where_a_float_is_expected_is_accepted(client: TestClient) -> None:
    assert call(client, "area", {"width": 2, "height": 3}).json() == {"data": 6.0}


def test_results_are_encoded(client: TestClient) -> None:
    data = call(client, "kinds", 0).json()["data"]
    assert data == {
        "when": "2026-11-27T06:30:00",
        "day": "2026-11-27",
        "raw": "bmIyc3Zj",
        "price": "1.10",
        "tags": ["a", "b"],
        "box": {"width": 2.0, "height": 3.0},
        "order": {"item": "pen", "quantity": 1},
        "nan": None,
        "inf": [None, None],
        "array": [0, 1, 2],
        "float64": 1.5,
        "series": [1, 2],
        "frame": [{"a": 1, "b": 0.5}, {"a": 2, "b": None}],
    }


def test_an_unencodable_result_is_500_naming_the_type(client: TestClient) -> None:
    response = call(client, "opaque", 1)
    assert response.status_code == 500
    assert "builtins.object, which cannot be encoded as JSON" in response.json()["error"]["message"]


def test_openapi_is_valid_and_carries_schemas_and_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    validate(spec)
    assert spec["openapi"] == "3.1.0"
    add = spec["paths"]["/v1/add/latest"]["post"]
    media = add["requestBody"]["content"]["application/json"]
    forms = media["schema"]["properties"]["data"]["anyOf"]
    assert forms[0]["properties"] == {"a": {"type": "integer"}, "b": {"type": "number", "default": 0.5}}
    assert media["examples"]["example 1"]["value"] == {"data": {"a": 1, "b": 2.5}}
    assert add["x-nb2svc-reading"] == '{"data": [a, b]} by position, or {"data": {"a": ..., "b": ...}} by name'
    assert len([p for p in spec["paths"] if p.endswith("/latest")]) == 13


def test_docs_page_needs_no_network(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text
    assert 'fetch(base + "/openapi.json"' in page.text


def test_info_and_model_version_header(client: TestClient, service: Path) -> None:
    manifest = json.loads((service / "manifest.json").read_text())
    info = client.get("/v1/add/info")
    assert info.headers["x-model-version"] == manifest["version"]
    body = info.json()
    assert body["notebook"] == manifest["notebook"]
    assert body["artifact"]["sha256"] == manifest["endpoints"][0]["sha256"]
    assert body["packages"]["pandas"] == manifest["lock"]["pins"]["pandas"]
    assert not {"cloudpickle", "starlette", "uvicorn", "fastjsonschema"} & set(body["packages"])  # the runtime's
    assert body["python"]["version"] == manifest["python"]["version"]
    for response in (client.get("/health"), call(client, "add", "x"), client.get("/nope")):
        assert response.headers["x-model-version"] == manifest["version"]


def test_versioned_route(client: TestClient, service: Path) -> None:
    version = json.loads((service / "manifest.json").read_text())["version"]
    assert client.post(f"/v1/add/{version}", json={"data": 1}).json() == {"data": 1.5}
    missing = client.post("/v1/add/v999", json={"data": 1})
    assert missing.status_code == 404 and version in missing.json()["error"]["message"]


def test_open_inference_protocol_by_hand(client: TestClient) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    metadata = client.get("/v2/models/add").json()
    assert metadata["inputs"] == [
        {"name": "a", "datatype": "INT64", "shape": [-1]},
        {"name": "b", "datatype": "FP64", "shape": [-1]},
    ]
    body = {
        "id": "r1",
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 2]},
            {"name": "b", "shape": [2], "datatype": "FP64", "data": [0.5, 0.25]},
        ],
    }
    answer = client.post("/v2/models/add/infer", json=body).json()
    assert answer["id"] == "r1"
    assert answer["outputs"] == [{"name": "output", "datatype": "FP64", "shape": [2], "data": [1.5, 2.25]}]
    # a one-object parameter takes each row's object itself (a BYTES tensor of JSON)
    point = {"inputs": [{"name": "point", "shape": [1], "datatype": "BYTES", "data": ['{"x": 3, "y": 4}']}]}
    assert client.post("/v2/models/norm/infer", json=point).json()["outputs"][0]["data"] == [5.0]
    bad = client.post(
        "/v2/models/add/infer", json={"inputs": [{"name": "z", "shape": [1], "datatype": "FP64", "data": [1]}]}
    )
    assert bad.status_code == 400 and "input 'z' is not a parameter of add" in bad.json()["error"]
