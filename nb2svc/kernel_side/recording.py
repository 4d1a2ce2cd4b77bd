"""After each ``predict`` cell: the calls later cells make of the endpoints are recorded as examples.

Each endpoint is wrapped in a recorder; ``take_off`` puts the function itself back before capture
serializes it. A call is recorded when its arguments, encoded as JSON as a client would send them
(numpy values, tables, dates... as the service's own encoding writes them), are read back by the
service's own decoding as the same arguments; its answer is encoded as the service would. A call
that cannot be is counted, with the reason, for the build to report.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .failures import type_name as _type_name
from .runtime import runtime_module

MAX_EXAMPLES = 10  # per endpoint: the first distinct calls the notebook makes
MAX_TRIED = 100  # calls looked at, at most, per endpoint (a notebook may call it in a loop)
MAX_REASONS = 5  # distinct reasons kept for calls that could not be recorded
_RECORDER = "_nb2svc_recorder"  # the attribute of a wrapper that holds its recorder


@dataclass
class Recording:
    """What a recorder saw (nb2svc_runtime.manifest's ``Example`` and ``RecordedFrame``)."""

    examples: list[Any] = field(default_factory=list)
    frame: Any = None  # the columns and dtypes of the DataFrames the notebook passed
    seen: int = 0  # calls the notebook made
    unrecorded: list[str] = field(default_factory=list)  # why calls could not be recorded, each reason once


def record_calls(names: list[str], service_dir: str) -> None:
    """Wrap the endpoints ``names`` so that the calls later cells make are recorded."""
    from IPython import get_ipython

    namespace = get_ipython().user_ns
    for name in names:
        function = namespace.get(name)
        if not callable(function) or inspect.iscoroutinefunction(function) or hasattr(function, _RECORDER):
            continue
        try:
            parameters = inspect.signature(function)
        except (TypeError, ValueError):  # no signature to read its calls against
            continue
        namespace[name] = _Recorder(function, parameters, service_dir).wrapper()


def take_off(namespace: dict[str, Any], name: str) -> Recording:
    """Put the endpoint ``name`` itself back in place of its recorder; what the recorder saw."""
    recorder: _Recorder | None = getattr(namespace.get(name), _RECORDER, None)
    if recorder is None:
        return Recording()
    namespace[name] = recorder.function
    return recorder.recording


class _Unrecordable(Exception):
    """The call cannot be sent as a request that the service would read back unchanged; says why."""


class _Recorder:
    def __init__(self, function: Callable[..., Any], parameters: inspect.Signature, service_dir: str) -> None:
        self.function = function
        self.recording = Recording()
        self._parameters = parameters
        self._service_dir = service_dir
        self._active = False  # a call in progress: the endpoint calling itself is not another example
        self._envelope, self._encoding, self._errors, self._manifest, self._endpoint = (
            runtime_module(name, service_dir) for name in ("envelope", "encoding", "errors", "manifest", "endpoint")
        )
        self._invoker = self._endpoint.invoker_for(function)  # how the service reads requests (for a table: below)
        signature = self._invoker.signature
        self._batchable = signature.batch is not None and not signature.dataframe  # a list of inputs per call

    def wrapper(self) -> Callable[..., Any]:
        @functools.wraps(self.function)
        def recorder(*args: Any, **kwargs: Any) -> Any:
            return self.call(args, kwargs)

        setattr(recorder, _RECORDER, self)
        return recorder

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._active:
            return self.function(*args, **kwargs)
        self.recording.seen += 1
        if len(self.recording.examples) >= MAX_EXAMPLES or self.recording.seen > MAX_TRIED:
            return self.function(*args, **kwargs)
        request = self._request(args, kwargs)  # before the call, which may mutate its arguments
        self._active = True
        try:
            result = self.function(*args, **kwargs)
        finally:
            self._active = False
        if request is not None and all(example.request != request for example in self.recording.examples):
            self._record(request, result)
        return result

    def _record(self, request: dict[str, Any], result: Any) -> None:
        if self._batchable:
            try:
                result = self._batch_answer(request["data"], result)
            except self._errors.CallFailed as exc:
                self._unrecorded(f"its answer is not one result per input ({exc.error})")
                return
        try:
            response = json.loads(self._encoding.encode_json({"data": result}))
        except self._errors.Unencodable as exc:
            self._unrecorded(f"its answer cannot be sent as JSON ({exc.message})")
            return
        except Exception as exc:  # whatever encoding an odd object raises: the notebook's call still answers
            self._unrecorded(f"its answer cannot be sent as JSON ({type(exc).__name__}: {exc})")
            return
        self.recording.examples.append(self._manifest.Example(request=request, response=response))

    def _unrecorded(self, reason: str) -> None:
        if reason not in self.recording.unrecorded and len(self.recording.unrecorded) < MAX_REASONS:
            self.recording.unrecorded.append(reason)

    def _request(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The request a client sends for this very call, encoded as the service encodes JSON, if the service
        reads it back into these same arguments; else None, and the reason is kept."""
        try:
            bound = dict(self._parameters.bind(*args, **kwargs).arguments)
            if self._invoker.signature.dataframe:
                return self._table_request(bound)
            if self._batchable:
                return self._batch_request(bound)
            encoded = {name: self._sent(name, value) for name, value in bound.items()}
            # {"data": x} for one argument, else by name; the first form's reason is the one reported
            candidates = [*encoded.values(), encoded] if len(encoded) == 1 else [encoded]
            reasons = []
            for data in candidates:
                try:
                    self._check_read_back(data, bound)
                    return {"data": data}
                except _Unrecordable as exc:
                    reasons.append(str(exc))
            raise _Unrecordable(reasons[0])
        except _Unrecordable as exc:
            self._unrecorded(str(exc))
        except TypeError as exc:  # the call does not fit the signature: the function raises it itself
            self._unrecorded(f"the call does not fit the signature ({exc})")
        except Exception as exc:  # an argument whose encoding or comparison raises: the notebook's call goes on
            self._unrecorded(f"its arguments could not be compared with the request ({type(exc).__name__}: {exc})")
        return None

    def _sent(self, name: str, value: Any) -> Any:
        """``value`` as JSON, exactly as a client would send it."""
        try:
            return json.loads(self._encoding.encode_json(value))
        except self._errors.Unencodable:
            raise _Unrecordable(f"argument {name!r} is a {_type_name(value)}, which JSON cannot carry") from None

    def _check_read_back(self, data: Any, bound: dict[str, Any]) -> None:
        """Raise _Unrecordable unless the service reads ``{"data": data}`` as exactly the arguments ``bound``."""
        if self._envelope.is_batch(data):
            raise _Unrecordable("its arguments read as a batch")
        try:
            read = self._invoker.arguments(self._envelope.bind(data, self._invoker.signature))
        except self._errors.BindingError as exc:
            raise _Unrecordable(f"the service would refuse it: {exc.message}") from None
        if set(read) != set(bound):
            raise _Unrecordable("the service would read other parameters from it")
        for name, value in bound.items():
            difference = _difference(value, read[name], f"argument {name!r}")
            if difference:
                raise _Unrecordable(difference)

    def _batch_request(self, bound: dict[str, Any]) -> dict[str, Any]:
        """A batchable function's call: one input is ``{"data": x}``, several a batch ``[[0, x0], [1, x1], ...]``."""
        [(name, values)] = bound.items()
        sent = self._sent(name, values)
        if not isinstance(sent, list) or not sent:
            raise _Unrecordable(f"argument {name!r} is not a list of inputs with at least one")
        single = len(sent) == 1 and not self._envelope.is_batch(sent[0])
        data = sent[0] if single else [[index, item] for index, item in enumerate(sent)]
        invoke = runtime_module("invoke", self._service_dir)
        items = []
        for row in invoke.inputs_of(self._invoker, data).rows:
            try:
                if isinstance(row, self._errors.BindingError):
                    raise row
                items.append(self._invoker.arguments(row)[name])
            except self._errors.BindingError as exc:
                raise _Unrecordable(f"the service would refuse it: {exc.message}") from None
        difference = _difference(values, self._invoker.signature.batch(items), f"argument {name!r}")
        if difference:
            raise _Unrecordable(difference)
        return {"data": data}

    def _batch_answer(self, data: Any, result: Any) -> Any:
        """A batchable function's ``result`` as the service answers the request ``data``: per input."""
        batch = self._envelope.is_batch(data)
        results = runtime_module("invoke", self._service_dir).per_row(result, len(data) if batch else 1)
        return [[index, one] for index, one in enumerate(results)] if batch else results[0]

    def _table_request(self, bound: dict[str, Any]) -> dict[str, Any]:
        [(name, table)] = bound.items()
        if not hasattr(table, "dtypes") or not hasattr(table, "columns"):
            raise _Unrecordable(f"argument {name!r} is a {_type_name(table)}, not a DataFrame")
        frame = self._manifest.RecordedFrame(
            columns=tuple(str(c) for c in table.columns), dtypes={str(c): str(t) for c, t in table.dtypes.items()}
        )
        records = self._sent(name, table)
        invoker = self._endpoint.invoker_for(self.function, frame)
        try:
            read = invoker.arguments({name: records})[name]
        except self._errors.BindingError as exc:
            raise _Unrecordable(f"the service would refuse it: {exc.message}") from None
        if not table.reset_index(drop=True).equals(read):
            raise _Unrecordable(f"argument {name!r} would not arrive as the same table (columns, dtypes or values)")
        self.recording.frame = frame
        return {"data": records}


def _difference(original: Any, read: Any, where: str) -> str | None:
    """None if the service's ``read`` is ``original`` (numbers by value, numpy scalars as their Python value);
    else what differs, in words."""
    if _is_array(original):
        return _array_difference(original, read, where)
    if _is_array(read):
        return f"{where} is a {_type_name(original)}, and the service would pass a numpy array"
    if hasattr(original, "item") and type(original).__module__ == "numpy":  # a numpy scalar
        original = original.item()
    if isinstance(original, float) and not math.isfinite(original):
        return f"{where} is {original!r}, which JSON cannot carry (it would arrive as null)"
    if _number(original) and _number(read):
        return None if original == read else f"{where} is {original!r}, and would arrive as {read!r}"
    if type(original) is not type(read):
        kind = _type_name(original)
        return f"{where} is a {kind}, and the service would pass a {_type_name(read)}: annotate the parameter as {kind}"
    if isinstance(original, (list, tuple)):
        if len(original) != len(read):
            return f"{where} has {len(original)} items, and would arrive with {len(read)}"
        found = (_difference(o, r, f"{where}[{i}]") for i, (o, r) in enumerate(zip(original, read, strict=True)))
        return next((d for d in found if d), None)
    if isinstance(original, dict):
        if list(original) != list(read):
            return f"{where} would arrive with other keys"
        return next((d for d in (_difference(original[k], read[k], f"{where}[{k!r}]") for k in original) if d), None)
    return None if original == read else f"{where} would arrive changed ({original!r} -> {read!r})"


def _array_difference(original: Any, read: Any, where: str) -> str | None:
    if not _is_array(read):
        return f"{where} is a numpy array, and the service would pass a {_type_name(read)}: annotate it numpy.ndarray"
    if original.shape != read.shape or original.dtype.kind != read.dtype.kind:
        return f"{where} ({original.dtype}, shape {original.shape}) would arrive as {read.dtype}, shape {read.shape}"
    numpy = sys.modules["numpy"]
    same = numpy.array_equal(original, read, equal_nan=original.dtype.kind in "fc")
    return None if same else f"{where} would arrive with other values (NaN and infinities become null in JSON)"


def _is_array(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
