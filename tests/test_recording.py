"""The notebook's own calls become examples: numpy values recorded as the requests a client would send."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

import nb2svc
from nb2svc.cli import cli
from nb2svc.runtime.app import create_app

from helpers import FIXTURES

pytestmark = pytest.mark.network  # each build locks against the package index


@pytest.fixture(scope="module")
def numpy_service(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("recording") / "numpy_calls"
    nb2svc.build(FIXTURES / "numpy_calls.ipynb", output)
    return output


def endpoints(service: Path) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in json.loads((service / "manifest.json").read_text())["endpoints"]}


def test_calls_with_numpy_values_are_recorded_as_a_client_sends_them(numpy_service: Path) -> None:
    found = endpoints(numpy_service)
    requests = {name: [example["request"] for example in e["examples"]] for name, e in found.items()}
    assert requests["score_row"] == [{"data": [1.0, 2.0, 3.0]}]  # score_row(X[0]): a row of an array
    assert requests["score_features"] == [  # [score_features(*point) for point in X]: numpy scalars
        {"data": {"a": 1.0, "b": 2.0, "c": 3.0}},
        {"data": {"a": 4.0, "b": 5.0, "c": 6.0}},
        {"data": {"a": 7.5, "b": 8.0, "c": 9.25}},
    ]
    assert requests["total"] == [{"data": [7.5, 8.0, 9.25]}]  # total(list(X[2])): a list of numpy.float64
    assert requests["doubled"] == [{"data": 3}]  # doubled(np.int64(3))
    assert {name: e["calls_seen"] for name, e in found.items()} == {
        "score_row": 1, "score_features": 3, "total": 1, "doubled": 1, "raw": 1,
    }  # fmt: skip


def test_the_recorded_requests_answer_as_the_notebook_did(numpy_service: Path) -> None:
    with TestClient(create_app(numpy_service)) as client:
        assert client.get("/ready").status_code == 200  # every example replayed at start-up, answered the same
        for name, endpoint in endpoints(numpy_service).items():
            for example in endpoint["examples"]:
                assert client.post(f"/v1/{name}/latest", json=example["request"]).json() == example["response"]


def test_a_call_that_cannot_be_sent_unchanged_is_reported_with_the_reason(numpy_service: Path) -> None:
    raw = endpoints(numpy_service)["raw"]
    assert raw["examples"] == []
    assert raw["unrecorded"] == [
        "argument 'row' is a numpy array, and the service would pass a list: annotate it numpy.ndarray"
    ]


def test_the_build_says_how_many_calls_were_seen_and_recorded(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["build", str(FIXTURES / "numpy_calls.ipynb"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "score_features(a: float, b: float, c: float) -> float  (3 examples from 3 calls)" in result.stderr
    assert "raw(row)  (0 examples from 1 call)" in result.stderr
    assert "a call not recorded: argument 'row' is a numpy array" in result.stderr
