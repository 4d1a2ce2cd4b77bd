"""Cost of one request inside the application, without the network: the built service vs the hand-written app.

Calls each ASGI app directly, in this process, on the same artifact: what the runtime adds per
request (reading, binding, validating, encoding, routing), free of wrk's and the kernel's noise.
Usage: python bench/asgi.py SERVICE_DIR
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BODIES = {"single": b'{"data": 3}', "batch of 3": b'{"data": [[1, 3], [2, 5], [3, 9]]}'}
REQUESTS, ROUNDS = 3000, 5


async def request(app: Any, body: bytes) -> list[dict[str, Any]]:
    path = "/v1/my_lr_deployement/latest"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "state": {},
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.sleep(3600)
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def microseconds(app: Any, body: bytes) -> float:
    started = time.perf_counter()
    for _ in range(REQUESTS):
        await request(app, body)
    return (time.perf_counter() - started) / REQUESTS * 1e6


async def main(service: Path) -> None:
    os.environ["BENCH_ARTIFACT"] = str(service / "artifacts" / "my_lr_deployement.pkl")
    sys.path[:0] = [str(service), str(Path(__file__).parent)]
    from handwritten_app import app as handwritten
    from nb2svc_runtime.app import create_app

    apps = {"nb2svc service": create_app(service), "hand-written Starlette": handwritten}
    print(f"in process, {REQUESTS} requests x {ROUNDS} alternating rounds, median microseconds per request")
    for label, body in BODIES.items():
        times: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(ROUNDS):
            for name, app in apps.items():
                times[name].append(await microseconds(app, body))
        ours, theirs = (statistics.median(times[name]) for name in apps)
        print(f"  {label:11} nb2svc {ours:7.1f}   hand-written {theirs:7.1f}   ratio {theirs / ours:.3f}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]).resolve()))
