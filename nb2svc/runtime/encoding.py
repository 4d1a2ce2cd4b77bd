"""Results to JSON.

numpy scalars and arrays become numbers and lists, pandas Series lists and
DataFrames records, NaN and infinities null, datetimes and dates ISO 8601
strings, bytes base64, Decimal exact strings, sets sorted lists, dataclasses
and pydantic models objects, enum members their values, UUIDs strings. Anything
else is Unencodable, naming the type.

orjson writes it where it is installed (every service's lock has it); the standard
library's json writes what orjson will not (integers beyond 64 bits, keys that are
not strings, lone surrogates, nesting past 254 levels) and everything where orjson
is missing (the training kernel may not have it). Both give the same values:
``plain`` decides every type that is not JSON's own, for both. Numbers are written
in their shortest form (orjson's ``1e-7`` is the standard library's ``1e-07``),
strings in UTF-8 (the standard library escapes what is not ASCII).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import json
import math
import uuid
from typing import Any

from .errors import Unencodable

try:
    import orjson
except ImportError:  # the standard library's json, for everything
    orjson = None  # type: ignore[assignment]

# plain, not orjson, decides dates and dataclasses (as for the standard library); numpy goes to plain too,
# without OPT_SERIALIZE_NUMPY: its float32 would not be written as tolist() gives it.
_ORJSON_OPTIONS = 0 if orjson is None else orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def encode_json(payload: Any) -> bytes:
    """``payload`` as compact UTF-8 JSON."""
    if orjson is not None:
        try:
            return orjson.dumps(payload, default=plain, option=_ORJSON_OPTIONS)
        except orjson.JSONEncodeError:  # what orjson will not write: the standard library writes it, or says why not
            pass
    return _encode_with_json(payload)


def _encode_with_json(payload: Any) -> bytes:
    """The standard library's encoding, one ``json.dumps`` when there is no NaN or infinity."""
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
    """A JSON-ready stand-in for ``value``, one level deep (the encoder recurses into it)."""
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
    if isinstance(value, enum.Enum):  # as orjson writes them
        return value.value
    if isinstance(value, uuid.UUID):  # as orjson writes them: 8-4-4-4-12 hexadecimal digits
        return str(value)
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
