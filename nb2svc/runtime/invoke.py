"""Calling an endpoint's function the way a request asks: validate, convert, call; a batch row by row.

Standard library only, with fastjsonschema for validation where it is installed
(the service's lock always installs it). The builder runs this module in the
training kernel too, to record ``--example`` answers exactly as the service computes them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .envelope import bind, is_batch, read_batch
from .errors import BindingError, CallFailed
from .schema import Signature, unchanged
from .turns import between_rows

_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}


@dataclass(frozen=True)
class BatchAnswer:
    data: list[list[Any]]  # [[id, result or None], ...] in request order
    errors: list[list[Any]]  # [[id, {"type", "message"}], ...]

    def body(self) -> dict[str, Any]:
        """The response body: ``errors`` only when a row failed."""
        return {"data": self.data, "errors": self.errors} if self.errors else {"data": self.data}


class Invoker:
    """Validates and converts arguments for ``function`` once per parameter, compiled at start-up."""

    def __init__(self, function: Callable[..., Any], signature: Signature) -> None:
        self.function = function
        self.signature = signature
        self._validators = {p.name: _validator(p.schema) for p in signature.parameters if set(p.schema) - {"default"}}
        # Nothing to validate or convert (an unannotated function): the bound values are the arguments.
        self._as_bound = not self._validators and all(p.convert is unchanged for p in signature.parameters)
        self._list_validator = self._validator_of_lists()

    def call(self, data: Any) -> Any:
        """The result for ``{"data": data}`` when it is not a batch; raises BindingError or CallFailed."""
        return self._call(self.arguments(bind(data, self.signature)))

    def call_named(self, bound: dict[str, Any]) -> Any:
        """The result for arguments already given by parameter name (the Open Inference Protocol's tensors)."""
        missing = [name for name in self.signature.required if name not in bound]
        if missing:
            raise BindingError(f"parameter {missing[0]!r} is required and was not given", missing[0])
        return self._call(self.arguments(bound))

    def call_batch(self, data: list[Any]) -> BatchAnswer:
        """``{"data": [[id, args...], ...]}``: a row that fails does not fail the others."""
        batch = read_batch(data, self.signature)
        if self.signature.dataframe or self.signature.batch is not None:
            return batch_answer(batch.ids, self.together(batch.rows))
        answers: list[list[Any]] = []
        errors: list[list[Any]] = []
        for row_id, row in zip(batch.ids, batch.rows, strict=True):
            between_rows()  # the calls waiting behind a long batch run between its rows
            try:
                if isinstance(row, BindingError):
                    raise row
                answers.append([row_id, self._call(self.arguments(row))])
            except (BindingError, CallFailed) as exc:
                answers.append([row_id, None])
                errors.append([row_id, exc.body()])
        return BatchAnswer(answers, errors)

    def together(self, inputs: list[dict[str, Any] | BindingError]) -> list[Any]:
        """One call of the function for all ``inputs`` (arguments by name, as ``bind`` reads them): each one's
        result, or the BindingError or CallFailed of an input that failed.

        For a batchable function (or a DataFrame endpoint, the inputs being the table's records), each input is
        validated on its own; when the call raises, the inputs are split in halves and each half called again,
        until the inputs at fault are found (each alone), so that one bad input fails only itself.
        """
        outcomes: list[Any] = [None] * len(inputs)
        values = self._all_valid(inputs)
        if values is not None:  # the common case, checked in one pass
            self._call_together(list(enumerate(values)), outcomes)
            return outcomes
        valid: list[tuple[int, Any]] = []
        for index, row in enumerate(inputs):
            try:
                valid.append((index, self._input(row)))
            except BindingError as exc:
                outcomes[index] = exc
        self._call_together(valid, outcomes)
        return outcomes

    def arguments(self, bound: dict[str, Any]) -> dict[str, Any]:
        """Validated and converted keyword arguments; raises BindingError naming the parameter."""
        if self._as_bound:
            return bound
        converted = {}
        for parameter in self.signature.parameters:
            if parameter.name not in bound:
                continue
            value = bound[parameter.name]
            if parameter.name in self._validators:
                self._validators[parameter.name](parameter.name, value)
            try:
                converted[parameter.name] = parameter.convert(value)
            except Exception as exc:
                raise BindingError(
                    f"parameter {parameter.name!r}: {type(exc).__name__}: {exc}", parameter.name
                ) from exc
        return converted

    def _call(self, arguments: dict[str, Any]) -> Any:
        try:
            return self.function(**arguments)
        except Exception as exc:
            raise CallFailed(exc) from exc

    def _validator_of_lists(self) -> Callable[[str, Any], None] | None:
        """What validates a whole list of inputs at once (a DataFrame's table schema already takes a list)."""
        if len(self.signature.parameters) != 1:
            return None
        parameter = self.signature.parameters[0]
        if self.signature.dataframe:
            return self._validators.get(parameter.name)
        if self.signature.batch is None or not set(parameter.schema) - {"default"}:
            return None
        return _validator({"type": "array", "items": parameter.schema})

    def _all_valid(self, inputs: list[dict[str, Any] | BindingError]) -> list[Any] | None:
        """Every input's value (converted; a DataFrame's records as they are) if all of them are valid, checked
        in one pass; None if any is not (the inputs are then checked one by one, to say which)."""
        name = self.signature.parameters[0].name
        values = []
        for row in inputs:
            if type(row) is not dict:
                return None
            values.append(row[name])
        if self._list_validator is not None:
            try:
                self._list_validator(name, values)
            except BindingError:
                return None
        if self.signature.dataframe:
            return values if all(type(value) is dict for value in values) else None
        convert = self.signature.parameters[0].convert
        if convert is unchanged:
            return values
        try:
            return [convert(value) for value in values]
        except Exception:
            return None

    def _input(self, row: dict[str, Any] | BindingError) -> Any:
        """One input of a call together: a DataFrame's record, validated; else the value, validated and converted."""
        if isinstance(row, BindingError):
            raise row
        name = self.signature.parameters[0].name
        if not self.signature.dataframe:
            return self.arguments(row)[name]
        record = row[name]
        if not isinstance(record, dict):
            raise BindingError(
                f"a row of a batch for a DataFrame endpoint is [id, record]; got {json.dumps(record)[:80]}", name
            )
        if name in self._validators:
            self._validators[name](name, record)
        return record

    def _call_together(self, valid: list[tuple[int, Any]], outcomes: list[Any]) -> None:
        """Fill ``outcomes`` for ``valid`` ((index, input) pairs): one call, split in halves while it raises."""
        if not valid:
            return
        values = [value for _, value in valid]
        name = self.signature.parameters[0].name
        try:
            if self.signature.dataframe:  # the records become one table, by the parameter's converter
                argument = self.arguments({name: values})
            else:  # a batchable function's inputs, each converted already, become its argument
                assert self.signature.batch is not None
                argument = {name: self.signature.batch(values)}
            returned = self._call(argument)
        except (BindingError, CallFailed) as exc:
            if len(valid) == 1:
                outcomes[valid[0][0]] = exc
                return
            half = len(valid) // 2
            self._call_together(valid[:half], outcomes)
            self._call_together(valid[half:], outcomes)
            return
        try:
            results = per_row(returned, len(valid))
        except CallFailed as exc:  # not one result per input: every input of this call failed
            results = [exc] * len(valid)
        for (index, _), result in zip(valid, results, strict=True):
            outcomes[index] = result


def per_row(results: Any, expected: int) -> list[Any]:
    """The results of one call for ``expected`` inputs (or a table's rows), one per input; CallFailed if they
    are not that."""
    if hasattr(results, "to_dict") and hasattr(results, "columns"):  # a DataFrame: its records
        results = results.to_dict(orient="records")
    elif hasattr(results, "tolist"):  # a Series or an array
        results = results.tolist()
    if not isinstance(results, (list, tuple)):
        kind = type(results).__name__
        raise CallFailed(
            TypeError(f"called with {expected} inputs, the function must return one result per input, not a {kind}")
        )
    if len(results) != expected:
        raise CallFailed(ValueError(f"called with {expected} inputs, the function returned {len(results)} results"))
    return list(results)


def batch_answer(ids: list[Any], outcomes: list[Any]) -> BatchAnswer:
    """A batch request's answer from each row's outcome (a result, or the error of a row that failed)."""
    if not any(isinstance(outcome, _FAILURES) for outcome in outcomes):
        return BatchAnswer([[row_id, outcome] for row_id, outcome in zip(ids, outcomes, strict=True)], [])
    answers: list[list[Any]] = []
    errors: list[list[Any]] = []
    for row_id, outcome in zip(ids, outcomes, strict=True):
        if isinstance(outcome, _FAILURES):
            answers.append([row_id, None])
            errors.append([row_id, outcome.body()])
        else:
            answers.append([row_id, outcome])
    return BatchAnswer(answers, errors)


_FAILURES = (BindingError, CallFailed)


def _failed(outcome: Any) -> bool:
    return isinstance(outcome, _FAILURES)


@dataclass(frozen=True)
class Inputs:
    """A request to a batchable endpoint as the inputs it carries (each one's arguments by name, or why it could
    not be read), and how its answer is made from their outcomes (``Invoker.together``'s)."""

    rows: list[dict[str, Any] | BindingError]
    answer: Callable[[list[Any]], dict[str, Any]]


def inputs_of(invoker: Invoker, data: Any) -> Inputs:
    """The inputs that ``{"data": data}`` carries to a batchable endpoint: a batch's rows; a DataFrame endpoint's
    records (a list of them, or one); else one input."""
    signature = invoker.signature
    if is_batch(data):
        batch = read_batch(data, signature)
        return Inputs(batch.rows, functools.partial(_batch_body, batch.ids))
    if signature.dataframe:
        name = signature.parameters[0].name
        return Inputs([{name: record} for record in (data if isinstance(data, list) else [data])], _table_body)
    try:
        row: dict[str, Any] | BindingError = bind(data, signature)
    except BindingError as exc:
        row = exc
    return Inputs([row], _one_body)


def answer(invoker: Invoker, data: Any) -> dict[str, Any]:
    """The response body for ``{"data": data}``, batch or not; raises BindingError or CallFailed for one call."""
    if invoker.signature.batch is not None:
        inputs = inputs_of(invoker, data)
        return inputs.answer(invoker.together(inputs.rows))
    if is_batch(data):
        return invoker.call_batch(data).body()
    return {"data": invoker.call(data)}


def _batch_body(ids: list[Any], outcomes: list[Any]) -> dict[str, Any]:
    return batch_answer(ids, outcomes).body()


def _table_body(outcomes: list[Any]) -> dict[str, Any]:
    return {"data": every_result(outcomes)}


def every_result(outcomes: list[Any]) -> list[Any]:
    """The results, when no input failed; else the first failure is raised (a request that is one table)."""
    failed = next((outcome for outcome in outcomes if _failed(outcome)), None)
    if failed is not None:
        raise failed
    return outcomes


def _one_body(outcomes: list[Any]) -> dict[str, Any]:
    [outcome] = outcomes
    if _failed(outcome):
        raise outcome
    return {"data": outcome}


def _validator(schema: dict[str, Any]) -> Callable[[str, Any], None]:
    try:
        import fastjsonschema
    except ImportError:  # only in a training kernel without it: --example values are not validated there
        return lambda name, value: None
    check = fastjsonschema.compile(draft7(schema))

    def validate(name: str, value: Any) -> None:
        try:
            check(value)
        except fastjsonschema.JsonSchemaValueException as exc:
            where = name + (exc.name[4:] if exc.name and exc.name.startswith("data") else "")
            received = f"{json.dumps(exc.value)[:80]} ({_JSON_TYPES.get(type(exc.value), 'null')})"
            rule = exc.message.split(" must ", 1)[-1]
            raise BindingError(f"parameter {where!r} must {rule}; received {received}", name) from None

    return validate


def draft7(schema: Any) -> Any:
    """The 2020-12 schema (as OpenAPI 3.1 wants) in the draft-07 form fastjsonschema validates."""
    if isinstance(schema, list):
        return [draft7(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: draft7(value) for key, value in schema.items() if key not in ("prefixItems", "$defs")}
    if "prefixItems" in schema:
        converted["items"] = draft7(schema["prefixItems"])
    if "$defs" in schema:
        converted["definitions"] = draft7(schema["$defs"])
    return converted if "$defs" not in schema else _refs_to_definitions(converted)


def _refs_to_definitions(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: value.replace("#/$defs/", "#/definitions/") if key == "$ref" else _refs_to_definitions(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_refs_to_definitions(item) for item in schema]
    return schema
