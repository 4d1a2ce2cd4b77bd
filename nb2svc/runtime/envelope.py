"""Modelbit's request envelope: ``{"data": x}`` is one call, ``{"data": [[id, arg, ...], ...]}`` a batch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class RequestError(Exception):
    """The request cannot be read as a call; answered with HTTP 400."""


@dataclass(frozen=True)
class Call:
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """Rows ``[id, arg, ...]`` of a batch request; ids are echoed back exactly as given."""

    rows: list[list[Any]]


def parse_request(body: bytes, parameter_names: frozenset[str]) -> Call | Batch:
    """Read a request body as one call or as a batch of calls.

    ``{"data": {...}}`` whose keys are all parameter names of the function is a
    call with keyword arguments; any other value of ``data`` is the single argument.
    """
    data = _data(body)
    if isinstance(data, list) and data and isinstance(data[0], list):
        return _batch(data)
    if isinstance(data, dict) and data and parameter_names.issuperset(data):
        return Call(kwargs=data)
    return Call(args=(data,))


def _data(body: bytes) -> Any:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f'the request body is not valid JSON ({exc}); send {{"data": ...}}') from None
    if not isinstance(payload, dict) or "data" not in payload:
        raise RequestError('the request body must be a JSON object with a "data" field, e.g. {"data": 3}')
    return payload["data"]


def _batch(rows: list[Any]) -> Batch:
    for index, row in enumerate(rows):
        if not isinstance(row, list) or not row:
            raise RequestError(
                f"data[{index}] must be a list [id, arg, ...]: in a batch every row starts with its id "
                f"(got {json.dumps(row)[:80]})"
            )
    return Batch(rows=rows)
