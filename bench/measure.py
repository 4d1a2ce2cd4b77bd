"""What the benchmark measures, and how: processes, HTTP on a raw socket, wrk, /proc.

- Throughput: wrk (`-t1`, a fixed body, `--timeout 30s`), its Requests/sec.
- Latency: `latencies()`, one keep-alive connection in this process, each request timed from just before
  it is sent to its last byte read. wrk's own percentiles are not used: after a run wrk adds, for every
  slow answer, the answers a connection "would have" sent meanwhile (its coordinated-omission
  correction), which inflates the tail by requests that were never made. At one connection a closed loop
  has nothing to correct: each sample is one request's real time. The loop's own cost (sending, reading
  headers, about 10-20 µs in Python) is inside every sample alike.
- Server CPU per request: utime+stime (and the children's reaped times) of the server process and every
  descendant, from /proc/PID/stat, over a wrk run, divided by the requests wrk completed.
- Cold start: from just before the process is started to the first 200 answer on the predict route.
- Peak RSS: VmHWM of the server process and every descendant (summed) from /proc/PID/status.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# The server on one core, the load generator (wrk, and this process) on the other.
SERVER_CPU, CLIENT_CPU = "0", "1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes

    def raw(self, port: int) -> bytes:
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        )
        return head.encode() + self.body


class Connection:
    """One keep-alive HTTP/1.1 connection: send a request, read its whole answer (Content-Length or chunked)."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def _more(self) -> None:
        chunk = self.sock.recv(262144)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def exchange(self, raw: bytes) -> tuple[int, bytes]:
        self.sock.sendall(raw)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._more()
        head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
        status = int(head[9:12])
        headers = head.lower()
        length = re.search(r"\r\ncontent-length:\s*(\d+)", headers)
        if length is not None:
            size = int(length.group(1))
            while len(self.buffer) < size:
                self._more()
            body, self.buffer = self.buffer[:size], self.buffer[size:]
        elif "transfer-encoding: chunked" in headers:
            body = self._chunked()
        else:
            raise ConnectionError(f"an answer with neither Content-Length nor chunked encoding: {head!r}")
        if "connection: close" in headers:
            raise ConnectionError("the server closes the connection after each answer")
        return status, body

    def _chunked(self) -> bytes:
        body = b""
        while True:
            while (end := self.buffer.find(b"\r\n")) < 0:
                self._more()
            size = int(self.buffer[:end].split(b";")[0], 16)
            while len(self.buffer) < end + 2 + size + 2:
                self._more()
            body += self.buffer[end + 2 : end + 2 + size]
            self.buffer = self.buffer[end + 2 + size + 2 :]
            if size == 0:
                return body


def post(port: int, request: Request, timeout: float = 60.0) -> tuple[int, bytes]:
    connection = Connection(port, timeout)
    try:
        return connection.exchange(request.raw(port))
    finally:
        connection.close()


def latencies(port: int, request: Request, seconds: float, min_samples: int = 100) -> list[int]:
    """Nanoseconds of each request, one connection, for `seconds` (longer, up to 3x, for `min_samples`)."""
    raw = request.raw(port)
    connection = Connection(port)
    samples: list[int] = []
    clock = time.perf_counter_ns
    started = clock()
    soft, hard = started + int(seconds * 1e9), started + int(3 * seconds * 1e9)
    try:
        while True:
            before = clock()
            status, body = connection.exchange(raw)
            after = clock()
            if status != 200:
                raise RuntimeError(f"{request.path} answered {status}: {body[:300]!r}")
            samples.append(after - before)
            if after > hard or (after > soft and len(samples) >= min_samples):
                return samples
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- processes -------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(root: int) -> float:
    """utime+stime of the tree, with the times of children it has reaped (cutime+cstime)."""
    ticks = 0
    for pid in process_tree(root):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / CLOCK_TICKS


def peak_rss_mib(root: int) -> float:
    """VmHWM summed over the tree (an upper bound for several processes: their peaks need not coincide)."""
    kib = 0
    for pid in process_tree(root):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        kib += int(found.group(1)) if found else 0
    return kib / 1024


def event_loop_and_parser(root: int) -> str:
    """What the server's processes have loaded: uvloop or asyncio, httptools or h11."""
    loaded = ""
    for pid in process_tree(root):
        try:
            loaded += Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
    loop = "uvloop" if "/uvloop/" in loaded else "asyncio (no uvloop)"
    parser = "httptools" if "/httptools/" in loaded else "no httptools (h11)"
    return f"{loop} + {parser}"


def wait_idle(servers: list[Running], timeout: float = 60.0) -> float:
    """Wait until the servers together use under 8% of a core: the backlog of the last run answered.

    When wrk stops, the requests it had in flight are still being served (32 batches of 100 rows of the
    boosting model, per row, are seconds of work), and every server shares CPU 0: the next measurement
    waits for them. Returns the seconds waited.
    """
    started = time.monotonic()
    window = 0.25
    before = sum(cpu_seconds(server.pid) for server in servers)
    while time.monotonic() - started < timeout:
        time.sleep(window)
        now = sum(cpu_seconds(server.pid) for server in servers)
        if now - before < 0.08 * window:
            break
        before = now
    return time.monotonic() - started


@dataclass
class Running:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    cold_start: float

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start(
    name: str, command: list[str], cwd: Path, env: dict[str, str], port: int, probe: Request, log: Path
) -> Running:
    """Start `command` on the server CPU in its own process group; wait for the first 200 on `probe`."""
    with open(log, "wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Running(name, process, port, log, 0.0)
    try:
        deadline = started + 180
        while time.perf_counter() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} before answering:\n{running.log_tail()}")
            try:
                status, _ = post(port, probe, timeout=30)
            except OSError:
                time.sleep(0.005)
                continue
            if status == 200:
                running.cold_start = time.perf_counter() - started
                return running
            time.sleep(0.005)
        raise RuntimeError(f"{name} did not answer 200 within 180 s:\n{running.log_tail()}")
    except BaseException:  # not left running, whatever stopped the wait (Ctrl-C too)
        stop([running])
        raise


def stop(servers: list[Running], grace: float = 20.0) -> None:
    """SIGTERM to each server's own process group, then SIGKILL to those still there after `grace`."""
    for server in servers:
        if server.process.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for server in servers:
        try:
            server.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        if server.process.poll() is None or _group_alive(server.pid):
            try:
                os.killpg(server.pid, signal.SIGKILL)  # what is left of the group (workers) too
            except ProcessLookupError:
                pass
        server.process.wait()


def _group_alive(group: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat_fields(int(entry))[2]) == group:
                    return True
            except (OSError, IndexError, ValueError):
                continue
    return False


# --- wrk -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    requests: int
    cpu_us_per_request: float


def wrk(server: Running, request: Request, connections: int, seconds: int) -> WrkResult:
    with tempfile.TemporaryDirectory(prefix="nb2svc-bench-wrk-") as scratch:
        body, script = Path(scratch, "body.json"), Path(scratch, "post.lua")
        body.write_bytes(request.body)
        script.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'local file = io.open("{body}", "rb")\nwrk.body = file:read("*a")\nfile:close()\n'
        )
        command = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s"]
        cpu_before = cpu_seconds(server.pid)
        done = subprocess.run(
            [*command, "-s", str(script), f"http://127.0.0.1:{server.port}{request.path}"],
            capture_output=True,
            text=True,
        )
        cpu = cpu_seconds(server.pid) - cpu_before
    out = done.stdout
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode} on {server.name} {request.path}: {done.stderr or out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        raise RuntimeError(f"errors during wrk's run on {server.name} {request.path}:\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if rate is None or count is None:
        raise RuntimeError(f"wrk printed no Requests/sec on {server.name} {request.path}:\n{out}")
    requests = int(count.group(1))
    return WrkResult(float(rate.group(1)), requests, cpu / max(1, requests) * 1e6)
