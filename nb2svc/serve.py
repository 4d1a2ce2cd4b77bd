"""Run a service directory with uvicorn."""

from __future__ import annotations

import importlib.util
import os
import signal
import tempfile
from pathlib import Path
from typing import Literal

import uvicorn

from nb2svc.errors import ServiceDirInvalid, UsageError
from nb2svc.runtime.settings import SettingError, Settings


def check_service_dir(service_dir: Path) -> None:
    """Raise ``ServiceDirInvalid`` unless ``service_dir`` holds a built service."""
    missing = [name for name in ("app.py", "manifest.json", "nb2svc_runtime") if not (service_dir / name).exists()]
    if missing:
        raise ServiceDirInvalid(
            f"{service_dir} is not a service directory (missing: {', '.join(missing)}). "
            "Pass the directory that `nb2svc build -o DIR` wrote.",
            path=str(service_dir),
        )


def serve(
    service_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    graceful_timeout: int = 30,
    settings: dict[str, str] | None = None,
) -> None:
    """Serve ``service_dir`` until interrupted, exactly as ``uvicorn app:app`` run inside it would.

    ``settings`` are the runtime's environment variables (``NB2SVC_MAX_BODY_BYTES``...), set for
    every worker. On SIGTERM the server stops accepting and gives in-flight requests up to
    ``graceful_timeout`` seconds. With several workers, metrics are shared through a
    ``PROMETHEUS_MULTIPROC_DIR`` made for this run unless one is set.
    """
    service_dir = Path(service_dir).resolve()
    check_service_dir(service_dir)
    _settings_from(settings)
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="nb2svc-metrics-")
    _exit_quietly_on_signals()
    uvicorn.run(
        "app:app",
        app_dir=str(service_dir),
        host=host,
        port=port,
        workers=workers,
        timeout_graceful_shutdown=graceful_timeout,
        access_log=False,  # the service logs each request as JSON
        loop=fast_loop(),
        http=fast_http(),
    )


def serve_registry(
    root: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    graceful_timeout: int = 30,
    settings: dict[str, str] | None = None,
    local_only: bool = False,
) -> None:
    """Serve every deployment and version of the registry at ``root`` until interrupted, adding the versions
    published meanwhile (``registry_server``). One process: ``workers`` must be 1. ``local_only``: see
    ``create_registry_app``."""
    if workers != 1:
        raise UsageError(
            f"--workers {workers}: a registry is served by one process, which loads each version once and moves "
            "`latest` at one moment for every client. Serve it with --workers 1, or serve one version's "
            f"directory ({Path(root) / '<name>' / '<n>'}) with --workers {workers}."
        )
    from nb2svc.registry_server import create_registry_app

    app = create_registry_app(Path(root).resolve(), _settings_from(settings), local_only=local_only)
    _exit_quietly_on_signals()
    uvicorn.run(
        app,
        host=host,
        port=port,
        timeout_graceful_shutdown=graceful_timeout,
        access_log=False,  # the server logs each request as JSON
        loop=fast_loop(),
        http=fast_http(),
    )


def _settings_from(variables: dict[str, str] | None) -> Settings:
    """The runtime's settings, ``variables`` set in the environment for every worker to read the same;
    a value that cannot be used is refused here, before a worker starts."""
    os.environ.update(variables or {})
    try:
        return Settings.from_environment()
    except SettingError as exc:
        raise UsageError(str(exc), setting=exc.variable) from None


def _exit_quietly_on_signals() -> None:
    """uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again with the handlers it
    found: with these, that ends here and `nb2svc serve` exits 0 instead of dying of the signal."""
    for stop in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop, lambda number, frame: None)


# uvicorn's event loop and HTTP parser: uvloop and httptools where they are installed (they are nb2svc's
# dependencies, but uvloop has no Windows build), named rather than left to uvicorn's "auto", which picks the same.
def fast_loop() -> Literal["uvloop", "asyncio"]:
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def fast_http() -> Literal["httptools", "h11"]:
    return "httptools" if importlib.util.find_spec("httptools") else "h11"
