"""Reading a request's body within its time limit, on the event loop: what is the timer's and what is not."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from starlette.requests import Request

from nb2svc.runtime.body import read_body
from nb2svc.runtime.errors import BodyTimedOut, ClientClosed
from nb2svc.runtime.settings import Settings

SETTINGS = dataclasses.replace(Settings.from_environment(), body_timeout_seconds=0.2)


def request(receive: Callable[[], Awaitable[dict[str, Any]]]) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)


def chunks(*parts: bytes, pause: float = 0.0) -> Callable[[], Awaitable[dict[str, Any]]]:
    remaining = list(parts)

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(pause)
        return {"type": "http.request", "body": remaining.pop(0), "more_body": bool(remaining)}

    return receive


async def never() -> dict[str, Any]:
    await asyncio.sleep(3600)
    raise AssertionError


def test_a_body_in_pieces_within_the_limit_is_read_whole() -> None:
    body = asyncio.run(read_body(request(chunks(b'{"da', b'ta": ', b"1}", pause=0.05)), SETTINGS))
    assert body == b'{"data": 1}'


def test_a_body_that_stalls_is_a_408_and_the_task_goes_on_uncancelled() -> None:
    async def read() -> tuple[BodyTimedOut, int]:
        with pytest.raises(BodyTimedOut, match=r"did not arrive within 0\.2 s \(NB2SVC_BODY_TIMEOUT\)") as raised:
            await read_body(request(never), SETTINGS)
        await asyncio.sleep(0.3)  # no cancellation left behind: the answer can still be written
        task = asyncio.current_task()
        assert task is not None
        return raised.value, getattr(task, "cancelling", lambda: 0)()  # Python 3.11+ counts them

    error, cancelling = asyncio.run(read())
    assert error.headers == {"Connection": "close"} and cancelling == 0


def test_a_read_cancelled_by_someone_else_stays_cancelled() -> None:
    async def main() -> None:
        reading = asyncio.ensure_future(
            read_body(request(never), dataclasses.replace(SETTINGS, body_timeout_seconds=5))
        )
        await asyncio.sleep(0.05)
        reading.cancel()  # the server stopping, say: not a 408
        with pytest.raises(asyncio.CancelledError):
            await reading

    asyncio.run(main())


def test_a_client_that_leaves_before_its_body_is_a_499() -> None:
    async def gone() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    with pytest.raises(ClientClosed):
        asyncio.run(read_body(request(gone), SETTINGS))
