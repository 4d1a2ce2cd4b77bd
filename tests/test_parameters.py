"""Parameters, papermill's way: -p and -f override the `parameters` cell through an `injected-parameters` cell."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from nb2svc.cli import cli
from nb2svc.notebook import cells_to_run, read_notebook
from nb2svc.parameters import injected_source, parse_value
from nb2svc.runtime.app import create_app

from helpers import FIXTURES

NOTEBOOK = FIXTURES / "parameters.ipynb"
ROUTE = "/v1/scaled/latest"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def papermill_cells(notebook: Path, parameters: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The code cells papermill would run: (source, tags)."""
    node = papermill.execute_notebook(str(notebook), None, parameters=parameters, prepare_only=True, log_output=False)
    return [(cell.source, list(cell.metadata.get("tags", []))) for cell in node.cells if cell.cell_type == "code"]


def nb2svc_cells(notebook: Path, parameters: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [(cell.source, sorted(cell.tags)) for cell in cells_to_run(notebook, parameters)]


def answer(service_dir: Path, x: float) -> Any:
    with TestClient(create_app(service_dir)) as client:
        return client.post(ROUTE, json={"data": x}).json()["data"]


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3), ("-2", -2), ("1.5", 1.5), ("1e3", 1000.0), ("True", True), ("False", False), ("None", None),
     ("true", "true"), ("abc", "abc"), ("nan", float("inf") * 0)],
)  # fmt: skip
def test_values_are_parsed_as_papermill_parses_them(text: str, value: Any) -> None:
    from papermill.cli import _resolve_type

    parsed = parse_value(text)
    assert type(parsed) is type(_resolve_type(text)) is type(value)
    assert repr(parsed) == repr(_resolve_type(text))


@pytest.mark.parametrize(
    "parameters",
    [
        {"scale": 3},
        {"scale": 1.5, "label": 'say "hi"\n', "flag": True, "nothing": None},
        {"scale": [1, "a", {"k": 2.5}], "inf": float("-inf")},
    ],
)
def test_the_injected_cell_is_placed_and_written_as_papermill_does(parameters: dict[str, Any]) -> None:
    assert nb2svc_cells(NOTEBOOK, parameters) == papermill_cells(NOTEBOOK, parameters)
    assert injected_source(parameters).startswith("# Parameters\n")


def test_no_parameters_cell_injects_at_the_top_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    node = nbformat.read(NOTEBOOK, as_version=4)
    for cell in node.cells:
        if cell.metadata.get("tags") == ["parameters"]:
            del cell.metadata["tags"]
    bare = tmp_path / "bare.ipynb"
    nbformat.write(node, bare)
    with caplog.at_level(logging.WARNING, logger="papermill"):
        expected = papermill_cells(bare, {"scale": 3})
    assert "does not contain a cell with tag 'parameters'" in caplog.text
    assert nb2svc_cells(bare, {"scale": 3}) == expected
    assert expected[0] == ("# Parameters\nscale = 3\n", ["injected-parameters"])
    spec = read_notebook(bare, {"scale": 3})
    assert spec.cells_to_run[0].number == 0
    assert any("does not contain a cell with tag 'parameters'" in warning for warning in spec.warnings)


def test_an_unknown_parameter_warns() -> None:
    spec = read_notebook(NOTEBOOK, {"scale": 3, "sclae": 4})
    assert spec.warnings == ("Passed unknown parameter: sclae",)
    assert read_notebook(NOTEBOOK, {"scale": 3, "label": "x"}).warnings == ()
    injected = [cell for cell in spec.cells_to_run if "injected-parameters" in cell.tags]
    assert [cell.number for cell in injected] == [3]  # the number of the `parameters` cell it follows


def test_without_parameters_the_notebook_runs_as_it_is() -> None:
    assert not any("injected-parameters" in cell.tags for cell in cells_to_run(NOTEBOOK))


@pytest.mark.network  # the build locks against the package index
def test_p_and_f_change_what_the_service_answers(tmp_path: Path) -> None:
    default = run("build", str(NOTEBOOK), "-o", str(tmp_path / "default"))
    assert default.exit_code == 0, default.output
    assert answer(tmp_path / "default", 10) == 20

    by_p = run("build", str(NOTEBOOK), "-o", str(tmp_path / "p"), "-p", "scale", "3", "--json")
    assert by_p.exit_code == 0, by_p.output
    assert answer(tmp_path / "p", 10) == 30
    assert json.loads(by_p.stdout)["manifest"]["parameters"] == {"scale": 3}

    params = tmp_path / "params.yaml"
    params.write_text("scale: 0.5\nsclae: 1\nday: 2026-11-29\n", encoding="utf-8")
    by_f = run("build", str(NOTEBOOK), "-o", str(tmp_path / "f"), "-f", str(params))
    assert by_f.exit_code == 0, by_f.output
    assert answer(tmp_path / "f", 10) == 5
    assert "warning: Passed unknown parameter: sclae" in by_f.stderr
    assert "warning: Passed unknown parameter: day" in by_f.stderr
    manifest = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert manifest["parameters"] == {"scale": 0.5, "sclae": 1, "day": "2026-11-29"}
    both = run("build", str(NOTEBOOK), "-o", str(tmp_path / "both"), "-f", str(params), "-p", "scale", "4")
    assert both.exit_code == 0, both.output
    assert answer(tmp_path / "both", 10) == 40  # -p wins over -f, as in papermill
    with TestClient(create_app(tmp_path / "f")) as client:
        assert client.get("/v1/scaled/info").json()["parameters"] == {"scale": 0.5, "sclae": 1, "day": "2026-11-29"}
        [deployment] = client.get("/deployments").json()["deployments"]
        assert [version["parameters"] for version in deployment["versions"]] == [
            {"scale": 0.5, "sclae": 1, "day": "2026-11-29"}
        ]
