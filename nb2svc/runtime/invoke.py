"""Calling an endpoint's function the way a request asks: validate, convert, call; a batch row by row.

Standard library only, with fastjsonschema for validation where it is installed
(the service's lock always installs it). The builder runs this module in the
training kernel too, to record ``--example`` answers exactly as the service computes them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .envelope import Batch, bind, is_batch, read_batch
from .errors import BindingError, CallFailed
from .schema import Signature, unchanged

_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}


@dataclass(frozen=True)
class BatchAnswer:
    data: list[list[Any]]  # [[id, result or None], ...] in request order
    errors: list[list[Any]]  # [[id, {"type", "message"}], ...]


class Invoker:
    """Validates and converts arguments for ``function`` once per parameter, compiled at start-up."""

    def __init__(self, function: Callable[..., Any], signature: Signature) -> None:
        self.function = function
        self.signature = signature
        self._validators = {p.name: _validator(p.schema) for p in signature.parameters if set(p.schema) - {"default"}}
        # Nothing to validate or convert (an unannotated function): the bound values are the arguments.
        self._as_bound = not self._validators and all(p.convert is unchanged for p in signature.parameters)

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
        if self.signature.dataframe:
            return self._dataframe_batch(batch)
        answers: list[list[Any]] = []
        errors: list[list[Any]] = []
        for row_id, row in zip(batch.ids, batch.rows, strict=True):
            try:
                if isinstance(row, BindingError):
                    raise row
                answers.append([row_id, self._call(self.arguments(row))])
            except (BindingError, CallFailed) as exc:
                answers.append([row_id, None])
                errors.append([row_id, exc.body()])
        return BatchAnswer(answers, errors)

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

    def _dataframe_batch(self, batch: Batch) -> BatchAnswer:
        """One call for the whole batch, the rows' records one table; a row that fails does not fail the others.

        Each row's record is validated on its own; when the call for the table raises, the table is split
        in halves and each half called again, until the rows at fault are found (each alone).
        """
        name = self.signature.parameters[0].name
        failed: dict[int, BindingError | CallFailed] = {}
        valid: list[tuple[int, Any]] = []
        for index, row in enumerate(batch.rows):
            try:
                valid.append((index, self._record(name, row)))
            except BindingError as exc:
                failed[index] = exc
        results = dict(self._table_results(name, valid, failed))
        answers = [[row_id, results.get(index)] for index, row_id in enumerate(batch.ids)]
        errors = [[batch.ids[index], failed[index].body()] for index in sorted(failed)]
        return BatchAnswer(answers, errors)

    def _record(self, name: str, row: dict[str, Any] | BindingError) -> Any:
        if isinstance(row, BindingError):
            raise row
        record = row[name]
        if not isinstance(record, dict):
            raise BindingError(
                f"a row of a batch for a DataFrame endpoint is [id, record]; got {json.dumps(record)[:80]}", name
            )
        if name in self._validators:
            self._validators[name](name, record)
        return record

    def _table_results(
        self, name: str, rows: list[tuple[int, Any]], failed: dict[int, BindingError | CallFailed]
    ) -> list[tuple[int, Any]]:
        """``(row index, result)`` for the rows whose table answers; the others go into ``failed``."""
        if not rows:
            return []
        try:
            outcome = self._call(self.arguments({name: [record for _, record in rows]}))
        except (BindingError, CallFailed) as exc:
            if len(rows) == 1:
                failed[rows[0][0]] = exc
                return []
            half = len(rows) // 2
            return self._table_results(name, rows[:half], failed) + self._table_results(name, rows[half:], failed)
        results = per_row(outcome)
        if len(results) != len(rows):
            raise CallFailed(ValueError(f"a table of {len(rows)} rows gave {len(results)} results"))
        return [(index, result) for (index, _), result in zip(rows, results, strict=True)]


def per_row(results: Any) -> list[Any]:
    """A DataFrame endpoint's results for a whole table, one per row; CallFailed if they are not that."""
    if hasattr(results, "to_dict") and hasattr(results, "columns"):  # a DataFrame: its records
        return list(results.to_dict(orient="records"))
    if hasattr(results, "tolist"):  # a Series or an array
        results = results.tolist()
    if not isinstance(results, (list, tuple)):
        kind = type(results).__name__
        raise CallFailed(
            TypeError(f"a DataFrame endpoint answering a batch must return one result per row, not a {kind}")
        )
    return list(results)


def answer(invoker: Invoker, data: Any) -> dict[str, Any]:
    """The response body for ``{"data": data}``, batch or not; raises BindingError or CallFailed for one call."""
    if is_batch(data):
        result = invoker.call_batch(data)
        return {"data": result.data, "errors": result.errors} if result.errors else {"data": result.data}
    return {"data": invoker.call(data)}


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
