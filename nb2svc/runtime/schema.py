"""JSON Schemas from an endpoint's type hints, and how each parameter's JSON value becomes its Python value.

Standard library only: numpy, pandas and pydantic types are recognised by name,
never imported here. The builder runs this module in the training kernel too,
so the manifest's schemas and the service's are made by the same code.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from .manifest import BatchDescription, ParameterDescription

ANY: dict[str, Any] = {}  # an unannotated parameter accepts any JSON value
# Set by ``nb2svc.batch`` on the function itself, so that cloudpickle keeps it with the function.
BATCH_ATTRIBUTE = "__nb2svc_batch__"


@dataclasses.dataclass(frozen=True)
class Parameter:
    name: str
    schema: dict[str, Any]
    required: bool
    default: Any
    positional: bool  # can be given by position
    convert: Callable[[Any], Any]  # JSON value -> what the function expects


@dataclasses.dataclass(frozen=True)
class Signature:
    parameters: tuple[Parameter, ...]
    returns: dict[str, Any]
    dataframe: bool  # one parameter, a pandas DataFrame: a batch is one call
    # A batchable function: its one parameter describes ONE input, and this makes the function's argument
    # from a list of inputs (validated and converted each); None: the function takes one input per call.
    batch: Callable[[list[Any]], Any] | None = None

    # Worked out once, not per request:
    @functools.cached_property
    def names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.parameters)

    @functools.cached_property
    def positional(self) -> tuple[Parameter, ...]:
        return tuple(p for p in self.parameters if p.positional)

    @functools.cached_property
    def spreads_lists(self) -> bool:
        """Is a list of values read as positional arguments? (two or more, the first not itself a list)"""
        return len(self.positional) >= 2 and self.positional[0].schema.get("type") != "array"

    @functools.cached_property
    def takes_one_object(self) -> bool:
        """One parameter whose value is itself an object (dict, TypedDict, dataclass, pydantic model)."""
        if len(self.parameters) != 1:
            return False
        schema = self.parameters[0].schema
        return schema.get("type") == "object" or "properties" in schema

    @functools.cached_property
    def required(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters if p.required)


def read_signature(function: Callable[..., Any]) -> Signature:
    """The parameters of ``function`` with their schemas and converters, and the schema of its result."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return Signature((), ANY, False)
    hints = _hints(function)
    parameters = tuple(
        _parameter(p, hints.get(p.name, inspect.Parameter.empty))
        for p in signature.parameters.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    )
    dataframe = len(parameters) == 1 and _is_dataframe(hints.get(parameters[0].name))
    returns = schema_for(hints["return"]) if "return" in hints else ANY
    if batch_of(function) is not None and batch_problem(function) is None:
        return _batch_signature(parameters[0], hints, dataframe)
    return Signature(parameters, returns, dataframe)


def batch_of(function: Callable[..., Any]) -> BatchDescription | None:
    """The batching ``nb2svc.batch`` asked for on ``function``, or None; ValueError if the attribute is not one
    that ``nb2svc.batch`` writes."""
    options = getattr(function, BATCH_ATTRIBUTE, None)
    if options is None:
        return None
    if not isinstance(options, dict) or set(options) - {"max_batch_size", "max_wait_ms"}:
        raise ValueError(f"{BATCH_ATTRIBUTE} must be a dict of max_batch_size and max_wait_ms, not {options!r}")
    described = BatchDescription(**options)
    size, wait = described.max_batch_size, described.max_wait_ms
    if type(size) is not int or size < 1:
        raise ValueError(f"max_batch_size must be an integer of 1 or more, not {size!r}")
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait < float("inf"):
        raise ValueError(f"max_wait_ms must be a number of milliseconds, 0 or more, not {wait!r}")
    return BatchDescription(size, float(wait))


def batch_problem(function: Callable[..., Any]) -> str | None:
    """Why ``function``, marked batchable, cannot take a batch; None if it can (or is not marked)."""
    if getattr(function, BATCH_ATTRIBUTE, None) is None:
        return None
    try:
        batch_of(function)
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        return str(exc)
    parameters = list(signature.parameters.values())
    if len(parameters) != 1 or parameters[0].kind not in (
        parameters[0].POSITIONAL_ONLY,
        parameters[0].POSITIONAL_OR_KEYWORD,
    ):
        return (
            "a batchable function takes one parameter, the list of inputs (or a DataFrame, one row per input), "
            f"and returns one result per input: def f(inputs: list[...]) -> list[...]; this one is {signature}"
        )
    return None


def _batch_signature(parameter: Parameter, hints: dict[str, Any], dataframe: bool) -> Signature:
    """A batchable function's signature: its parameter stands for ONE input, its result for one input's result."""
    annotation = hints.get(parameter.name, inspect.Parameter.empty)
    returned = _element(hints["return"]) if "return" in hints else Any
    if dataframe:  # an input is a record; the parameter's converter makes the inputs' records one table
        table = dataclasses.replace(parameter, required=True, default=inspect.Parameter.empty)
        return Signature((table,), schema_for(returned), True, batch=list)
    item = _element(annotation)
    one = Parameter(parameter.name, schema_for(item), True, inspect.Parameter.empty, True, _converter(item))
    together: Callable[[list[Any]], Any] = list
    if _named(annotation, "numpy", "ndarray"):
        together = sys.modules["numpy"].asarray  # loaded already: the annotation refers to it
    return Signature((one,), schema_for(returned), False, batch=together)


def _element(annotation: Any) -> Any:
    """What one item of ``annotation`` is: ``T`` of ``list[T]``, ``Sequence[T]``, ``tuple[T, ...]``; else Any."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    if origin is not None and origin is not tuple and len(args) == 1:
        return args[0]
    return Any


@dataclasses.dataclass(frozen=True)
class FunctionDescription:
    """What the manifest says of a function itself (the rest of an endpoint's description is about its artifact)."""

    signature: str  # as Python prints it: "(a: int, b: float = 0.5) -> float"
    doc: str | None
    is_async: bool
    parameters: tuple[ParameterDescription, ...]
    returns: dict[str, Any]
    dataframe: bool
    batch: BatchDescription | None


def describe(function: Callable[..., Any]) -> FunctionDescription:
    """``function`` as the manifest describes it: read_signature's parameters and schemas, each parameter with
    its kind and its annotation as written."""
    signature = read_signature(function)
    parameters: tuple[ParameterDescription, ...] = ()
    try:
        written = inspect.signature(function)
    except (TypeError, ValueError):
        text = "(*args, **kwargs)"
    else:
        text = str(written)
        parameters = tuple(_described(p, written.parameters[p.name]) for p in signature.parameters)
    return FunctionDescription(
        signature=text,
        doc=inspect.getdoc(function),
        is_async=inspect.iscoroutinefunction(function),
        parameters=parameters,
        returns=signature.returns,
        dataframe=signature.dataframe,
        batch=batch_of(function),
    )


def _described(parameter: Parameter, written: inspect.Parameter) -> ParameterDescription:
    annotation = written.annotation
    return ParameterDescription(
        name=parameter.name,
        kind=written.kind.name.lower(),
        schema=parameter.schema,
        required=parameter.required,
        annotation=None if annotation is inspect.Parameter.empty else _annotation_text(annotation),
        default=None if parameter.required or not _jsonable(parameter.default) else parameter.default,
    )


def _annotation_text(annotation: Any) -> str:
    """As written in the notebook: a string annotation as it is, a type as Python would write it."""
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function, include_extras=False)
    except Exception:  # unresolvable string annotations: treat them as unannotated
        return {}


def _parameter(parameter: inspect.Parameter, annotation: Any) -> Parameter:
    schema = ANY if annotation is inspect.Parameter.empty else schema_for(annotation)
    required = parameter.default is inspect.Parameter.empty
    if not required and _jsonable(parameter.default):
        schema = {**schema, "default": parameter.default}
    return Parameter(
        name=parameter.name,
        schema=schema,
        required=required,
        default=parameter.default,
        positional=parameter.kind != inspect.Parameter.KEYWORD_ONLY,
        convert=_converter(annotation),
    )


def schema_for(annotation: Any) -> dict[str, Any]:
    """The JSON Schema of the JSON values that stand for ``annotation``."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return ANY
    if annotation is None or annotation is type(None):
        return {"type": "null"}
    simple = _SIMPLE.get(annotation)
    if simple is not None:
        return dict(simple)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return {"anyOf": [schema_for(arg) for arg in args]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, set, frozenset) or annotation in (list, set, frozenset):
        return {"type": "array", "items": schema_for(args[0])} if args else {"type": "array"}
    if origin is tuple or annotation is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": schema_for(args[0])}
        if args:
            items = [schema_for(arg) for arg in args]
            return {"type": "array", "prefixItems": items, "minItems": len(items), "maxItems": len(items)}
        return {"type": "array"}
    if origin is dict or annotation is dict:
        return {"type": "object", "additionalProperties": schema_for(args[1])} if args else {"type": "object"}
    if typing.is_typeddict(annotation):
        fields = typing.get_type_hints(annotation)
        return {
            "type": "object",
            "title": annotation.__name__,
            "properties": {name: schema_for(hint) for name, hint in fields.items()},
            "required": sorted(getattr(annotation, "__required_keys__", fields)),
        }
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        fields = typing.get_type_hints(annotation)
        return {
            "type": "object",
            "title": annotation.__name__,
            "properties": {f.name: schema_for(fields.get(f.name, Any)) for f in dataclasses.fields(annotation)},
            "required": [
                f.name for f in dataclasses.fields(annotation) if _missing(f.default) and _missing(f.default_factory)
            ],
            "additionalProperties": False,  # its constructor refuses other keys
        }
    if hasattr(annotation, "model_json_schema"):  # a pydantic model
        return dict(annotation.model_json_schema())
    if _is_dataframe(annotation):
        return {
            "type": ["array", "object"],
            "items": {"type": "object"},
            "description": "a table: one object per row (records), or one record for a one-row table",
        }
    if _named(annotation, "numpy", "ndarray"):
        return {"type": "array", "description": "a numpy array, as nested lists"}
    return ANY


_SIMPLE: dict[Any, dict[str, Any]] = {
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    bool: {"type": "boolean"},
    bytes: {"type": "string", "contentEncoding": "base64"},
    decimal.Decimal: {"type": ["number", "string"]},
    datetime.datetime: {"type": "string", "format": "date-time"},
    datetime.date: {"type": "string", "format": "date"},
}


def _missing(value: Any) -> bool:
    # Not ``is dataclasses.MISSING``: a dataclass pickled by value comes back with a copy of that sentinel.
    return isinstance(value, type(dataclasses.MISSING))


def _converter(annotation: Any) -> Callable[[Any], Any]:
    """From a JSON value that passed validation to what ``annotation`` asks for."""
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return lambda value: annotation(**value)
    if hasattr(annotation, "model_validate"):  # a pydantic model
        model_validate: Callable[[Any], Any] = annotation.model_validate
        return model_validate
    if _named(annotation, "numpy", "ndarray"):
        asarray: Callable[[Any], Any] = sys.modules["numpy"].asarray  # loaded already: the annotation refers to it
        return asarray
    if _is_dataframe(annotation):
        return lambda value: _frame(annotation, value)
    origin = typing.get_origin(annotation) or annotation
    if origin is tuple:
        return tuple
    if origin in (set, frozenset):
        collection: type[set[Any]] | type[frozenset[Any]] = origin
        return collection
    if annotation is float:
        return _float_exactly
    if annotation is int:  # JSON Schema counts 1.0 as an integer
        return lambda value: int(value) if isinstance(value, float) else value
    simple = _FROM_JSON.get(annotation)
    return simple if simple is not None else unchanged


_FROM_JSON: dict[Any, Callable[[Any], Any]] = {
    bytes: base64.b64decode,
    decimal.Decimal: lambda value: decimal.Decimal(str(value)),
    datetime.datetime: datetime.datetime.fromisoformat,
    datetime.date: datetime.date.fromisoformat,
}


def _float_exactly(value: Any) -> Any:
    """An integer as the float of the same value; one that no float holds exactly is refused, never rounded."""
    if type(value) is float:
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        return value
    try:
        converted = float(value)
    except OverflowError:
        raise ValueError(f"an integer of {value.bit_length()} bits is beyond a float's range") from None
    if converted != value:
        raise ValueError(
            f"{value} has no exact float value (floats hold every integer only up to 2**53): refused, not rounded"
        )
    return converted


def unchanged(value: Any) -> Any:
    return value


def _frame(frame_type: Any, records: Any) -> Any:
    return frame_type([records] if isinstance(records, dict) else records)  # from_records drops a row of {}


def _is_dataframe(annotation: Any) -> bool:
    return _named(annotation, "pandas", "DataFrame")


def _named(annotation: Any, package: str, name: str) -> bool:
    return (
        isinstance(annotation, type) and annotation.__name__ == name and annotation.__module__.split(".")[0] == package
    )


def _jsonable(value: Any) -> bool:
    return (
        value is None or isinstance(value, (str, int, float, bool)) or (isinstance(value, (list, dict)) and not value)
    )
