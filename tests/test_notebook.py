from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from nb2svc.errors import NoEndpoint, NotebookInvalid
from nb2svc.notebook import read_notebook

from helpers import FIXTURES


def write(tmp_path: Path, *cells: tuple[str, list[str]], kernel: str | None = "python3") -> Path:
    notebook = new_notebook(cells=[new_code_cell(source, metadata={"tags": tags}) for source, tags in cells])
    if kernel:
        notebook.metadata["kernelspec"] = {"name": kernel, "display_name": kernel}
    path = tmp_path / "model.ipynb"
    nbformat.write(notebook, path)
    return path


def test_fixture_endpoint_and_skipped_cell() -> None:
    spec = read_notebook(FIXTURES / "linear_regression.ipynb")
    assert [(e.name, e.cell_number) for e in spec.endpoints] == [("my_lr_deployement", 6)]
    assert 5 not in [cell.number for cell in spec.cells_to_run]  # the matplotlib cell is tagged skip
    assert [cell.number for cell in spec.cells_to_run] == [2, 3, 4, 6, 7]
    assert spec.kernel_name == "python3"
    assert len(spec.sha256) == 64


def test_every_public_top_level_function_of_every_predict_cell(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        ("def helper(x):\n    return x", []),
        (
            "%%time\ndef first(x):\n    def inner():\n        pass\n    return x\n\ndef _private(x):\n    return x",
            ["predict"],
        ),
        ("import math\nasync def second(x):\n    return x\n!echo hi", ["predict"]),
    )
    assert [e.name for e in read_notebook(path).endpoints] == ["first", "second"]


def test_later_definition_of_the_same_endpoint_wins(tmp_path: Path) -> None:
    path = write(tmp_path, ("def f(x):\n    return 1", ["predict"]), ("def f(x):\n    return 2", ["predict"]))
    assert [(e.name, e.cell_number) for e in read_notebook(path).endpoints] == [("f", 2)]


def test_missing_kernelspec_defaults_to_python3(tmp_path: Path) -> None:
    path = write(tmp_path, ("def f(x):\n    return x", ["predict"]), kernel=None)
    assert read_notebook(path).kernel_name == "python3"


def test_no_predict_tag_tells_the_user_to_add_it() -> None:
    with pytest.raises(NoEndpoint, match="no code cell is tagged 'predict'") as caught:
        read_notebook(FIXTURES / "no_endpoint.ipynb")
    assert caught.value.exit_code == 4


def test_predict_cell_with_only_private_functions(tmp_path: Path) -> None:
    path = write(tmp_path, ("x = 1", []), ("def _hidden(x):\n    return x", ["predict"]))
    with pytest.raises(NoEndpoint, match=r"cells tagged 'predict' \(2\) define no top-level function"):
        read_notebook(path)


def test_predict_and_skip_on_one_cell_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, ("def f(x):\n    return x", ["predict", "skip"]))
    with pytest.raises(NotebookInvalid, match="cell 1 of model.ipynb is tagged both 'predict' and 'skip'"):
        read_notebook(path)


def test_syntax_error_in_predict_cell_names_cell_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, ("x = 1", []), ("def f(x):\n    return x +", ["predict"]))
    with pytest.raises(
        NotebookInvalid, match=r"cell 2 of model.ipynb \(tagged 'predict'\) is not valid Python: line 2"
    ):
        read_notebook(path)


def test_not_a_notebook() -> None:
    with pytest.raises(NotebookInvalid, match="is not a Jupyter notebook") as caught:
        read_notebook(FIXTURES / "not_a_notebook.ipynb")
    assert caught.value.exit_code == 3


def test_json_that_fails_validation(tmp_path: Path) -> None:
    path = tmp_path / "broken.ipynb"
    path.write_text(
        '{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, '
        '"cells": [{"cell_type": "code", "id": "a", "metadata": {}}]}'
    )
    with pytest.raises(NotebookInvalid, match="is not a valid notebook .*'source' is a required property"):
        read_notebook(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotebookInvalid, match="notebook not found"):
        read_notebook(tmp_path / "absent.ipynb")


def test_old_notebook_without_cell_ids_is_read(tmp_path: Path) -> None:
    path = tmp_path / "old.ipynb"
    path.write_text(
        '{"nbformat": 4, "nbformat_minor": 2, "metadata": {}, "cells": [{"cell_type": "code", "metadata": '
        '{"tags": ["predict"]}, "source": "def f(x):\\n    return x", "outputs": [], "execution_count": null}]}'
    )
    assert [e.name for e in read_notebook(path).endpoints] == ["f"]
