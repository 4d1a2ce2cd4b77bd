"""Run once in a new kernel, by ``exec``: nb2svc's kernel-side code becomes the modules of a private package.

Each module goes into ``sys.modules`` under a name the notebook never uses, so that the notebook's
variables never see it and the builder's later calls need only name it.
"""

from __future__ import annotations

import sys
import types


def install(package: str, modules: list[tuple[str, bool, str]]) -> None:
    """Make each ``(name, is_package, source)``, in order, the module ``package.name``.

    Names are relative to nb2svc (``kernel_side.capture``); parents and the modules that others
    import come first.
    """
    _add(package, True, "")
    for name, is_package, source in modules:
        _add(f"{package}.{name}", is_package, source)


def _add(name: str, is_package: bool, source: str) -> None:
    module = types.ModuleType(name)
    module.__package__ = name if is_package else name.rpartition(".")[0]
    if is_package:
        module.__path__ = []
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    exec(compile(source, f"<nb2svc: {name}>", "exec"), module.__dict__)
