"""A DataFrame endpoint built from a notebook: the recorded columns and dtypes are the table's contract."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

import nb2svc
from nb2svc.runtime.app import create_app

from helpers import FIXTURES

pytestmark = pytest.mark.network  # the build locks against the package index

ALICE = {"age": 29, "salary": 58000, "city": "LA", "is_senior": 0}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    output = tmp_path_factory.mktemp("applicants") / "service"
    nb2svc.build(FIXTURES / "applicants.ipynb", output)
    with TestClient(create_app(output)) as client:
        yield client


def approve(client: TestClient, data: Any) -> Any:
    return client.post("/v1/approve/latest", json={"data": data})


def test_a_float_for_an_integer_column_is_refused_naming_the_column(client: TestClient) -> None:
    refused = approve(client, [{**ALICE, "age": 29.5}])
    assert refused.status_code == 422  # never the answer for age 29
    assert refused.json()["error"]["message"].startswith("parameter 'applicants[0].age' must be integer")
    assert approve(client, [{**ALICE, "age": 29.0}]).status_code == 200  # an integral float is that integer


def test_one_record_is_a_one_row_table(client: TestClient) -> None:
    assert approve(client, ALICE).json() == approve(client, [ALICE]).json() == {"data": [True]}


def test_a_missing_column_is_refused_naming_it(client: TestClient) -> None:
    refused = approve(client, {"age": 29, "salary": 58000, "city": "LA"})
    assert refused.status_code == 422
    assert "is_senior" in refused.json()["error"]["message"]


def test_in_a_batch_only_the_rows_at_fault_fail(client: TestClient) -> None:
    rows = [
        ["ok-1", ALICE],
        ["bad-age", {**ALICE, "age": "x"}],
        ["boston", {**ALICE, "city": "Boston"}],  # a city the model never saw: the call raises for this row
        ["ok-2", {**ALICE, "salary": 20000}],
    ]
    response = approve(client, rows)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] == [["ok-1", True], ["bad-age", None], ["boston", None], ["ok-2", False]]
    errors = dict((row_id, error) for row_id, error in body["errors"])
    assert list(errors) == ["bad-age", "boston"]
    assert errors["bad-age"]["type"] == "validation_error"
    assert "'applicants.age' must be integer" in errors["bad-age"]["message"]
    assert errors["boston"] == {"type": "KeyError", "message": "'Boston'"}
