"""A server started as a process of its own, waited for until it answers, and stopped by its process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nb2svc.errors import ServiceDidNotStart


@dataclass(frozen=True)
class ServerProcess:
    url: str  # http://127.0.0.1:PORT
    process: subprocess.Popen[bytes]
    log: IO[str]  # what it printed, stdout and stderr

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(
    command: list[str],
    port: int,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    ready_path: str = "/health",
    timeout: float = 60.0,
) -> Iterator[ServerProcess]:
    """Start ``command`` (a server on 127.0.0.1:``port``) in a new session, yield once ``ready_path`` answers 200.

    Raises ServiceDidNotStart with the end of its output if it exits or does not answer in ``timeout``
    seconds. On exit the whole process group gets SIGTERM, then SIGKILL after 10 s.
    """
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        server = ServerProcess(f"http://127.0.0.1:{port}", process, log)
        try:
            _wait_until_answering(server, ready_path, timeout)
            yield server
        finally:
            stop(process)


def _wait_until_answering(server: ServerProcess, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.process.poll() is None:
        try:
            with urllib.request.urlopen(f"{server.url}{path}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    tail = "\n  ".join(server.output().strip().splitlines()[-15:])
    code = server.process.poll()
    state = f"exited with {code}" if code is not None else f"did not answer {path} within {timeout:g}s"
    raise ServiceDidNotStart(f"the server {state}:\n  {tail}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to its whole process group (workers that outlived it included), SIGKILL if it is still there
    after 10 s."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()


def _signal_group(group: int, number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(group, number)
