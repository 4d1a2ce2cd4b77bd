"""Parameters, papermill's way: ``-p NAME VALUE`` and ``-f params.yaml`` override the ``parameters`` cell's defaults
through a cell tagged ``injected-parameters``, written as papermill's ``PythonTranslator`` writes it."""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from nb2svc.errors import UsageError

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


def parse_value(text: str) -> Any:
    """A ``-p`` value as papermill's CLI reads it (``papermill/cli.py`` ``_resolve_type``)."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class _NoDatesSafeLoader(yaml.SafeLoader):
    """papermill's YAML loader (``papermill/iorw.py``): a date stays the string written."""

    yaml_implicit_resolvers = {
        first: [resolver for resolver in resolvers if resolver[0] != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def read_parameters_file(path: str | Path) -> dict[str, Any]:
    """The mapping of a ``-f`` YAML file, read as papermill reads it."""
    try:
        loaded = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_NoDatesSafeLoader)  # noqa: S506
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"-f {path}: cannot read it as YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(f"-f {path}: a YAML mapping of parameter names to values was expected")
    return {str(name): value for name, value in loaded.items()}


def injected_source(parameters: Mapping[str, Any]) -> str:
    """The source papermill's ``PythonTranslator.codify`` writes (without black, which papermill uses if installed)."""
    return "# Parameters\n" + "".join(f"{name} = {_translate(value)}\n" for name, value in parameters.items())


def declared_names(source: str) -> set[str]:
    """The names a ``parameters`` cell assigns at its top level (an AST read; papermill uses its translators' regex)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        names |= {target.id for target in targets if isinstance(target, ast.Name)}
    return names


def _translate(value: Any) -> str:
    if value is None or isinstance(value, (bool, int)):
        return str(value)
    if isinstance(value, str):
        return _escaped(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return str(value)
        return "float('nan')" if math.isnan(value) else "float('-inf')" if value < 0 else "float('inf')"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_escaped(k)}: {_translate(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_translate(v) for v in value) + "]"
    return _escaped(value)


def _escaped(value: Any) -> str:
    if isinstance(value, str):
        value = value.encode("unicode_escape").decode("utf-8").replace('"', r"\"")
    return f'"{value}"'
