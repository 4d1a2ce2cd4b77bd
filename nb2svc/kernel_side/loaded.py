"""What the kernel has loaded: its modules before the notebook's cells, and the distributions the cells imported."""

from __future__ import annotations

import sys
from typing import Any

# in_fresh_python is the one place that says which distribution provides a module.
from .. import in_fresh_python


def loaded_modules() -> list[str]:
    """The modules loaded in the kernel right now, before the notebook's cells.

    The runtime's validator (fastjsonschema), which the recorder uses to read calls as the service
    would, is loaded first where it is installed: it is the service's need, not the notebook's.
    """
    try:
        import fastjsonschema  # noqa: F401  (loaded for the recorder, before the snapshot)
    except ImportError:
        pass
    return sorted(sys.modules)


def distributions_imported_since(modules_at_start: list[str]) -> dict[str, dict[str, Any]]:
    """The installed distributions of the top-level modules loaded since ``modules_at_start``."""
    imported = in_fresh_python.top_level(sys.modules) - in_fresh_python.top_level(modules_at_start)
    return in_fresh_python.distributions(imported, in_fresh_python.packages_distributions())
