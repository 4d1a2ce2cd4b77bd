"""After each ``predict`` cell: the calls later cells make of the endpoints are recorded as examples.

Each endpoint is wrapped in a recorder; ``take_off`` puts the function itself back before capture
serializes it. An example is recorded only where JSON can express the call unchanged, as the
request the service would read as this very call, with the answer encoded as the service would.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .runtime import runtime_module

MAX_EXAMPLES = 10  # per endpoint: the first distinct calls the notebook makes
_RECORDER = "_nb2svc_recorder"  # the attribute of a wrapper that holds its recorder


@dataclass
class Recording:
    """What a recorder saw (nb2svc_runtime.manifest's ``Example`` and ``RecordedFrame``)."""

    examples: list[Any] = field(default_factory=list)
    frame: Any = None  # the columns and dtypes of the DataFrames the notebook passed


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


class _Recorder:
    def __init__(self, function: Callable[..., Any], parameters: inspect.Signature, service_dir: str) -> None:
        self.function = function
        self.recording = Recording()
        self._parameters = parameters
        self._active = False  # a call in progress: the endpoint calling itself is not another example
        self._envelope, self._encoding, self._errors, self._manifest, schema = (
            runtime_module(name, service_dir) for name in ("envelope", "encoding", "errors", "manifest", "schema")
        )
        self._signature = schema.read_signature(function)

    def wrapper(self) -> Callable[..., Any]:
        @functools.wraps(self.function)
        def recorder(*args: Any, **kwargs: Any) -> Any:
            return self.call(args, kwargs)

        setattr(recorder, _RECORDER, self)
        return recorder

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._active or len(self.recording.examples) >= MAX_EXAMPLES:
            return self.function(*args, **kwargs)
        request = self._request(args, kwargs)
        self._active = True
        try:
            result = self.function(*args, **kwargs)
        finally:
            self._active = False
        if request is not None and all(example.request != request for example in self.recording.examples):
            self._record(request, result)
        return result

    def _record(self, request: dict[str, Any], result: Any) -> None:
        try:
            response = json.loads(self._encoding.encode_json({"data": result}))
        except self._errors.Unencodable:
            return
        self.recording.examples.append(self._manifest.Example(request=request, response=response))

    def _request(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The request the service reads as this very call, or None if JSON cannot express it unchanged."""
        try:
            bound = dict(self._parameters.bind(*args, **kwargs).arguments)
        except TypeError:
            return None
        if self._signature.dataframe:
            return self._table_request(bound)
        values = list(bound.values())
        if not _plain_json(values):
            return None
        for data in (values[0] if len(values) == 1 else None, bound):
            if not self._envelope.is_batch(data) and self._binds_to(data, bound):
                return {"data": json.loads(json.dumps(data))}  # a copy: the call may mutate its arguments
        return None

    def _table_request(self, bound: dict[str, Any]) -> dict[str, Any] | None:
        table: Any = next(iter(bound.values()), None)
        if not hasattr(table, "dtypes"):
            return None
        try:
            records = json.loads(self._encoding.encode_json(table))
        except self._errors.Unencodable:
            return None
        self.recording.frame = self._manifest.RecordedFrame(
            columns=tuple(str(c) for c in table.columns), dtypes={str(c): str(t) for c, t in table.dtypes.items()}
        )
        return {"data": records}

    def _binds_to(self, data: Any, bound: dict[str, Any]) -> bool:
        try:
            return bool(self._envelope.bind(data, self._signature) == bound)
        except self._errors.BindingError:
            return False


def _plain_json(value: Any) -> bool:
    """True if ``value`` is made only of JSON's own types, so it survives a round trip unchanged."""
    kind = type(value)
    if value is None or kind in (str, bool, int):
        return True
    if kind is float:
        return bool(math.isfinite(value))
    if kind is list:
        return all(_plain_json(item) for item in value)
    if kind is dict:
        return all(type(key) is str and _plain_json(item) for key, item in value.items())
    return False
