"""A request's body: bounded in size and in time, and read as standard JSON only.

Python's json module accepts ``NaN``, ``Infinity`` and numbers too large for a float
(``1e400`` becomes infinity), none of which is JSON; a body nested deeper than the
parser can follow raises RecursionError. Each of these is a 400 here, never a value
that reaches the function, never a bare 500.

Where orjson is installed (every service's lock has it), it reads the bodies, except
those with a run of 19 digits or more (an integer beyond 64 bits, which orjson would
make a float) and those nested more than ``_ORJSON_DEPTH`` deep. The standard library
reads those, and whatever orjson refuses: the value, or the 400 and its message, is
always the one the standard library gives.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

from starlette.requests import ClientDisconnect, Request

from .errors import BadRequest, BodyTimedOut, ClientClosed, TooLarge
from .settings import Settings

try:
    import orjson
except ImportError:  # the standard library's json, for everything
    orjson = None  # type: ignore[assignment]

# A float can overflow only if it has an exponent or hundreds of digits: only then is each float checked.
_MIGHT_OVERFLOW = re.compile(r"[eE]|\d{300}")
# Every digit a 0, everything else a space: a run of 19 zeros is a number orjson may not read exactly.
_DIGITS = bytes(ord("0") if byte in b"0123456789" else ord(" ") for byte in range(256))
_LONG_NUMBER = b"0" * 19
# orjson reads nesting this deep at most (the standard library gives up near the recursion limit, 1000 less the
# stack's depth): a body with fewer arrays and objects than this cannot be deeper; one with more is measured.
_ORJSON_DEPTH = 32
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPENING = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET = bytes(byte for byte in range(256) if byte not in b"[]{}")


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]}... is out of a float's range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_not_json)
_CHECKING_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite_float)


def strict_loads(text: str | bytes) -> Any:
    """The value of standard JSON ``text`` (bytes: UTF-8); ValueError (UnicodeDecodeError, JSONDecodeError) or
    RecursionError for anything else."""
    if orjson is not None:
        data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
        if _LONG_NUMBER not in data.translate(_DIGITS) and _shallow(data):
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:  # the standard library decides, with its own message
                pass
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    decoder = _CHECKING_DECODER if _MIGHT_OVERFLOW.search(text) else _DECODER
    return decoder.decode(text)


def _shallow(data: bytes) -> bool:
    """Whether ``data``, if it is JSON, nests arrays and objects at most ``_ORJSON_DEPTH`` deep: its strings
    dropped and its brackets kept, each pass takes the innermost pairs away (never a pair it made)."""
    if data.count(b"[") + data.count(b"{") <= _ORJSON_DEPTH:
        return True
    brackets = (_STRING.sub(b"", data) if b'"' in data else data).translate(_OPENING, _NOT_BRACKET)
    for _ in range(_ORJSON_DEPTH):
        if not brackets:
            return True
        brackets = brackets.replace(b"[]", b"")
    return not brackets


def parse_json(body: bytes) -> Any:
    """The JSON value of ``body``; BadRequest for anything that is not standard JSON, whatever its shape."""
    try:
        return strict_loads(body)
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
    # One timer that cancels the read if it is still going when the time is up: what asyncio.timeout does, at
    # a third of its cost per request (for most requests the body is there already).
    task = asyncio.current_task()
    assert task is not None
    stalled: list[bool] = []
    timer = asyncio.get_running_loop().call_later(settings.body_timeout_seconds, _stop, task, stalled)
    try:
        return await _receive(request, limit)
    except asyncio.CancelledError:
        if not stalled:  # cancelled by someone else (the server stopping): theirs to handle
            raise
        if hasattr(task, "uncancel"):  # 3.11+: the cancellation was ours, and is over
            task.uncancel()
        raise BodyTimedOut(
            f"the request body did not arrive within {settings.body_timeout_seconds:g} s (NB2SVC_BODY_TIMEOUT)",
            headers={"Connection": "close"},
        ) from None
    finally:
        timer.cancel()


def _stop(task: asyncio.Task[Any], stalled: list[bool]) -> None:
    """The time is up: say so, then cancel the reading task."""
    stalled.append(True)
    task.cancel()


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
