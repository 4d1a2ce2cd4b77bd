"""Stage 1: read a notebook, validate it, and find its endpoints by their tags."""

from __future__ import annotations

import ast
import hashlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from IPython.core.inputtransformer2 import TransformerManager

from nb2svc.errors import NoEndpoint, NotebookInvalid
from nb2svc.parameters import INJECTED_TAG, PARAMETERS_TAG, declared_names, injected_source

PREDICT_TAG = "predict"
SKIP_TAG = "skip"
DEFAULT_KERNEL = "python3"


@dataclass(frozen=True)
class Cell:
    """A code cell; ``number`` is its 1-based position among all the notebook's cells."""

    number: int
    source: str
    tags: frozenset[str]

    @property
    def first_line(self) -> str:
        for line in self.source.splitlines():
            if line.strip():
                return line.strip()
        return ""


@dataclass(frozen=True)
class Endpoint:
    """A public top-level function defined in a ``predict`` cell."""

    name: str
    cell_number: int


@dataclass(frozen=True)
class NotebookSpec:
    """A validated notebook: the cells to run and the endpoints they define."""

    path: Path
    sha256: str
    kernel_name: str
    cells_to_run: tuple[Cell, ...]
    endpoints: tuple[Endpoint, ...]
    parameters: dict[str, Any] = field(default_factory=dict)  # the overrides injected, as given
    warnings: tuple[str, ...] = ()  # what papermill would warn about the parameters

    @property
    def directory(self) -> Path:
        return self.path.parent


def read_notebook(path: str | Path, parameters: Mapping[str, Any] | None = None) -> NotebookSpec:
    """Read and validate ``path``, returning the cells to run and the endpoints.

    ``parameters`` (if any) are injected as papermill injects them: see ``inject_parameters``.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise NotebookInvalid(f"notebook not found: {path}", path=str(path))
    raw = path.read_bytes()
    node = _parse(path, raw)
    cells = _code_cells(node)
    to_run, warned = inject_parameters(cells, dict(parameters or {}))
    return NotebookSpec(
        path=path,
        sha256=hashlib.sha256(raw).hexdigest(),
        kernel_name=node.metadata.get("kernelspec", {}).get("name") or DEFAULT_KERNEL,
        cells_to_run=tuple(cell for cell in to_run if SKIP_TAG not in cell.tags),
        endpoints=find_endpoints(path, cells),
        parameters=dict(parameters or {}),
        warnings=warned,
    )


def inject_parameters(cells: list[Cell], parameters: dict[str, Any]) -> tuple[list[Cell], tuple[str, ...]]:
    """The cells with papermill's ``injected-parameters`` cell, and papermill's warnings.

    As papermill's ``parameterize_notebook``: an ``injected-parameters`` cell already there is replaced, else the
    new one goes right after the first ``parameters`` cell, else at the top (with a warning). The injected cell
    takes the number of the cell it follows (0 at the top), so every notebook cell keeps its own number.
    """
    if not parameters:
        return cells, ()
    source = injected_source(parameters)
    injected = next((i for i, cell in enumerate(cells) if INJECTED_TAG in cell.tags), None)
    defaults = next((i for i, cell in enumerate(cells) if PARAMETERS_TAG in cell.tags), None)
    warned: list[str] = []
    if defaults is None:
        warned.append("Input notebook does not contain a cell with tag 'parameters': the parameters go in at the top")
    else:
        known = declared_names(cells[defaults].source)
        warned += [f"Passed unknown parameter: {name}" for name in parameters if name not in known]
    if injected is not None:
        new = Cell(number=cells[injected].number, source=source, tags=frozenset({INJECTED_TAG}))
        return [*cells[:injected], new, *cells[injected + 1 :]], tuple(warned)
    if defaults is not None:
        new = Cell(number=cells[defaults].number, source=source, tags=frozenset({INJECTED_TAG}))
        return [*cells[: defaults + 1], new, *cells[defaults + 1 :]], tuple(warned)
    return [Cell(number=0, source=source, tags=frozenset({INJECTED_TAG})), *cells], tuple(warned)


def cells_to_run(path: str | Path, parameters: Mapping[str, Any] | None = None) -> tuple[Cell, ...]:
    """The cells ``nb2svc build`` runs for ``path`` with ``parameters``, without starting a kernel."""
    return read_notebook(path, parameters).cells_to_run


def _parse(path: Path, raw: bytes) -> nbformat.NotebookNode:
    with warnings.catch_warnings():  # nbformat warns about old minor versions it upgrades; nothing to act on
        warnings.simplefilter("ignore")
        return _parse_and_validate(path, raw)


def _parse_and_validate(path: Path, raw: bytes) -> nbformat.NotebookNode:
    try:
        node: nbformat.NotebookNode = nbformat.reads(raw.decode("utf-8"), as_version=4)
    except UnicodeDecodeError as exc:
        raise NotebookInvalid(
            f"{path} is not a Jupyter notebook: it is not UTF-8 text ({exc.reason}).", path=str(path)
        ) from exc
    except Exception as exc:  # nbformat raises several unrelated types for unreadable input
        raise NotebookInvalid(
            f"{path} is not a Jupyter notebook: {_first_line(str(exc))}. "
            "Save it from Jupyter as .ipynb, or check that the file is not truncated.",
            path=str(path),
        ) from exc
    try:
        nbformat.validate(node)
    except nbformat.ValidationError as exc:
        raise NotebookInvalid(
            f"{path} is not a valid notebook (nbformat {node.get('nbformat')}): {_first_line(exc.message)}. "
            "Open it in Jupyter and save it again to repair it.",
            path=str(path),
        ) from exc
    return node


def _code_cells(node: nbformat.NotebookNode) -> list[Cell]:
    return [
        Cell(number=index + 1, source=cell.source, tags=frozenset(cell.metadata.get("tags", ())))
        for index, cell in enumerate(node.cells)
        if cell.cell_type == "code"
    ]


def find_endpoints(path: Path, cells: list[Cell]) -> tuple[Endpoint, ...]:
    """Every public top-level function of every ``predict`` cell; a later definition wins."""
    predict_cells = [cell for cell in cells if PREDICT_TAG in cell.tags]
    found: dict[str, Endpoint] = {}
    for cell in predict_cells:
        if SKIP_TAG in cell.tags:
            raise NotebookInvalid(
                f"cell {cell.number} of {path.name} is tagged both 'predict' and 'skip': "
                "a skipped cell does not run, so its functions would not exist. Remove one of the tags.",
                cell=cell.number,
            )
        for name in _public_functions(path, cell):
            found.pop(name, None)
            found[name] = Endpoint(name=name, cell_number=cell.number)
    if not found:
        raise NoEndpoint(_no_endpoint_message(path, predict_cells), path=str(path))
    return tuple(found.values())


def _public_functions(path: Path, cell: Cell) -> list[str]:
    python = TransformerManager().transform_cell(_without_python_cell_magic(cell.source))
    try:
        tree = ast.parse(python)
    except SyntaxError as exc:
        raise NotebookInvalid(
            f"cell {cell.number} of {path.name} (tagged 'predict') is not valid Python: "
            f"line {exc.lineno}: {exc.msg}. Fix the cell and run it in Jupyter first.",
            cell=cell.number,
        ) from exc
    return [
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_")
    ]


def _without_python_cell_magic(source: str) -> str:
    """Drop a leading ``%%time`` or ``%%capture``: their body is Python run in the notebook's namespace."""
    lines = source.lstrip().splitlines()
    while lines and lines[0].split()[:1] in (["%%time"], ["%%capture"]):
        lines = lines[1:]
    return "\n".join(lines)


def _no_endpoint_message(path: Path, predict_cells: list[Cell]) -> str:
    if not predict_cells:
        return (
            f"no endpoint in {path.name}: no code cell is tagged 'predict'. Add the tag 'predict' to the cell "
            "that defines your prediction function (JupyterLab: select the cell, open the property inspector, "
            "add a cell tag); every top-level function in that cell whose name does not start with '_' is served."
        )
    numbers = ", ".join(str(cell.number) for cell in predict_cells)
    return (
        f"no endpoint in {path.name}: the cells tagged 'predict' ({numbers}) define no top-level function "
        "whose name does not start with '_'. Define the prediction function with `def name(...)` at the top "
        "level of a 'predict' cell."
    )


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"
