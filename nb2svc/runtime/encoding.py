"""Results to JSON: numpy scalars and arrays become plain numbers and lists, NaN and infinities null."""

from __future__ import annotations

import json
import math
from typing import Any


class EncodeError(Exception):
    """A result has a type that cannot be written as JSON."""


def encode_json(payload: Any) -> bytes:
    """``payload`` as compact UTF-8 JSON; the fast path costs one ``json.dumps``."""
    try:
        text = json.dumps(payload, default=_default, allow_nan=False, separators=(",", ":"))
    except ValueError:  # NaN or an infinity somewhere: JSON has no such numbers
        text = json.dumps(_finite(payload), default=_default, allow_nan=False, separators=(",", ":"))
    return text.encode("utf-8")


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars, pandas Series
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    kind = type(value)
    raise EncodeError(f"the result contains a {kind.__module__}.{kind.__qualname__}, which cannot be encoded as JSON")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    return value
