"""Modelbit's request envelope, read against the endpoint's signature.

The rules, in order, for the value of ``data``:

1. A list whose first element is a list is a batch: each row is ``[id, args...]``
   and ``args`` are read as ``data`` is for one call (rules 2-5).
2. For a DataFrame endpoint (one parameter annotated ``pandas.DataFrame``), a list
   of records or a single record is the table.
3. An object whose keys are all parameter names is a keyword call, unless the
   function has one parameter whose type is itself an object (a dict, TypedDict,
   dataclass or pydantic model): then the object is that parameter's value.
4. A list, for a function with two or more positional parameters whose first
   parameter is not itself a list (an array type), is positional.
5. Anything else is the value of the first parameter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest, BindingError
from .schema import Signature


@dataclass(frozen=True)
class Batch:
    """Rows of a batch: ids as given, and each row's arguments (a dict by name, or a BindingError)."""

    ids: list[Any]
    rows: list[dict[str, Any] | BindingError]


def read_data(payload: Any) -> Any:
    """The value of ``data`` in a request body's JSON value."""
    if not isinstance(payload, dict) or "data" not in payload:
        raise BadRequest('the request body must be a JSON object with a "data" field, e.g. {"data": 3}')
    return payload["data"]


def is_batch(data: Any) -> bool:
    return isinstance(data, list) and bool(data) and isinstance(data[0], list)


def read_batch(data: list[Any], signature: Signature) -> Batch:
    only = signature.parameters[0].name if len(signature.parameters) == 1 else None
    if only is not None and all(type(row) is list and len(row) == 2 and type(row[1]) is not dict for row in data):
        # One parameter and rows [id, value] whose value is not an object: bind's answer is {name: value}.
        return Batch([row[0] for row in data], [{only: row[1]} for row in data])
    ids: list[Any] = []
    rows: list[dict[str, Any] | BindingError] = []
    for index, row in enumerate(data):
        if type(row) is not list or not row:
            raise BadRequest(
                f"data[{index}] must be a list [id, arg, ...]: in a batch every row starts with its id "
                f"(got {json.dumps(row)[:80]})"
            )
        ids.append(row[0])
        try:
            rows.append(bind(row[1] if len(row) == 2 else row[1:], signature, spread=len(row) > 2))
        except BindingError as exc:
            rows.append(exc)
    return Batch(ids, rows)


def bind(data: Any, signature: Signature, spread: bool = False) -> dict[str, Any]:
    """The arguments, by parameter name, that ``data`` stands for (rules 2-5); ``spread``: a list of arguments."""
    parameters = signature.parameters
    if not parameters:
        return {}
    if signature.dataframe:
        return {parameters[0].name: data}
    if type(data) is dict and data and not signature.takes_one_object and signature.names.issuperset(data):
        return _checked(data, signature)
    if type(data) is list and (spread or signature.spreads_lists):
        positional = signature.positional
        if len(data) > len(positional):
            raise BindingError(
                f"{len(data)} values given, and the function takes at most {len(positional)} by position"
            )
        return _checked({p.name: value for p, value in zip(positional, data, strict=False)}, signature)
    return _checked({parameters[0].name: data}, signature)


def _checked(arguments: dict[str, Any], signature: Signature) -> dict[str, Any]:
    for name in signature.required:
        if name not in arguments:
            raise BindingError(f"parameter {name!r} is required and was not given", name)
    return arguments


# The rules above as JSON Schema, for /openapi.json: a value is valid exactly when the rules bind it.
BATCH_SHAPED = {"type": "array", "minItems": 1, "prefixItems": [{"type": "array"}]}  # rule 1 applies
BATCH = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "array", "minItems": 1},
    "description": "a batch: each row is [id, args...]; answered as [[id, result], ...] in request order",
}


def data_schema(signature: Signature) -> dict[str, Any]:
    """The JSON Schema of the ``data`` values these rules accept for ``signature`` (a batch's rows may still fail)."""
    parameters = signature.parameters
    if not parameters:  # any value but a malformed batch: the function takes no argument
        return {"anyOf": [{"not": BATCH_SHAPED}, BATCH]}
    forms: list[dict[str, Any]] = []
    taken_elsewhere: list[dict[str, Any]] = [BATCH_SHAPED]  # values that rules 1-4 read, so rule 5 never sees
    if not signature.dataframe and not signature.takes_one_object:
        forms.append(_keywords(signature))
        taken_elsewhere.append(
            {"type": "object", "minProperties": 1, "propertyNames": {"enum": sorted(signature.names)}}
        )
    if signature.spreads_lists and not signature.dataframe:
        by_position = _positional(signature)
        if by_position is not None:
            forms.append(by_position)
        taken_elsewhere.append({"type": "array"})
    if signature.dataframe or not any(p.required for p in parameters[1:]):
        first = parameters[0].schema
        forms.append(
            {"allOf": [first, {"not": {"anyOf": taken_elsewhere}}]} if first else {"not": {"anyOf": taken_elsewhere}}
        )
    return {"anyOf": [*forms, BATCH]}


def _keywords(signature: Signature) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {p.name: p.schema for p in signature.parameters},
        "required": list(signature.required),
        "additionalProperties": False,
        "minProperties": 1,
    }


def _positional(signature: Signature) -> dict[str, Any] | None:
    """Rule 4's list, or None if a required parameter can only be given by name."""
    positional = signature.positional
    if any(p.required and not p.positional for p in signature.parameters):
        return None
    required = sum(1 for p in positional if p.required)
    return {
        "type": "array",
        "prefixItems": [p.schema for p in positional],
        "minItems": required,
        "maxItems": len(positional),
    }
