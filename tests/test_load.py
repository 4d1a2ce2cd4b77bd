"""A bounded load test on 127.0.0.1: 32 connections for about 30 s, a share of the requests bad, then SIGTERM.

Every request must be answered with a status its kind expects, no process may be lost, and the
server must exit 0 on SIGTERM. The figures are printed (run with -s to see them).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import httpx2 as httpx
import pytest

import nb2svc

from helpers import FIXTURES, running_server

pytestmark = pytest.mark.e2e
CONNECTIONS, SECONDS, MAX_REQUESTS = 32, 30.0, 200_000
# kind: (share, expected statuses)
KINDS = {
    "valid": (0.73, {200}),
    "malformed": (0.10, {400}),
    "oversized": (0.08, {413}),
    "wrong type": (0.07, {422}),
    "slow": (0.02, {504, 429}),
}
EXPECTED_BUSY = {429}  # any request may meet all slots busy while slow calls hold them


def body(kind: str) -> tuple[str, bytes]:
    if kind == "valid":
        return "/v1/double/latest", b'{"data": [[1, 2], [2, 3.5]]}' if random.random() < 0.5 else b'{"data": 4}'
    if kind == "malformed":
        return "/v1/double/latest", b'{"data": '
    if kind == "oversized":
        return "/v1/double/latest", b'{"data": "' + b"x" * 70_000 + b'"}'
    if kind == "wrong type":
        return "/v1/double/latest", b'{"data": "four"}'
    return "/v1/slow/latest", b'{"data": 0.8}'


async def worker(base: str, deadline: float, tally: Counter[tuple[str, int]], unexpected: list[str]) -> None:
    kinds, weights = list(KINDS), [share for share, _ in KINDS.values()]
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        while time.monotonic() < deadline and sum(tally.values()) < MAX_REQUESTS:
            kind = random.choices(kinds, weights)[0]
            path, content = body(kind)
            try:
                response = await client.post(path, content=content, headers={"Content-Type": "application/json"})
            except httpx.HTTPError as exc:
                unexpected.append(f"{kind}: {type(exc).__name__}: {exc}")
                continue
            tally[(kind, response.status_code)] += 1
            if response.status_code not in KINDS[kind][1] | EXPECTED_BUSY:
                unexpected.append(f"{kind}: {response.status_code} {response.text[:200]}")


def test_load_with_bad_requests_then_sigterm(tmp_path: Path, unused_tcp_port: int) -> None:
    service = tmp_path / "operations"
    nb2svc.build(FIXTURES / "operations.ipynb", service)
    command = [
        sys.executable,
        "-m",
        "nb2svc",
        "serve",
        str(service),
        "--port",
        str(unused_tcp_port),
        "--workers",
        "2",
        "--max-body-bytes",
        "65536",
        "--timeout",
        "0.5",
        "--max-concurrent",
        "16",
    ]
    with running_server(command, unused_tcp_port, ready_path="/ready") as server:
        base = server.url
        tally: Counter[tuple[str, int]] = Counter()
        unexpected: list[str] = []
        started = time.monotonic()

        async def run() -> None:
            deadline = time.monotonic() + SECONDS
            await asyncio.gather(*(worker(base, deadline, tally, unexpected) for _ in range(CONNECTIONS)))

        asyncio.run(run())
        elapsed = time.monotonic() - started
        total = sum(tally.values())
        print(f"\nload: {total} requests in {elapsed:.1f}s ({total / elapsed:.0f}/s), {CONNECTIONS} connections")
        for (kind, status), count in sorted(tally.items()):
            print(f"  {kind:10} {status}: {count}")
        assert unexpected == [], unexpected[:10]
        assert total > 1000
        assert httpx.get(f"{base}/health").status_code == 200
        metrics = httpx.get(f"{base}/metrics").text
        answered = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("nb2svc_requests_total{") and "/metrics" not in line
        )
        assert answered >= total  # both workers' counts, through the shared multiprocess directory
        os.killpg(server.process.pid, signal.SIGTERM)
        assert server.process.wait(timeout=60) == 0, server.output()[-3000:]
