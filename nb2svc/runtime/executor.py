"""Where calls run: off the event loop, with bounded time and bounded concurrency; a batchable endpoint's gathered.

``Executor`` is the interface the call path uses. ``ThreadExecutor`` runs each call on a pool of daemon
worker threads, one per allowed concurrent prediction. A call that runs past the time limit is answered
504 at once and its thread is left to finish on its own: the event loop never waits for it, so the
requests behind it are answered by the other threads, and it still counts against the concurrency limit
until it ends (a pile of stuck calls turns into 429s, never into unbounded threads). Daemon threads
never hold up the process's exit.

``BatchingExecutor`` gathers the calls of batchable endpoints (see ``Gatherer``) and hands every other
call to its ``ThreadExecutor`` as it comes.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .endpoint import Endpoint
from .errors import Busy, ClientClosed, TimedOut
from .invoke import Inputs
from .observability import Metrics
from .settings import Settings


@dataclass(frozen=True)
class Call:
    """One request, read by its protocol: the endpoint, how many rows it carries (for the batch limit and
    the metrics), and what to run for it; ``run``'s answer lists under "errors" the rows that failed.

    A batchable endpoint's call also has its ``inputs``, to be run together with other calls' inputs, and
    (set by the call path) how to tell that its client has gone, so that it is not computed in vain."""

    endpoint: Endpoint
    rows: int
    run: Callable[[], Any]
    inputs: Inputs | None = None
    disconnected: Callable[[], Awaitable[bool]] | None = None


def gathered_call(endpoint: Endpoint, inputs: Inputs) -> Call:
    """The call of a batchable endpoint for ``inputs``: run alone, it is one call of the function for them all."""

    def alone() -> dict[str, Any]:
        return inputs.answer(endpoint.invoker.together(inputs.rows))

    return Call(endpoint, len(inputs.rows), alone, inputs)


class Executor(Protocol):
    """Runs the calls of the endpoints it is given to, off the event loop: it answers a call's result, or
    raises ``Busy`` (429) or ``TimedOut`` (504)."""

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

    async def run(self, call: Call) -> Any:
        """``call.run()`` on one of the threads, within the time limit."""
        if self.busy >= self.size:
            raise Busy(f"all {self.size} prediction slots are busy (NB2SVC_MAX_CONCURRENT); retry shortly")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
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


class BatchingExecutor:
    """Gathers each batchable endpoint's calls (a ``Gatherer`` per endpoint); other calls go to ``threads``."""

    def __init__(self, threads: ThreadExecutor, settings: Settings, metrics: Metrics) -> None:
        self.threads = threads
        self.settings = settings
        self.metrics = metrics
        self._gatherers: dict[str, Gatherer] = {}

    async def run(self, call: Call) -> dict[str, Any]:
        if call.inputs is None:
            result: dict[str, Any] = await self.threads.run(call)
            return result
        gatherer = self._gatherers.get(call.endpoint.name)
        if gatherer is None:
            gatherer = self._gatherers[call.endpoint.name] = Gatherer(call.endpoint, self)
        return await gatherer.run(call)


@dataclass(eq=False)
class _Waiting:
    call: Call
    future: asyncio.Future[dict[str, Any]]
    since: float  # loop time when it arrived
    gone: bool = False  # answered, timed out or cancelled: nothing more to compute for it


@dataclass(eq=False)
class Gatherer:
    """One batchable endpoint's queue: the calls that wait are run as one call of the function, of up to
    ``max_batch_size`` inputs, as soon as the endpoint's previous call is done. Batches grow with the load
    and need no fixed delay (Triton's dynamic batcher); ``max_wait_ms`` above 0 holds a call that long
    after the first input arrived, for more to join it (Ray Serve's ``batch_wait_timeout_s``).

    - One input that fails (invalid, or its call raises) fails only itself: ``Invoker.together`` splits a
      raising call until it finds the inputs at fault.
    - The queue is bounded (``max_queue`` inputs waiting: then 429 with Retry-After); each request keeps
      its own time limit (504); a call whose request has gone (timed out, cancelled, client disconnected)
      is dropped before it is computed.
    - Whatever goes wrong while a batch is made or run is handed to the requests in it, and the next batch
      starts: no request waits for a batch that will never come (Ray Serve #66141).
    """

    endpoint: Endpoint
    executor: BatchingExecutor
    _waiting: collections.deque[_Waiting] = field(default_factory=collections.deque)
    _queued: int = 0  # inputs waiting
    _running: bool = False
    _timer: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        described = self.endpoint.described.batch
        settings, name = self.executor.settings, self.endpoint.name
        self.max_size = settings.for_endpoint("max_batch_size", name, described.max_batch_size if described else 64)
        wait_ms = settings.for_endpoint("max_batch_wait_ms", name, described.max_wait_ms if described else 0.0)
        self.max_wait = wait_ms / 1000
        self.max_queue = settings.max_queue_inputs
        self.timeout = settings.timeout_seconds
        self.metrics = self.executor.metrics.batching(name)

    async def run(self, call: Call) -> dict[str, Any]:
        if self._queued and self._queued + call.rows > self.max_queue:
            raise Busy(
                f"{self.endpoint.name} has {self._queued} inputs waiting, and takes at most {self.max_queue} "
                "(NB2SVC_MAX_QUEUE); retry shortly"
            )
        loop = asyncio.get_running_loop()
        waiting = _Waiting(call, loop.create_future(), loop.time())
        self._waiting.append(waiting)
        self._queued += call.rows
        self.metrics.queued.set(self._queued)
        self._dispatch()
        try:
            return await asyncio.wait_for(asyncio.shield(waiting.future), self.timeout)
        except asyncio.TimeoutError:
            raise TimedOut(f"the call took longer than {self.timeout:g} s (NB2SVC_TIMEOUT)") from None
        finally:
            waiting.gone = True

    def _dispatch(self) -> None:
        """Start the next batch if none runs and calls wait (after ``max_wait``, unless the batch is full)."""
        if self._running or not self._waiting:
            return
        loop = asyncio.get_running_loop()
        if self.max_wait and self._queued < self.max_size:
            due = self._waiting[0].since + self.max_wait
            if loop.time() < due:
                if self._timer is None:
                    self._timer = loop.call_at(due, self._on_timer)
                return
        self._running = True
        loop.create_task(self._run_batch())

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    async def _run_batch(self) -> None:
        taken: list[_Waiting] = []
        try:
            taken = await self._take()
            if taken:
                await self._compute(taken)
        except Exception as exc:  # whatever it is, the requests of this batch hear of it
            for waiting in taken:
                _answer(waiting, None, exc)
        except BaseException:  # cancelled (the server stops): so are the requests of this batch
            for waiting in taken:
                waiting.future.cancel()
            raise
        finally:
            self._running = False
            self._dispatch()

    async def _take(self) -> list[_Waiting]:
        """The calls of the next batch: up to ``max_size`` inputs (a bigger call alone), skipping gone ones."""
        taken: list[_Waiting] = []
        size = 0
        now = asyncio.get_running_loop().time()
        while self._waiting:
            waiting = self._waiting[0]
            if taken and size + waiting.call.rows > self.max_size:
                break
            self._waiting.popleft()
            self._queued -= waiting.call.rows
            self.metrics.queued.set(self._queued)
            if waiting.gone or waiting.future.done():
                continue
            if await self._client_gone(waiting):
                _answer(waiting, None, ClientClosed("the client closed the connection while its call waited"))
                continue
            taken.append(waiting)
            size += waiting.call.rows
            self.metrics.queue_wait.observe(now - waiting.since)
        return taken

    @staticmethod
    async def _client_gone(waiting: _Waiting) -> bool:
        check = waiting.call.disconnected
        return check is not None and await check()

    async def _compute(self, taken: list[_Waiting]) -> None:
        rows = [row for waiting in taken for row in waiting.call.inputs.rows]  # type: ignore[union-attr]
        self.metrics.batch_inputs.observe(len(rows))
        started = time.perf_counter()
        outcomes = await self.executor.threads.run(Call(self.endpoint, len(rows), lambda: self._together(rows)))
        self.metrics.call_seconds.observe(time.perf_counter() - started)
        offset = 0
        for waiting in taken:
            own = outcomes[offset : offset + waiting.call.rows]
            offset += waiting.call.rows
            try:
                result: tuple[Any, BaseException | None] = (waiting.call.inputs.answer(own), None)  # type: ignore[union-attr]
            except Exception as exc:  # BindingError or CallFailed of a request that is one input or one table
                result = (None, exc)
            _answer(waiting, *result)

    def _together(self, rows: list[Any]) -> list[Any]:
        """On a worker thread: the function called for ``rows``, ``max_size`` inputs at a time."""
        together = self.endpoint.invoker.together
        if len(rows) <= self.max_size:
            return together(rows)
        outcomes: list[Any] = []
        for start in range(0, len(rows), self.max_size):
            outcomes += together(rows[start : start + self.max_size])
        return outcomes


def _answer(waiting: _Waiting, result: Any, error: BaseException | None) -> None:
    if not waiting.gone:  # else nobody would read it (nor retrieve its exception)
        _settle(waiting.future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
