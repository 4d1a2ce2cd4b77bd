"""A request's body: bounded in size and in time, and read as standard JSON only.

Python's json module accepts ``NaN``, ``Infinity`` and numbers too large for a float
(``1e400`` becomes infinity), none of which is JSON; a body nested deeper than the
parser can follow raises RecursionError. Each of these is a 400 here, never a value
that reaches the function, never a bare 500.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Coroutine
from typing import Any

from starlette.requests import ClientDisconnect, Request

from .errors import BadRequest, BodyTimedOut, ClientClosed, TooLarge
from .settings import Settings

# A float can overflow only if it has an exponent or hundreds of digits: only then is each float checked.
_MIGHT_OVERFLOW = re.compile(r"[eE]|\d{300}")


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]}... is out of a float's range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_not_json)
_CHECKING_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite_float)


def strict_loads(text: str) -> Any:
    """The value of standard JSON ``text``; ValueError (or RecursionError) for anything else."""
    decoder = _CHECKING_DECODER if _MIGHT_OVERFLOW.search(text) else _DECODER
    return decoder.decode(text)


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``; BadRequest for anything that is not standard JSON, whatever its shape."""
    try:
        return strict_loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: it is not UTF-8 ({exc})") from None
    except RecursionError:
        raise BadRequest("the request body is not valid JSON that can be read: it is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError included
        raise BadRequest(f"the request body is not valid JSON ({exc})") from None


async def read_body(request: Request, settings: Settings) -> bytes:
    """The body, refused (413) once its Content-Length or its bytes pass the limit, or (408) if it stalls."""
    declared = request.headers.get("content-length")
    limit = settings.max_body_bytes
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the request body is {int(declared)} bytes; the limit is {limit} (NB2SVC_MAX_BODY_BYTES)")
    try:
        return await _within(settings.body_timeout_seconds, _receive(request, limit))
    except asyncio.TimeoutError:
        raise BodyTimedOut(
            f"the request body did not arrive within {settings.body_timeout_seconds:g} s (NB2SVC_BODY_TIMEOUT)",
            headers={"Connection": "close"},
        ) from None


async def _within(seconds: float, receiving: Coroutine[Any, Any, bytes]) -> bytes:
    """``asyncio.timeout`` where there is one (3.11+: no extra task per request), else ``wait_for``."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await receiving
    return await asyncio.wait_for(receiving, seconds)


async def _receive(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"the request body is over {limit} bytes (NB2SVC_MAX_BODY_BYTES)")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientClosed("the client closed the connection before its body arrived") from None
    return b"".join(chunks)
