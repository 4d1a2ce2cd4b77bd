"""One endpoint: the function loaded from its artifact, with what it takes to answer requests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import hashlib
import inspect
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .invoke import Invoker
from .manifest import EndpointDescription, RecordedFrame
from .schema import Signature, read_signature


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A loaded endpoint: how to call it, and the manifest's description of it."""

    invoker: Invoker
    described: EndpointDescription

    @property
    def name(self) -> str:
        return self.described.name

    @property
    def signature(self) -> Signature:
        return self.invoker.signature


class ArtifactRefused(Exception):
    """The artifact is missing, outside artifacts/, or not the one the manifest's digest names: never unpickled."""


def load_endpoint(service_dir: Path, described: EndpointDescription) -> Endpoint:
    """Unpickle an endpoint's artifact, only after checking it is one of this service's, as the manifest says."""
    artifacts = (service_dir / "artifacts").resolve()
    path = (service_dir / described.artifact).resolve()
    if path.parent != artifacts:
        raise ArtifactRefused(
            f"the manifest names {described.artifact!r}, which is not in artifacts/: refusing to load it"
        )
    if not path.is_file():
        raise ArtifactRefused(f"the artifact of {described.name} is missing: {path}")
    payload = path.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != described.sha256:
        raise ArtifactRefused(
            f"{path} does not match the manifest (sha256 {digest}, expected {described.sha256}): "
            "the artifact was changed after the build. Rebuild the service."
        )
    function = pickle.loads(payload)
    return Endpoint(invoker=invoker_for(function, described.recorded_frame), described=described)


def invoker_for(function: Callable[..., Any], frame: RecordedFrame | None = None) -> Invoker:
    """How requests call ``function``: the same in the service, in the training kernel and in the fresh interpreter."""
    return Invoker(_synchronous(function), _with_recorded_frame(read_signature(function), frame))


def _synchronous(function: Callable[..., Any]) -> Callable[..., Any]:
    """An ``async def`` endpoint runs to completion on a loop of its own, like any other call.

    Where a loop already runs in this thread (the examples replayed while uvicorn loads the app,
    the training kernel), the coroutine runs in a thread of its own.
    """
    if not inspect.iscoroutinefunction(function):
        return function

    @functools.wraps(function)
    def run(**arguments: Any) -> Any:
        coroutine = function(**arguments)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coroutine)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coroutine).result()

    return run


_INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
# No bounds for floats: at a float's limits validators disagree on integers (exact or rounded comparison).
_FLOAT64 = {"type": ["number", "null"]}
# What JSON value each recorded column dtype takes without loss; other dtypes take any value.
_COLUMN_SCHEMAS: dict[str, dict[str, Any]] = {
    "int64": _INT64,
    "int32": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
    "float64": _FLOAT64,
    "float32": _FLOAT64,
    "bool": {"type": "boolean"},
}


def _with_recorded_frame(signature: Signature, frame: RecordedFrame | None) -> Signature:
    """A DataFrame endpoint builds its table with the columns and dtypes of the notebook's own calls,
    and each record's values must fit their column's dtype (validated, and published in the schema)."""
    if not signature.dataframe or not frame:
        return signature
    parameter = signature.parameters[0]
    build = parameter.convert

    def convert(records: Any) -> Any:
        table = build(records)
        if table.empty and not len(table.columns):  # no rows: the recorded columns, empty
            table = table.reindex(columns=list(frame.columns))
        columns = [c for c in frame.columns if c in table.columns] + [
            c for c in table.columns if c not in frame.columns
        ]
        return table[columns].astype({c: t for c, t in frame.dtypes.items() if c in table.columns})

    rule = {
        "properties": {c: _COLUMN_SCHEMAS.get(t, {}) for c, t in frame.dtypes.items()},
        "required": list(frame.columns),
    }
    # the records' rule, for a list of records (items) and for one record alike
    schema = {**parameter.schema, "items": {"type": "object", **rule}, **rule}
    return dataclasses.replace(signature, parameters=(dataclasses.replace(parameter, convert=convert, schema=schema),))
