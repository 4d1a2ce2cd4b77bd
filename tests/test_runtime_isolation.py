"""The runtime is copied into service directories that run without nb2svc: it must never import nb2svc."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import nb2svc
import nb2svc.runtime

RUNTIME = Path(nb2svc.runtime.__file__).parent
# What a service's requirements install for the runtime; anything else must be the standard library.
# orjson is optional: encoding.py and body.py import it only where it is installed (the training kernel may not
# have it), with the standard library's json otherwise.
ALLOWED = {"starlette", "anyio", "cloudpickle", "uvicorn", "fastjsonschema", "prometheus_client", "orjson"}


def imported_modules(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.module or "", node.lineno))
    return found


def test_runtime_imports_only_the_standard_library_and_its_locked_packages() -> None:
    files = sorted(RUNTIME.rglob("*.py"))
    assert len(files) >= 4
    offenders = [
        f"{path.relative_to(RUNTIME)}:{line} imports {module}"
        for path in files
        for module, line in imported_modules(path)
        if module.partition(".")[0] not in sys.stdlib_module_names | ALLOWED
    ]
    assert offenders == []


def test_the_check_catches_an_import_of_nb2svc(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("import json\nfrom nb2svc.errors import Nb2svcError\n")
    assert [m for m, _ in imported_modules(sneaky) if m.partition(".")[0] not in sys.stdlib_module_names] == [
        "nb2svc.errors"
    ]


def test_kernel_side_code_imports_only_what_every_python_kernel_has() -> None:
    package = Path(nb2svc.__file__).parent
    files = sorted((package / "kernel_side").glob("*.py"))
    assert len(files) >= 5
    others = {
        m for path in files for m, _ in imported_modules(path) if m.partition(".")[0] not in sys.stdlib_module_names
    }
    # nb2svc_runtime's modules come from the service directory; their own siblings by relative imports.
    # fastjsonschema is optional: loaded.py imports it only where it is installed (try/except ImportError).
    assert others <= {"cloudpickle", "IPython", "IPython.display", "fastjsonschema"}


def test_what_is_sent_to_the_kernel_from_outside_kernel_side_imports_only_the_standard_library_at_its_top() -> None:
    script = Path(nb2svc.__file__).parent / "in_fresh_python.py"  # its top_level and distributions are sent too
    top = [node for node in ast.parse(script.read_text()).body if isinstance(node, (ast.Import, ast.ImportFrom))]
    modules = [alias.name for node in top if isinstance(node, ast.Import) for alias in node.names]
    modules += [node.module or "" for node in top if isinstance(node, ast.ImportFrom)]
    assert [m for m in modules if m.partition(".")[0] not in sys.stdlib_module_names | {"__future__"}] == []
