"""Where calls run: off the event loop, with bounded time and bounded concurrency.

``Executor`` is the interface the call path uses; ``ThreadExecutor`` the one every endpoint has today.
Calls run on a pool of daemon worker threads, one per allowed concurrent prediction. A call
that runs past the time limit is answered 504 at once and its thread is left to finish on its
own: the event loop never waits for it, so the requests behind it are answered by the other
threads, and it still counts against the concurrency limit until it ends (a pile of stuck calls
turns into 429s, never into unbounded threads). Daemon threads never hold up the process's exit.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .endpoint import Endpoint
from .errors import Busy, TimedOut


@dataclass(frozen=True)
class Call:
    """One request, read by its protocol: the endpoint, how many rows it carries (for the batch limit and
    the metrics), and what to run for it; ``run``'s answer lists under "errors" the rows that failed."""

    endpoint: Endpoint
    rows: int
    run: Callable[[], dict[str, Any]]


class Executor(Protocol):
    """Runs the calls of the endpoints it is given to, off the event loop: it answers a call's result, or
    raises ``Busy`` (429) or ``TimedOut`` (504). The seam for other executors, such as micro-batching: it
    sees every call of its endpoints, with the endpoint, and may hold them to run several in one go."""

    async def run(self, call: Call) -> dict[str, Any]: ...


class ThreadExecutor:
    """``size`` daemon threads that run calls for the event loop, with a time limit per call."""

    def __init__(self, size: int, timeout: float) -> None:
        self.size = size
        self.timeout = timeout
        self.busy = 0  # touched only on the event loop's thread
        self._threads = 0  # started as they are first needed
        self._tasks: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.AbstractEventLoop, asyncio.Future[Any]]] = (
            queue.SimpleQueue()
        )

    async def run(self, call: Call) -> dict[str, Any]:
        """``call.run()`` on one of the threads, within the time limit."""
        if self.busy >= self.size:
            raise Busy(f"all {self.size} prediction slots are busy (NB2SVC_MAX_CONCURRENT); retry shortly")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.busy += 1
        if self.busy > self._threads:
            self._threads += 1
            threading.Thread(target=self._work, name=f"nb2svc-call-{self._threads}", daemon=True).start()
        future.add_done_callback(self._finished)
        self._tasks.put((call.run, loop, future))
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except asyncio.TimeoutError:
            raise TimedOut(f"the call took longer than {self.timeout:g} s (NB2SVC_TIMEOUT)") from None

    def _finished(self, future: asyncio.Future[Any]) -> None:
        self.busy -= 1
        if not future.cancelled():
            future.exception()  # retrieved: a late failure after a 504 is not "never retrieved"

    def _work(self) -> None:
        while True:
            call, loop, future = self._tasks.get()
            try:
                outcome: tuple[Any, BaseException | None] = (call(), None)
            except BaseException as exc:  # handed to the waiting request, whatever it is
                outcome = (None, exc)
            try:
                loop.call_soon_threadsafe(_settle, future, *outcome)
            except RuntimeError:  # the loop has closed: nobody waits any more
                pass


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
