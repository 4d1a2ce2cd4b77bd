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
                return [[row[0], await self._await(row[0], *row[1:])] for row in request.rows]
            return await run_in_threadpool(self._run_batch, request.rows)
        if self.is_async:
            return await self._await(None, *request.args, **request.kwargs)
        return await run_in_threadpool(self._run, None, *request.args, **request.kwargs)

    def _run_batch(self, rows: list[list[Any]]) -> list[list[Any]]:
        return [[row[0], self._run(row[0], *row[1:])] for row in rows]

    def _run(self, row_id: Any, /, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.function(*args, **kwargs)
        except Exception as exc:
            raise CallFailed(exc, row_id) from exc

    async def _await(self, row_id: Any, /, *args: Any, **kwargs: Any) -> Any:
        try:
            return await self.function(*args, **kwargs)
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
