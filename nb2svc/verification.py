"""`nb2svc verify`: prove the lock by serving from it alone and replaying the notebook's own examples."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2svc.errors import PythonNotFound, ServiceDidNotStart, ServiceDirInvalid, VerifyEnvironmentFailed, VerifyMismatch
from nb2svc.interpreters import find_interpreter
from nb2svc.runtime.compare import compare
from nb2svc.runtime.manifest import Manifest, ManifestError, read_manifest
from nb2svc.runtime.verified import record_verification
from nb2svc.serve import check_service_dir
from nb2svc.server_process import free_port, running_server

START_TIMEOUT = 120.0


@dataclass(frozen=True)
class ExampleCheck:
    endpoint: str
    number: int
    request: Any
    expected: Any
    actual: Any
    difference: str | None

    @property
    def passed(self) -> bool:
        return self.difference is None


@dataclass(frozen=True)
class VerifyResult:
    service_dir: Path
    python: str
    checks: tuple[ExampleCheck, ...]
    install_seconds: float
    seconds: float
    calls_seen: int = 0  # the calls the notebook made of its endpoints
    unrecorded: tuple[str, ...] = ()  # "endpoint: why a call could not be recorded"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": all(check.passed for check in self.checks),
            "service_dir": str(self.service_dir),
            "python": self.python,
            "examples": [
                {"endpoint": c.endpoint, "number": c.number, "passed": c.passed, "difference": c.difference}
                for c in self.checks
            ],
            "calls_seen": self.calls_seen,
            "unrecorded": list(self.unrecorded),
            "install_seconds": round(self.install_seconds, 3),
            "seconds": round(self.seconds, 3),
        }


OnCheck = Callable[[ExampleCheck], None]


def verify(service_dir: str | Path, *, on_check: OnCheck | None = None, python: str | None = None) -> VerifyResult:
    """Install ``service_dir``'s lock into a fresh environment, serve from it, replay every recorded example.

    Raises ``VerifyEnvironmentFailed`` if the lock does not install, ``ServiceDidNotStart`` if the
    service does not answer, and ``VerifyMismatch`` (carrying the result) if an answer differs
    from the output recorded in the training kernel. The environment and server are always removed. The
    outcome is kept in the directory's ``verified.json`` (``nb2svc deployments`` shows it).
    """
    started = time.perf_counter()
    service_dir = Path(service_dir).resolve()
    check_service_dir(service_dir)
    manifest = _manifest(service_dir)
    python = find_python(manifest.python.minor, python)
    try:
        result = _verified(service_dir, manifest, python, on_check or (lambda _: None), started)
    except (VerifyEnvironmentFailed, ServiceDidNotStart, VerifyMismatch):
        record_verification(service_dir, manifest.version, False)
        raise
    record_verification(service_dir, manifest.version, True)
    return result


def _verified(service_dir: Path, manifest: Manifest, python: str, on_check: OnCheck, started: float) -> VerifyResult:
    with tempfile.TemporaryDirectory(prefix="nb2svc-verify-") as work:
        install_started = time.perf_counter()
        environment = _install(python, Path(work) / "venv", service_dir, manifest.lock.hashes)
        install_seconds = time.perf_counter() - install_started
        with _serving(environment, service_dir) as base_url:
            _require_ready(base_url)
            checks = tuple(_replay(base_url, manifest, on_check))
    result = VerifyResult(
        service_dir,
        manifest.python.minor,
        checks,
        install_seconds,
        time.perf_counter() - started,
        calls_seen=sum(endpoint.calls_seen for endpoint in manifest.endpoints),
        unrecorded=tuple(f"{e.name}: {reason}" for e in manifest.endpoints for reason in e.unrecorded),
    )
    failed = [check for check in checks if not check.passed]
    if failed:
        raise VerifyMismatch(
            f"{len(failed)} of {len(checks)} examples answered differently from the training kernel: "
            + "; ".join(f"{c.endpoint} #{c.number}: {c.difference}" for c in failed[:5]),
            result=result.to_dict(),
        )
    return result


def _manifest(service_dir: Path) -> Manifest:
    try:
        return read_manifest(service_dir)
    except ManifestError as exc:
        raise ServiceDirInvalid(str(exc), path=str(service_dir)) from None


def find_python(minor: str, explicit: str | None = None) -> str:
    """An interpreter for Python ``minor`` (X.Y): ``explicit`` (``--python``), this one, or one on PATH, under
    pyenv or known to uv."""
    try:
        return find_interpreter(minor, explicit).path
    except PythonNotFound as exc:
        raise VerifyEnvironmentFailed(
            f"the service was built for Python {minor}: {exc.message}", python=minor
        ) from None


def _uv() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _install(python: str, venv: Path, service_dir: Path, hashed: bool) -> Path:
    """A new virtual environment holding exactly the lock; returns its python."""
    _run_or_fail([_uv(), "venv", "--quiet", "--python", python, str(venv)], "creating a virtual environment")
    interpreter = venv / "bin" / "python"
    command = [_uv(), "pip", "install", "--python", str(interpreter), "-r", str(service_dir / "requirements.txt")]
    _run_or_fail(command + (["--require-hashes"] if hashed else []), "installing requirements.txt")
    return interpreter


def _run_or_fail(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n  ".join((done.stderr or done.stdout).strip().splitlines()[-12:])
        raise VerifyEnvironmentFailed(
            f"{what} failed, so the lock does not reproduce the environment:\n  {tail}\n"
            "If requirements.txt was edited by hand, rebuild the service; a hash mismatch means a file "
            "differs from the one locked.",
            step=what,
        )


@contextmanager
def _serving(python: Path, service_dir: Path) -> Iterator[str]:
    """The service run from ``python``'s environment alone on a free port; stopped on exit."""
    port = free_port()
    # -I keeps the builder's environment out: no PYTHONPATH, no user site; --app-dir finds app.py.
    command = [str(python), "-I", "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)]
    environment = {name: value for name, value in os.environ.items() if name != "NB2SVC_API_KEY"}  # answers, not auth
    try:
        with running_server(
            command + ["--app-dir", str(service_dir)], port, cwd=service_dir, env=environment, timeout=START_TIMEOUT
        ) as server:
            yield server.url
    except ServiceDidNotStart as exc:
        raise ServiceDidNotStart(f"the service installed from the lock did not start: {exc.message}") from None


def _require_ready(base_url: str) -> None:
    """The service replays the examples itself at start-up: if it is not ready, say why."""
    try:
        with urllib.request.urlopen(f"{base_url}/ready", timeout=10):
            return
    except urllib.error.HTTPError as exc:
        error = json.loads(exc.read() or b"{}").get("error", {})
    reason = error.get("message", "no reason given")
    if error.get("kind") == "example_mismatch":
        raise VerifyMismatch(f"the service installed from the lock is not ready: {reason}", reason=reason)
    raise ServiceDidNotStart(
        f"the service installed from the lock is not ready: {reason}", reason=reason, kind=error.get("kind")
    )


def _replay(base_url: str, manifest: Manifest, on_check: OnCheck) -> Iterator[ExampleCheck]:
    for endpoint in manifest.endpoints:
        for number, example in enumerate(endpoint.examples, start=1):
            actual = _post(f"{base_url}{endpoint.route}", example.request)
            check = ExampleCheck(
                endpoint=endpoint.name,
                number=number,
                request=example.request,
                expected=example.response,
                actual=actual,
                difference=compare(example.response, actual),
            )
            on_check(check)
            yield check


def _post(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return {"http_status": exc.code, **json.loads(exc.read() or b"{}")}
