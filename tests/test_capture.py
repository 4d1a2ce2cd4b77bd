"""Executing a notebook in a real kernel and capturing its endpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import nb2svc
from nb2svc.errors import CaptureFailed
from nb2svc.execute import CellProgress, execute_notebook
from nb2svc.kernel_side import failures, loaded
from nb2svc.notebook import read_notebook

from helpers import FIXTURES, kernel_processes

LOCAL = FIXTURES / "local_module" / "uses_local_module.ipynb"


def notebook(tmp_path: Path, setup: str, endpoint: str) -> Path:
    cells = [new_code_cell(setup), new_code_cell(endpoint, metadata={"tags": ["predict"]})]
    path = tmp_path / "nb" / "model.ipynb"
    path.parent.mkdir()
    nbformat.write(new_notebook(cells=cells), path)
    return path


def test_kernel_runs_in_the_notebook_folder_and_is_shut_down_after() -> None:
    spec = read_notebook(LOCAL)
    seen: list[CellProgress] = []
    with execute_notebook(spec, on_cell=seen.append) as executed:
        assert len(kernel_processes()) == 1
        assert executed.kernel.call(loaded.loaded_modules)  # the kernel is still open for capture
    assert kernel_processes() == []
    assert [(p.cell.number, p.seconds is None) for p in seen] == [
        (1, True),
        (1, False),
        (2, True),
        (2, False),
        (3, True),
        (3, False),
    ]
    assert [t.number for t in executed.timings] == [1, 2, 3]


@pytest.mark.network  # the build locks against the package index
def test_local_modules_and_notebook_classes_travel_inside_the_artifact(tmp_path: Path) -> None:
    result = nb2svc.build(LOCAL, tmp_path / "service")
    artifact = tmp_path / "service" / "artifacts" / "predict.pkl"
    # A fresh interpreter, far from the notebook's folder: the helper module cannot be imported there.
    script = (
        "import importlib.util, pickle, sys\n"
        "assert importlib.util.find_spec('fixture_features') is None\n"
        f"print(pickle.loads(open({str(artifact)!r}, 'rb').read())(2))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[3.0, 6.0]"
    assert not any(pin.name == "fixture_features" for pin in result.requirements)


@pytest.mark.parametrize(
    ("setup", "variable", "type_name"),
    [
        (
            "import threading\n"
            "class Model:\n"
            "    def __init__(self):\n"
            "        self.lock = threading.Lock()\n"
            "model = Model()",
            "model.lock",
            "_thread.lock",
        ),
        ("numbers = (i for i in range(3))", "numbers", "generator"),
        ("import socket\nconnections = {'db': socket.socket()}", "connections['db']", "socket.socket"),
    ],
)
def test_unpicklable_reference_is_named_with_its_path_and_type(
    tmp_path: Path, setup: str, variable: str, type_name: str
) -> None:
    name = variable.split(".")[0].split("[")[0]
    path = notebook(tmp_path, setup, f"def predict(x):\n    return helper(x)\n\ndef helper(x):\n    return {name}")
    with pytest.raises(CaptureFailed) as caught:
        nb2svc.build(path, tmp_path / "out")
    assert caught.value.details["reason"] == failures.UNPICKLABLE
    assert caught.value.details["variable"] == variable
    assert caught.value.details["variable_type"] == type_name
    assert caught.value.exit_code == 7
    assert not (tmp_path / "out").exists()


def test_endpoint_rebound_by_a_later_cell(tmp_path: Path) -> None:
    path = notebook(tmp_path, "x = 1", "def predict(x):\n    return x\n\npredict = 3")
    with pytest.raises(
        CaptureFailed, match=r"endpoint 'predict' .* is no longer a function once the notebook has run \(it holds int\)"
    ) as caught:
        nb2svc.build(path, tmp_path / "out")
    assert caught.value.details == {"reason": failures.NOT_CALLABLE, "endpoint": "predict", "cell": 2}


def test_a_kernel_without_cloudpickle_is_told_how_to_install_it(tmp_path: Path) -> None:
    path = notebook(
        tmp_path,
        "import sys\nsys.modules['cloudpickle'] = None  # as if not installed",
        "def predict(x):\n    return x",
    )
    with pytest.raises(
        CaptureFailed, match=r"cannot import cloudpickle, .* Install it there: \S+ -m pip install cloudpickle"
    ) as caught:
        nb2svc.build(path, tmp_path / "out")
    assert caught.value.details == {"reason": failures.NO_CLOUDPICKLE}
    assert not (tmp_path / "out").exists()


def test_an_example_that_fails_names_its_value_and_the_exception(tmp_path: Path) -> None:
    path = notebook(tmp_path, "offset = 1", "def predict(x):\n    return x + offset")
    with pytest.raises(
        CaptureFailed,
        match=r'the example "two" for endpoint \'predict\' \(cell 2 of model.ipynb\) failed when called: '
        r"TypeError: can only concatenate str",
    ) as caught:
        nb2svc.build(path, tmp_path / "out", examples={"predict": [2, "two"]})
    assert caught.value.details == {"reason": failures.EXAMPLE_FAILED, "endpoint": "predict", "cell": 2}
