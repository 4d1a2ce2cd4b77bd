"""When cloudpickle refuses an endpoint: which reference it cannot pickle, by the path the notebook would write."""

from __future__ import annotations

import inspect
from typing import Any

from . import failures

_MAX_DEPTH = 6


def unpicklable(cloudpickle: Any, endpoint: str, function: Any, exc: BaseException) -> failures.Unpicklable:
    """The failure to report for ``function``, which cloudpickle refused with ``exc``."""
    found = _find_unpicklable(cloudpickle, function, "", 0, {id(function)})
    path, culprit = found if found else (endpoint, function)
    return failures.Unpicklable(
        endpoint=endpoint,
        variable=path or endpoint,
        type=failures.type_name(culprit),
        exception=f"{type(exc).__name__}: {exc}",
    )


def _find_unpicklable(cloudpickle: Any, obj: Any, path: str, depth: int, seen: set[int]) -> tuple[str, Any] | None:
    """The deepest reference reachable from ``obj`` that cannot be pickled on its own, with its path."""
    if depth >= _MAX_DEPTH:
        return None
    for child_path, child in _references(obj, path):
        if id(child) in seen:
            continue
        seen.add(id(child))
        try:
            cloudpickle.dumps(child)
        except Exception:
            return _find_unpicklable(cloudpickle, child, child_path, depth + 1, seen) or (child_path, child)
    return None


def _references(obj: Any, path: str) -> list[tuple[str, Any]]:
    def join(name: str) -> str:
        return f"{path}.{name}" if path else name

    if inspect.isfunction(obj):
        closure = inspect.getclosurevars(obj)
        defaults = list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values())
        named = {**closure.nonlocals, **closure.globals}
        return list(named.items()) + [(f"{obj.__name__}'s default", default) for default in defaults]
    if inspect.ismethod(obj):
        return [(join("__self__"), obj.__self__), (join("__func__"), obj.__func__)]
    if isinstance(obj, dict):
        return [(f"{path}[{key!r}]", value) for key, value in obj.items()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [(f"{path}[{index}]", value) for index, value in enumerate(obj)]
    if hasattr(obj, "__dict__") and not inspect.ismodule(obj) and not inspect.isclass(obj):
        return [(join(name), value) for name, value in vars(obj).items()]
    return []
