"""Cost of one request inside the application, without the network: the built service vs the floor.

Calls each ASGI app directly, in this process, on the same artifact: what the runtime adds per
request (reading, binding, validating, encoding, routing), free of wrk's and the kernel's noise.
The floor is bench/floor_app.py (it needs orjson: `make bench` runs this in the floor's environment).

Usage: python bench/asgi.py SERVICE_DIR [--json] [LABEL=BODY ...]
SERVICE_DIR is a build of a bench notebook (its per-row endpoint `predict`); the default bodies are the
linear model's. Each app answers each body for BENCH_ASGI_SECONDS (0.5) per round, BENCH_ASGI_ROUNDS (3)
alternating rounds; the median microseconds per request are printed (with --json, also as one JSON line).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

BODIES = {"single": b'{"data": 3}', "batch of 3": b'{"data": [[1, 3], [2, 5], [3, 9]]}'}
SECONDS, ROUNDS = float(os.environ.get("BENCH_ASGI_SECONDS") or 0.5), int(os.environ.get("BENCH_ASGI_ROUNDS") or 3)


async def request(app: Any, body: bytes) -> list[dict[str, Any]]:
    path = "/v1/predict/latest"
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
    if sent[0].get("status") != 200:
        raise SystemExit(f"{path} answered {sent[0].get('status')}: {sent[1].get('body', b'')[:300]!r}")
    return sent


async def microseconds(app: Any, body: bytes) -> float:
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < SECONDS or count < 3:
        await request(app, body)
        count += 1
    return elapsed / count * 1e6


async def main(service: Path, bodies: dict[str, bytes], as_json: bool) -> None:
    os.environ["BENCH_ARTIFACT"] = str(service / "artifacts" / "predict.pkl")
    sys.path[:0] = [str(service), str(Path(__file__).parent)]
    from floor_app import app as floor
    from nb2svc_runtime.app import create_app

    apps = {"nb2svc": create_app(service), "floor": floor}
    print(f"in process, {SECONDS:g} s x {ROUNDS} alternating rounds, median microseconds per request")
    figures: dict[str, dict[str, float]] = {}
    for label, body in bodies.items():
        times: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(ROUNDS):
            for name, app in apps.items():
                times[name].append(await microseconds(app, body))
        figures[label] = {name: statistics.median(times[name]) for name in apps}
        ours, floor_us = figures[label]["nb2svc"], figures[label]["floor"]
        print(f"  {label:13} nb2svc {ours:9.1f}   floor {floor_us:9.1f}   nb2svc/floor {ours / floor_us:.3f}")
    if as_json:
        print(json.dumps(figures))


if __name__ == "__main__":
    arguments = sys.argv[1:]
    as_json = "--json" in arguments
    arguments = [argument for argument in arguments if argument != "--json"]
    given = dict(argument.split("=", 1) for argument in arguments[1:])
    bodies = {label: body.encode() for label, body in given.items()} or BODIES
    asyncio.run(main(Path(arguments[0]).resolve(), bodies, as_json))
