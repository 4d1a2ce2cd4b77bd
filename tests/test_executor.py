"""Where calls run (``CallExecutor``): a proven-fast endpoint on the event loop, others on one computing worker
at a time, a waiting call never holding up the next (in process, on the test's own event loop)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from nb2svc.runtime import executor
from nb2svc.runtime.app import create_app
from nb2svc.runtime.settings import Settings

from helpers import make_service, until

THREADS: list[str] = []  # the thread each call of `where` ran on
EVENTS: list[str] = []  # what `spin` and `quick` did, in order
SLOW = threading.Event()  # `where` takes longer than a fast call
SPUN = threading.Event()  # `spin` has computed for longer than the executor's STALL
RELEASE = threading.Event()


def where(x: int) -> int:
    THREADS.append(threading.current_thread().name)
    if SLOW.is_set():
        time.sleep(2 * executor.FAST_CALL)  # the call itself is slow: what is tested is where the next runs
    return x


def spin(x: int) -> int:
    """Computes (uses its core) until released."""
    EVENTS.append("spin starts")
    started = time.perf_counter()
    while not RELEASE.is_set():
        if time.perf_counter() - started > 4 * executor.STALL:
            SPUN.set()
    EVENTS.append("spin ends")
    return x


def wait(x: int) -> int:
    """Waits (uses no CPU) until released."""
    assert RELEASE.wait(30)
    return x


ROW_ZERO = threading.Event()  # `grind` is computing its first row


def grind(x: int) -> int:
    """Per row: the first row computes until released."""
    EVENTS.append(f"row {x}")
    if x == 0:
        ROW_ZERO.set()
        while not RELEASE.is_set():
            pass
    return x


def quick(x: int) -> int:
    EVENTS.append("quick")
    return x


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def served(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, httpx2.AsyncClient]]:
    for flag in (SLOW, SPUN, RELEASE, ROW_ZERO):
        flag.clear()
    THREADS.clear()
    EVENTS.clear()
    service = make_service(tmp_path / "service", where=where, spin=spin, wait=wait, quick=quick, grind=grind)
    app = create_app(service, Settings(**getattr(request, "param", {})))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://service") as client:
        yield app, client
    RELEASE.set()


async def predict(client: httpx2.AsyncClient, name: str, data: Any) -> Any:
    response = await client.post(f"/v1/{name}/latest", content=json.dumps({"data": data}))
    assert response.status_code == 200, response.text
    return response.json()["data"]


@pytest.mark.anyio
async def test_a_proven_fast_endpoint_runs_on_the_event_loop_until_a_call_is_slow(
    served: tuple[Any, httpx2.AsyncClient],
) -> None:
    _, client = served
    loop_thread = threading.current_thread().name
    for n in range(executor.PROOF + 5):
        assert await predict(client, "where", n) == n
    assert all(name.startswith("nb2svc-call-") for name in THREADS[: executor.PROOF])  # proving itself
    assert THREADS[executor.PROOF :] == [loop_thread] * 5  # proven: on the loop, no hand-off
    SLOW.set()
    await predict(client, "where", 1)  # slow, on the loop: the endpoint goes back to the workers
    SLOW.clear()
    await predict(client, "where", 2)
    assert THREADS[-2] == loop_thread and THREADS[-1].startswith("nb2svc-call-")


@pytest.mark.anyio
async def test_one_worker_computes_at_a_time(served: tuple[Any, httpx2.AsyncClient]) -> None:
    app, client = served
    calls = app.state.service.executor.threads
    spinning = asyncio.ensure_future(predict(client, "spin", 1))
    behind = asyncio.ensure_future(predict(client, "quick", 2))
    await until(lambda: calls.busy == 2)
    await asyncio.get_running_loop().run_in_executor(None, SPUN.wait, 30)
    RELEASE.set()
    assert list(await asyncio.gather(spinning, behind)) == [1, 2]
    assert EVENTS == ["spin starts", "spin ends", "quick"]  # `quick` waited for the computing call


@pytest.mark.anyio
async def test_a_waiting_call_does_not_hold_up_the_next(served: tuple[Any, httpx2.AsyncClient]) -> None:
    app, client = served
    waiting = asyncio.ensure_future(predict(client, "wait", 1))
    await until(lambda: app.state.service.executor.threads.busy == 1)
    assert await predict(client, "quick", 2) == 2  # answered while `wait` still waits
    assert not waiting.done()
    RELEASE.set()
    assert await waiting == 1


@pytest.mark.anyio
async def test_a_long_batch_lets_the_calls_waiting_behind_it_run_between_its_rows(
    served: tuple[Any, httpx2.AsyncClient],
) -> None:
    app, client = served
    calls = app.state.service.executor.threads
    batch = asyncio.ensure_future(predict(client, "grind", [[i, i] for i in range(5)]))
    await asyncio.get_running_loop().run_in_executor(None, ROW_ZERO.wait, 30)
    behind = asyncio.ensure_future(predict(client, "quick", 9))
    await until(lambda: calls.waiting == 1)  # behind a computing call: no other worker starts it
    RELEASE.set()
    assert await behind == 9
    assert await batch == [[i, i] for i in range(5)]
    assert EVENTS == ["row 0", "quick", "row 1", "row 2", "row 3", "row 4"]  # its turn came after one row


@pytest.mark.anyio
@pytest.mark.parametrize("served", [{"timeout_seconds": 0.2}], indirect=True)
async def test_a_batch_whose_request_has_stopped_waiting_stops_at_its_next_row(
    served: tuple[Any, httpx2.AsyncClient],
) -> None:
    app, client = served
    calls = app.state.service.executor.threads
    response = await client.post("/v1/grind/latest", content=json.dumps({"data": [[i, i] for i in range(5)]}))
    assert response.status_code == 504
    RELEASE.set()
    await until(lambda: calls.busy == 0)  # its worker has let the call go
    assert EVENTS == ["row 0"]  # the rows after the 504 were never computed
