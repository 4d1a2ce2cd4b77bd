"""Where calls run: off the event loop, with bounded time and bounded concurrency; a batchable endpoint's gathered.

``Executor`` is the interface the call path uses. ``CallExecutor`` runs each call on a worker thread (or,
for an endpoint proven fast, on the event loop), with a time limit; ``BatchingExecutor`` gathers the calls
of batchable endpoints (see ``Gatherer``) and hands every other call to its ``CallExecutor`` as it comes.
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
from .manifest import BatchDescription
from .observability import Metrics
from .settings import Settings
from .turns import take_turns


@dataclass(eq=False)
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

    def forget(self, endpoint: Endpoint) -> None:
        """Drop what is kept for ``endpoint`` (a registry's removed version): its calls in flight still finish."""


def _key(endpoint: Endpoint) -> tuple[str, str]:
    """What the executors keep per endpoint is by artifact too: a registry's versions of one name differ."""
    return (endpoint.name, endpoint.described.sha256)


# A call shorter than this may run on the event loop itself, once its endpoint has proved that fast: the loop
# waits that long at most (a hand-written server's waits for every call, however long).
FAST_CALL = 0.005
PROOF = 32  # consecutive fast calls that prove an endpoint fast (doubled each time it proves slow after all)
MAX_PROOF = 4096
# A worker that has run its call this long while using under BLOCKED_SHARE of a core is waiting (on I/O, a
# lock, a sleep), not computing: another worker may start the next call meanwhile.
STALL = 0.005
BLOCKED_SHARE = 0.2
# A call of many rows gives its turn to the calls waiting behind it after this long (between two rows).
TURN = 0.001


class Abandoned(Exception):
    """Raised inside a call that was taking turns, when its request has stopped waiting for it."""


@dataclass
class _Speed:
    """How fast an endpoint's calls have been: they run on the event loop while all of them are fast."""

    streak: int = 0  # consecutive fast calls
    proof: int = PROOF
    inline: bool = False
    never_inline: bool = False  # an async function: it runs on a loop of its own, never on the server's

    def observe(self, seconds: float) -> None:
        if seconds < FAST_CALL:
            self.streak += 1
            self.inline = self.streak >= self.proof and not self.never_inline
            return
        if self.inline:  # it proved slow after all: it must prove itself longer before it runs inline again
            self.proof = min(self.proof * 2, MAX_PROOF)
        self.streak = 0
        self.inline = False


@dataclass(eq=False)
class _Task:
    call: Call
    future: asyncio.Future[Any]
    speed: _Speed
    gone: bool = False  # its request stopped waiting (time limit, cancelled)
    parked: _Worker | None = None  # the worker holding it while it waits for its next turn


_RESUME, _ABANDON = "resume", "abandon"


class _Worker:
    """A daemon thread that runs the tasks the event loop hands it, one at a time."""

    def __init__(self, executor: CallExecutor, number: int) -> None:
        self.executor = executor
        self.inbox: queue.SimpleQueue[tuple[_Task, asyncio.AbstractEventLoop] | str] = queue.SimpleQueue()
        self.task: _Task | None = None  # the one it runs (set and read on the event loop's thread)
        self.parked = False  # its task waits for its next turn
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = 0.0
        self.cpu_at_start = 0.0
        self.turn_started = 0.0  # on its own thread: when its task's current turn began
        self.clock: int | None = None  # its CPU-time clock, once it runs
        threading.Thread(target=self._work, name=f"nb2svc-call-{number}", daemon=True).start()

    def start(self, task: _Task, loop: asyncio.AbstractEventLoop) -> None:
        self.task, self.started, self.cpu_at_start = task, time.perf_counter(), self.cpu_time()
        self.inbox.put((task, loop))

    def resume(self, abandon: bool) -> None:
        self.parked = False
        self.started, self.cpu_at_start = time.perf_counter(), self.cpu_time()
        self.inbox.put(_ABANDON if abandon else _RESUME)

    def computing(self, now: float, timeout: float) -> bool:
        """Is it running a call that uses the CPU (neither waiting on something, nor past its time limit)?"""
        if self.task is None or self.parked:
            return False
        running = now - self.started
        if running < STALL:
            return True
        if running > timeout:  # lost to a call that may never end: it no longer holds the others up
            return False
        return self.clock is not None and (self.cpu_time() - self.cpu_at_start) / running >= BLOCKED_SHARE

    def cpu_time(self) -> float:
        return time.clock_gettime(self.clock) if self.clock is not None else 0.0

    def _turn(self) -> None:
        """Between two rows, on its own thread: if calls wait and this turn has lasted, let them go first; if
        the request has stopped waiting (504, gone), stop computing for it."""
        if self.task is not None and self.task.gone:
            raise Abandoned("its request has stopped waiting")
        if not self.executor.waiting or time.perf_counter() - self.turn_started < TURN:
            return
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.executor.park, self)
        if self.inbox.get() == _ABANDON:
            raise Abandoned("its request has stopped waiting")
        self.turn_started = time.perf_counter()

    def _work(self) -> None:
        if hasattr(time, "pthread_getcpuclockid"):
            self.clock = time.pthread_getcpuclockid(threading.get_ident())
        take_turns(self._turn)
        while True:
            message = self.inbox.get()
            assert not isinstance(message, str)
            task, loop = message
            self.loop = loop
            started = self.turn_started = time.perf_counter()
            try:
                outcome: tuple[Any, BaseException | None] = (task.call.run(), None)
            except BaseException as exc:  # handed to the waiting request, whatever it is
                outcome = (None, exc)
            try:
                loop.call_soon_threadsafe(self.executor.finished, self, time.perf_counter() - started, *outcome)
            except RuntimeError:  # the loop has closed: nobody waits any more
                pass
            # Not kept while it waits for the next: a request's data (and a removed version's model) can go.
            del message, task, outcome


class CallExecutor:
    """Runs calls off the event loop, one computing at a time, with a time limit each; a proven-fast
    endpoint's calls on the event loop itself.

    - **Fast calls inline.** Handing a call to a thread and back costs about 65 µs of latency and 25 µs of
      CPU here, more than a small model's whole call. An endpoint whose last ``PROOF`` calls each took under
      ``FAST_CALL`` has its calls run on the event loop; the first one that takes longer sends it back to the
      threads, to prove itself for twice as long. Only that one call holds up the loop (and answers 504 late
      if it overran the time limit); an endpoint whose calls are slow never runs inline.
    - **One computing worker.** The GIL lets one thread compute at a time: more threads computing at once
      only trade the GIL (and starve the event loop of it). Calls wait in arrival order for the worker; a
      second worker starts the next call only while the first is waiting (on I/O, a sleep: under
      ``BLOCKED_SHARE`` of a core for ``STALL``) or has run past its time limit. At most ``size`` calls are in
      flight, running or waiting (then 429); a call past its time limit is answered 504 at once and its
      thread left to finish on its own, still counted, so a pile of stuck calls turns into 429s, never into
      unbounded threads. Daemon threads never hold up the process's exit.
    """

    def __init__(self, size: int, timeout: float) -> None:
        self.size = size
        self.timeout = timeout
        self.busy = 0  # calls in flight: waiting for a worker or running (all state: on the loop's thread)
        self._workers: list[_Worker] = []
        self._idle: list[_Worker] = []
        self._waiting: collections.deque[_Task] = collections.deque()
        self._speeds: dict[tuple[str, str], _Speed] = {}
        self._recheck: asyncio.TimerHandle | None = None

    async def run(self, call: Call) -> Any:
        """``call.run()``, inline if its endpoint is proven fast, else on a worker, within the time limit."""
        speed = self._speed(call.endpoint)
        if speed.inline:
            return self._inline(call, speed)
        if self.busy >= self.size:
            raise Busy(f"all {self.size} prediction slots are busy (NB2SVC_MAX_CONCURRENT); retry shortly")
        loop = asyncio.get_running_loop()
        task = _Task(call, loop.create_future(), speed)
        self.busy += 1
        self._waiting.append(task)
        self._dispatch()
        try:
            return await _within(task.future, self.timeout)
        finally:
            task.gone = True

    def _speed(self, endpoint: Endpoint) -> _Speed:
        key = _key(endpoint)
        speed = self._speeds.get(key)
        if speed is None:
            speed = self._speeds[key] = _Speed(never_inline=endpoint.described.is_async)
        return speed

    def forget(self, endpoint: Endpoint) -> None:
        self._speeds.pop(_key(endpoint), None)

    def _inline(self, call: Call, speed: _Speed) -> Any:
        started = time.perf_counter()
        try:
            return call.run()
        finally:
            took = time.perf_counter() - started
            speed.observe(took)
            if took > self.timeout:
                raise _timed_out(self.timeout)

    def _dispatch(self) -> None:
        """Start waiting calls while no worker computes; if one does, look again in ``STALL``."""
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        while self._waiting:
            task = self._waiting[0]
            if task.gone and task.parked is None:  # its request has its answer (504) or has left: not computed
                self._waiting.popleft()
                self.busy -= 1
                continue
            if any(worker.computing(now, self.timeout) for worker in self._workers):
                if self._recheck is None:
                    self._recheck = loop.call_later(STALL, self._look_again)
                return
            self._waiting.popleft()
            if task.parked is not None:  # its next turn, on the worker that holds it
                task.parked.resume(abandon=task.gone)
                task.parked = None
                continue
            if not self._idle:
                self._workers.append(_Worker(self, len(self._workers) + 1))
                self._idle.append(self._workers[-1])
            self._idle.pop().start(task, loop)

    @property
    def waiting(self) -> int:
        """Calls waiting for a worker (read from the workers' threads too)."""
        return len(self._waiting)

    def park(self, worker: _Worker) -> None:
        """On the event loop: ``worker``'s task gives its turn to the calls waiting; it waits behind them."""
        task = worker.task
        assert task is not None
        worker.parked, task.parked = True, worker
        self._waiting.append(task)
        self._dispatch()

    def _look_again(self) -> None:
        self._recheck = None
        self._dispatch()

    def finished(self, worker: _Worker, seconds: float, result: Any, error: BaseException | None) -> None:
        """On the event loop: ``worker`` has run its task in ``seconds``."""
        task = worker.task
        assert task is not None
        worker.task = None
        self._idle.append(worker)
        self.busy -= 1
        task.speed.observe(seconds)
        if not task.gone:  # else its request has had its answer (504): the late result is dropped
            _settle(task.future, result, error)
        self._dispatch()


class BatchingExecutor:
    """Gathers each batchable endpoint's calls (a ``Gatherer`` per endpoint); other calls go to ``threads``."""

    def __init__(self, threads: CallExecutor, settings: Settings, metrics: Metrics) -> None:
        self.threads = threads
        self.settings = settings
        self.metrics = metrics
        self._gatherers: dict[tuple[str, str], Gatherer] = {}

    async def run(self, call: Call) -> dict[str, Any]:
        if call.inputs is None:
            result: dict[str, Any] = await self.threads.run(call)
            return result
        key = _key(call.endpoint)
        gatherer = self._gatherers.get(key)
        if gatherer is None:
            gatherer = self._gatherers[key] = Gatherer(call.endpoint, self)
        return await gatherer.run(call)

    def forget(self, endpoint: Endpoint) -> None:
        """A gatherer holds its endpoint's function (the model): a removed version's goes with it."""
        self._gatherers.pop(_key(endpoint), None)
        self.threads.forget(endpoint)


# A call that waited longer than this is asked whether its client is still there before it is computed;
# asking costs about 20 µs, more than the call's share of a batch costs to compute: only a long wait (an
# overloaded endpoint, clients giving up) makes it worth asking.
CHECK_CLIENT_AFTER = 0.05


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
        described = self.endpoint.described.batch or BatchDescription()
        settings, name = self.executor.settings, self.endpoint.name
        self.max_size = settings.for_endpoint("max_batch_size", name, described.max_batch_size)
        wait_ms = settings.for_endpoint("max_batch_wait_ms", name, described.max_wait_ms)
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
            answered: dict[str, Any] = await _within(waiting.future, self.timeout)
            return answered
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
            if now - waiting.since > CHECK_CLIENT_AFTER and await self._client_gone(waiting):
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

    async def _call_function(self, rows: list[Any]) -> list[Any]:
        """The function called for ``rows`` (on the ``CallExecutor``): each one's outcome."""
        self.metrics.batch_inputs.observe(len(rows))
        started = time.perf_counter()
        outcomes: list[Any] = await self.executor.threads.run(
            Call(self.endpoint, len(rows), lambda: self._together(rows))
        )
        self.metrics.call_seconds.observe(time.perf_counter() - started)
        return outcomes

    async def _compute(self, taken: list[_Waiting]) -> None:
        rows = [row for waiting in taken for row in waiting.call.inputs.rows]  # type: ignore[union-attr]
        outcomes = await self._call_function(rows)
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


async def _within(future: asyncio.Future[Any], timeout: float) -> Any:
    """``future``'s result, or TimedOut once ``timeout`` has passed (the future itself is left to finish)."""
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout)
    except asyncio.TimeoutError:
        raise _timed_out(timeout) from None


def _timed_out(timeout: float) -> TimedOut:
    return TimedOut(f"the call took longer than {timeout:g} s (NB2SVC_TIMEOUT)")


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
