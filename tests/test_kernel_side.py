"""nb2svc's kernel-side code in a real kernel: sent once, called in one line each, out of the notebook's sight."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from nb2svc.capture import Capture, capture_endpoints
from nb2svc.execute import SENT_TO_KERNEL, execute_notebook
from nb2svc.kernel_side import loaded
from nb2svc.notebook import read_notebook
from nb2svc.render import copy_runtime
from nb2svc.runtime.manifest import Example, ParameterDescription, RecordedFrame

from helpers import ROOT

CELLS = [
    ("import pandas as pd", []),
    (
        'def scale(x: int, *, factor: "float" = 2.0) -> float:\n'
        '    """x times factor."""\n'
        "    return x * factor\n\n"
        "def total(table: pd.DataFrame) -> float:\n"
        "    return float(table.sum().sum())",
        ["predict"],
    ),
    (
        "scale(2)\nscale(3, factor=0.5)\ntotal(pd.DataFrame({'rooms': [1, 2], 'area': [30.0, 45.5]}))\n"
        "assert not [name for name in globals() if 'nb2svc' in name or name in ('install', 'reply', 'capture')]",
        [],
    ),
]


@dataclass(frozen=True)
class Built:
    capture: Capture
    sent: list[str]  # the code of every cell the kernel ran, in order
    notebook_cells: list[str]
    modules_after: list[str]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    folder = tmp_path_factory.mktemp("kernel_side")
    path = folder / "model.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(s, metadata={"tags": t}) for s, t in CELLS]), path)
    service = folder / "service"
    service.mkdir()
    copy_runtime(service)
    sent: list[str] = []
    execute_cell = NotebookClient.execute_cell

    def counted(self: NotebookClient, cell: Any, index: int, **kwargs: Any) -> Any:
        sent.append(cell.source)
        return execute_cell(self, cell, index, **kwargs)

    spec = read_notebook(path)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(NotebookClient, "execute_cell", counted)
        with execute_notebook(spec, runtime_path=service) as executed:
            capture = capture_endpoints(executed, service)
            modules_after = executed.kernel.call(loaded.loaded_modules)
    yield Built(capture, sent, [cell.source for cell in spec.cells_to_run], modules_after)


def test_the_kernel_side_code_is_sent_once_then_each_call_is_one_short_line(built: Built) -> None:
    ours = [code for code in built.sent if code not in built.notebook_cells]
    install, *calls = ours
    assert built.sent[0] == install  # before the notebook's first cell
    assert all(f"def {name}(" in install for name in ("install", "reply", "record_calls", "capture", "distributions"))
    called = [
        re.fullmatch(
            r"__import__\('sys'\)\.modules\['_nb2svc\.kernel_side\.reply'\]\.reply\('([\w.]+)', '(\w+)', ('.*')\)", c
        )
        for c in calls
    ]
    assert [match.groups()[:2] if match else c for match, c in zip(called, calls, strict=True)] == [
        ("kernel_side.loaded", "loaded_modules"),
        ("kernel_side.reads", "record_reads"),  # before the first cell
        ("kernel_side.recording", "record_calls"),  # after the predict cell
        ("kernel_side.capture", "capture"),
        ("kernel_side.loaded", "loaded_modules"),
    ]
    arguments = [json.loads(ast.literal_eval(match.group(3))) for match in called if match]
    assert [sorted(a) for a in arguments[1:4]] == [
        ["exclude", "folder"],
        ["names", "service_dir"],
        ["endpoints", "extra_examples", "modules_at_start", "notebook_dir", "service_dir"],
    ]
    code = [
        len(call) - len(match.group(3)) for call, match in zip(calls, called, strict=True) if match
    ]  # without the JSON data
    assert max(code) < 120 and len(install) > 10_000


def test_the_kernel_never_imports_nb2svc(built: Built) -> None:
    assert not [m for m in built.modules_after if m == "nb2svc" or m.startswith("nb2svc.")]
    assert {"_nb2svc.kernel_side.capture", "_nb2svc.in_fresh_python"} <= set(built.modules_after)


def test_capture_describes_each_endpoint_as_the_manifest_does(built: Built) -> None:
    scale = built.capture.endpoints[0]
    assert (scale.name, scale.cell, scale.artifact) == ("scale", 2, "artifacts/scale.pkl")
    assert scale.signature == "(x: int, *, factor: 'float' = 2.0) -> float"
    assert (scale.doc, scale.is_async, scale.dataframe, scale.returns) == (
        "x times factor.",
        False,
        False,
        {"type": "number"},
    )
    assert scale.parameters == (
        ParameterDescription("x", "positional_or_keyword", {"type": "integer"}, True, "int"),
        ParameterDescription("factor", "keyword_only", {"type": "number", "default": 2.0}, False, "float", 2.0),
    )
    assert scale.examples == (
        Example({"data": 2}, {"data": 4.0}),
        Example({"data": {"x": 3, "factor": 0.5}}, {"data": 1.5}),
    )
    assert scale.recorded_frame is None


def test_a_dataframe_endpoint_keeps_the_columns_and_dtypes_the_notebook_passed(built: Built) -> None:
    total = built.capture.endpoints[1]
    assert total.dataframe is True
    assert total.recorded_frame == RecordedFrame(("rooms", "area"), {"rooms": "int64", "area": "float64"})
    assert total.examples == (
        Example({"data": [{"rooms": 1, "area": 30.0}, {"rooms": 2, "area": 45.5}]}, {"data": 78.5}),
    )


def test_what_the_notebook_imported_is_seen_in_the_kernel(built: Built) -> None:
    assert "pandas" in {d.name for d in built.capture.notebook_distributions}
    assert "cloudpickle" not in {d.name for d in built.capture.notebook_distributions}  # capture's own import


def test_every_kernel_side_module_is_sent() -> None:
    modules = {f"kernel_side.{p.stem}" for p in (ROOT / "nb2svc" / "kernel_side").glob("*.py") if p.stem != "__init__"}
    assert modules - {"kernel_side.install"} <= set(SENT_TO_KERNEL)  # install.py is what the rest is sent with
