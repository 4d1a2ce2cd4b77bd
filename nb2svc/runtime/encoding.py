"""Results to JSON.

numpy scalars and arrays become numbers and lists, pandas Series lists and
DataFrames records, NaN and infinities null, datetimes and dates ISO 8601
strings, bytes base64, Decimal exact strings, sets sorted lists, dataclasses
and pydantic models objects. Anything else is Unencodable, naming the type.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import json
import math
from typing import Any

from .errors import Unencodable


def encode_json(payload: Any) -> bytes:
    """``payload`` as compact UTF-8 JSON; the fast path costs one ``json.dumps``."""
    try:
        try:
            text = json.dumps(payload, default=plain, allow_nan=False, separators=(",", ":"))
        except ValueError:  # NaN or an infinity somewhere: JSON has no such numbers
            text = json.dumps(_finite(payload), default=plain, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:  # a dict whose keys are tuples; an int of more digits than str() gives
        raise Unencodable(f"the result cannot be encoded as JSON: {exc}") from None
    except RecursionError:
        raise Unencodable("the result is nested too deeply to be encoded as JSON") from None
    return text.encode("utf-8")


def plain(value: Any) -> Any:
    """A JSON-ready stand-in for ``value``, one level deep (``json.dumps`` recurses into it)."""
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # a pandas DataFrame
        return value.to_dict(orient="records")
    if hasattr(value, "tolist"):  # numpy arrays and scalars, pandas Series
        return value.tolist()
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:  # mixed types: a stable order all the same
            return sorted(value, key=repr)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "model_dump"):  # a pydantic model
        return value.model_dump(mode="json")
    if hasattr(value, "isoformat"):  # pandas Timestamp, numpy datetime64 handled by tolist above
        return value.isoformat()
    kind = type(value)
    raise Unencodable(f"the result contains a {kind.__module__}.{kind.__qualname__}, which cannot be encoded as JSON")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return _finite(plain(value))
