"""One endpoint: the function loaded from its artifact, and how a request calls it."""

from __future__ import annotations

import hashlib
import inspect
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool

from .envelope import Batch, Call


class CallFailed(Exception):
    """The endpoint's function raised; ``row_id`` is set for a batch row."""

    def __init__(self, error: BaseException, row_id: Any = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.row_id = row_id


@dataclass(frozen=True)
class Endpoint:
    name: str
    function: Callable[..., Any]
    parameter_names: frozenset[str]
    is_async: bool

    async def answer(self, request: Call | Batch) -> Any:
        """The result of one call, or ``[[id, result], ...]`` for a batch in request order."""
        if isinstance(request, Batch):
            if self.is_async:
                results = [await self._await(call, row_id) for row_id, call in zip(request.ids, request.calls)]
            else:
                results = await run_in_threadpool(self._run_batch, request)
            return [[row_id, result] for row_id, result in zip(request.ids, results)]
        if self.is_async:
            return await self._await(request, None)
        return await run_in_threadpool(self._run, request, None)

    def _run_batch(self, batch: Batch) -> list[Any]:
        return [self._run(call, row_id) for row_id, call in zip(batch.ids, batch.calls)]

    def _run(self, call: Call, row_id: Any) -> Any:
        try:
            return self.function(*call.args, **call.kwargs)
        except Exception as exc:
            raise CallFailed(exc, row_id) from exc

    async def _await(self, call: Call, row_id: Any) -> Any:
        try:
            return await self.function(*call.args, **call.kwargs)
        except Exception as exc:
            raise CallFailed(exc, row_id) from exc


def load_endpoint(service_dir: Path, described: dict[str, Any]) -> Endpoint:
    """Unpickle an endpoint's artifact after checking its digest against the manifest."""
    path = service_dir / described["artifact"]
    payload = path.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != described["sha256"]:
        raise RuntimeError(
            f"{path} does not match the manifest (sha256 {digest}, expected {described['sha256']}): "
            "the artifact was changed after the build. Rebuild the service."
        )
    function = pickle.loads(payload)
    return Endpoint(
        name=described["name"],
        function=function,
        parameter_names=frozenset(_parameter_names(function)),
        is_async=inspect.iscoroutinefunction(function),
    )


def _parameter_names(function: Callable[..., Any]) -> list[str]:
    try:
        return list(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return []
