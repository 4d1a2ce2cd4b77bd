"""Answers compared with the outputs recorded in the training kernel (used by /ready and by `nb2svc verify`)."""

from __future__ import annotations

import math
from typing import Any

REL_TOLERANCE = 1e-6  # floats compare with math.isclose(rel_tol=1e-6, abs_tol=1e-9); all else exactly
ABS_TOLERANCE = 1e-9


def compare(expected: Any, actual: Any, path: str = "") -> str | None:
    """None if ``actual`` matches ``expected``: floats within tolerance, everything else exactly."""
    where = path or "the answer"
    if isinstance(expected, float) or (isinstance(actual, float) and isinstance(expected, int)):
        if isinstance(actual, (int, float)) and not isinstance(actual, bool) and not isinstance(expected, bool):
            if math.isclose(expected, actual, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE):
                return None
        return f"{where}: expected {expected!r}, got {actual!r}"
    if isinstance(expected, dict) and isinstance(actual, dict):
        if expected.keys() != actual.keys():
            return f"{where}: expected keys {sorted(expected)}, got {sorted(actual)}"
        return next((d for k in expected if (d := compare(expected[k], actual[k], f"{path}.{k}" if path else k))), None)
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{where}: expected {len(expected)} items, got {len(actual)}"
        return next(
            (d for i, (e, a) in enumerate(zip(expected, actual, strict=True)) if (d := compare(e, a, f"{path}[{i}]"))),
            None,
        )
    if type(expected) is not type(actual) or expected != actual:
        return f"{where}: expected {expected!r}, got {actual!r}"
    return None
